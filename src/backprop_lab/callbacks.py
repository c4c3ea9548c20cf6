"""Small callbacks, one concern each. Gradients are read in ``on_before_optimizer_step``: after
backward (and any accumulation or unscaling) and before the optimiser changes the parameters."""

from __future__ import annotations

import lightning.pytorch as pl
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from torch.optim import Optimizer

from backprop_lab.errors import GradientCheckError
from backprop_lab.models import SeedModel


def _tensorboards(trainer: pl.Trainer) -> list:
    return [lg.experiment for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)]


class GradNormLogger(pl.Callback):
    """Logs the gradients' global L2 norm as ``grad/norm`` every ``log_every_n_steps`` steps."""

    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: Optimizer
    ) -> None:
        every = trainer.log_every_n_steps
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
    interval is this callback's own; a histogram costs ~0.3-2 ms, keep the interval large.
    """

    def __init__(self, every_n_steps: int = 50) -> None:
        if every_n_steps < 1:
            raise ValueError(f"every_n_steps must be at least 1, got {every_n_steps}")
        self.every_n_steps = every_n_steps

    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: Optimizer
    ) -> None:
        step = trainer.global_step
        if step % self.every_n_steps:
            return
        for writer in _tensorboards(trainer):
            for name, param in pl_module.named_parameters():
                writer.add_histogram(f"weights/{name}", param.detach(), step)
                if param.grad is not None:
                    writer.add_histogram(f"grads/{name}", param.grad.detach(), step)


class GradientCheck(pl.Callback):
    """Every ``every_n_steps`` steps, compares the hand-derived and autograd gradients of the batch.

    Logs the largest relative difference per parameter as ``gradcheck/<name>`` and stops the run
    with a :class:`GradientCheckError` naming the parameter, both values and the step when
    ``|hand - autograd| > atol + rtol * max(|hand|, |autograd|)``.
    """

    def __init__(self, every_n_steps: int = 10, rtol: float = 1e-4, atol: float = 1e-7) -> None:
        if every_n_steps < 1:
            raise ValueError(f"every_n_steps must be at least 1, got {every_n_steps}")
        if rtol <= 0 or atol <= 0:
            raise ValueError(f"rtol and atol must be > 0, got rtol={rtol}, atol={atol}")
        self.every_n_steps, self.rtol, self.atol = every_n_steps, rtol, atol
        self._batch = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        self._batch = batch if trainer.global_step % self.every_n_steps == 0 else None

    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: SeedModel, optimizer: Optimizer
    ) -> None:
        if self._batch is None:
            return
        dtype = next(pl_module.parameters()).dtype
        batch = tuple(t.to(dtype) for t in self._batch)
        self._batch = None
        hand = pl_module.seed_names(pl_module.hand_gradients(batch)[3])
        auto = pl_module.seed_names(pl_module.autograd_gradients(batch))
        step = trainer.global_step
        worst: dict[str, float] = {}
        for name, h in hand.items():
            a = auto[name]
            scale = torch.maximum(h.abs(), a.abs())
            error = (h - a).abs()
            worst[name] = float(error / scale.clamp_min(self.atol))
            if error > self.atol + self.rtol * scale:
                raise GradientCheckError(
                    f"gradient check failed at step {step}: dL/d{name} is {h.item():.8g} by hand "
                    f"but {a.item():.8g} by autograd (relative difference {worst[name]:.3g}, "
                    f"tolerance {self.rtol:g}). Fix {type(pl_module).__name__}.backward_by_hand, "
                    "or explain the step: uv run explain.py model=... step=" + str(step)
                )
        for logger in trainer.loggers:
            logger.log_metrics({f"gradcheck/{k}": v for k, v in worst.items()}, step=step)
