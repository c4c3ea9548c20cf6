"""What the gradients are: their norm, their histograms, and a check of the hand-derived ones
against autograd. Gradients are read in ``on_before_optimizer_step``: after backward (and any
accumulation or unscaling) and before the optimiser changes the parameters."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch
from torch.optim import Optimizer

from backprop_lab.callbacks.tensorboard import tensorboards
from backprop_lab.errors import GradientCheckError
from backprop_lab.models import SeedModel


class GradNormLogger(pl.Callback):
    """Logs the gradients' global L2 norm as ``grad/norm`` every ``log_every_n_steps`` steps."""

    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: Optimizer
    ) -> None:
        every = trainer.log_every_n_steps  # type: ignore[attr-defined]  # set by Trainer.__init__
        if not trainer.loggers or every <= 0 or trainer.global_step % every:
            return
        grads = [p.grad for p in pl_module.parameters() if p.grad is not None]
        if not grads:
            return
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
        for logger in trainer.loggers:
            logger.log_metrics({"grad/norm": norm.item()}, step=trainer.global_step)


class ParameterHistograms(pl.Callback):
    """Histograms of every parameter tensor and its gradient every ``every_n_steps`` steps.

    Written straight to TensorBoard (``log_every_n_steps`` does not throttle direct calls), so the
    interval is this callback's own. ``bins`` equal-width bins: TensorBoard's default ("tensorflow":
    ~1,500 exponential bins, then rebinned to ~30 for display) costs ~1.5 ms a histogram, 30 bins
    ~0.25 ms.
    """

    def __init__(self, every_n_steps: int = 50, bins: int = 30) -> None:
        if every_n_steps < 1 or bins < 1:
            raise ValueError(
                f"every_n_steps and bins must be at least 1, got {every_n_steps}, {bins}"
            )
        self.every_n_steps, self.bins = every_n_steps, bins

    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: Optimizer
    ) -> None:
        step = trainer.global_step
        if step % self.every_n_steps:
            return
        for writer in tensorboards(trainer):
            for name, param in pl_module.named_parameters():
                writer.add_histogram(f"weights/{name}", param.detach(), step, bins=self.bins)
                if param.grad is not None:
                    writer.add_histogram(f"grads/{name}", param.grad.detach(), step, bins=self.bins)


class GradientCheck(pl.Callback):
    """Every ``every_n_steps`` steps, compares the hand-derived and autograd gradients of the batch.

    Logs the largest relative difference per parameter as ``gradcheck/<name>`` and stops the run
    with a :class:`GradientCheckError` naming the parameter, both values and the step when
    ``|hand - autograd| > atol + rtol * max(|hand|, |autograd|)``.

    The check takes the batch's first ``max_rows`` rows: the chain rule holds on any rows, and on
    a batch of 2^18 rows a check of them all costs two training steps.
    """

    def __init__(
        self, every_n_steps: int = 50, rtol: float = 1e-4, atol: float = 1e-7, max_rows: int = 1024
    ) -> None:
        if every_n_steps < 1 or max_rows < 1:
            raise ValueError(
                f"every_n_steps and max_rows must be at least 1, got {every_n_steps}, {max_rows}"
            )
        if rtol <= 0 or atol <= 0:
            raise ValueError(f"rtol and atol must be > 0, got rtol={rtol}, atol={atol}")
        self.every_n_steps, self.rtol, self.atol = every_n_steps, rtol, atol
        self.max_rows = max_rows
        self._batch: Any = None

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._batch = batch if trainer.global_step % self.every_n_steps == 0 else None

    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: Optimizer
    ) -> None:
        if self._batch is None or not isinstance(pl_module, SeedModel):
            return
        dtype = next(pl_module.parameters()).dtype
        whole = len(self._batch[0]) <= self.max_rows
        batch = tuple(t[: self.max_rows].to(dtype) for t in self._batch)
        self._batch = None
        hand = pl_module.seed_names(pl_module.hand_gradients(batch)[3])
        autograd: dict[str, torch.Tensor]
        if whole and _grads_of_this_batch(trainer, pl_module):
            trainable = pl_module.trainable().items()
            autograd = {name: p.grad for name, p in trainable if p.grad is not None}
        else:
            autograd = pl_module.autograd_gradients(batch)
        auto = pl_module.seed_names(autograd)
        # One stack and one copy each; the few seed-named values then compare as Python floats
        # (a dozen tensor operations per check would cost more than the check's own arithmetic).
        hands = torch.stack(list(hand.values())).tolist()
        autos = torch.stack([auto[name] for name in hand]).tolist()
        step = trainer.global_step
        worst: dict[str, float] = {}
        for name, h, a in zip(hand, hands, autos, strict=True):
            scale, error = max(abs(h), abs(a)), abs(h - a)
            worst[name] = error / max(scale, self.atol)
            if error > self.atol + self.rtol * scale:
                raise GradientCheckError(
                    f"gradient check failed at step {step}: dL/d{name} is {h:.8g} by hand but "
                    f"{a:.8g} by autograd (relative difference {worst[name]:.3g}, tolerance "
                    f"{self.rtol:g}). Fix {type(pl_module).__name__}.backward_by_hand, or explain "
                    f"the step: uv run explain.py model=... step={step}"
                )
        for logger in trainer.loggers:
            logger.log_metrics({f"gradcheck/{k}": v for k, v in worst.items()}, step=step)


def _grads_of_this_batch(trainer: pl.Trainer, pl_module: SeedModel) -> bool:
    """Whether ``.grad`` holds autograd's gradient of this step's batch and nothing else, so the
    check can take it rather than run autograd again (half its cost): not the hand-derived one
    (manual optimisation), not summed over batches (accumulation) or averaged over processes
    (DDP), not computed under autocast."""
    return (
        pl_module.automatic_optimization
        and trainer.accumulate_grad_batches == 1
        and trainer.world_size == 1
        and trainer.precision in ("32-true", "64-true")
        and all(p.grad is not None for p in pl_module.trainable().values())
    )
