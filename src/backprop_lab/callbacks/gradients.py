"""What the parameters and gradients are: their values by name, their histograms, and a check of
the hand-derived gradients against autograd. Gradients are read in ``on_before_optimizer_step``:
after backward (and any accumulation or unscaling) and before the optimiser changes the
parameters."""

from __future__ import annotations

import contextlib
import math
from typing import Any

import lightning.pytorch as pl
import torch
from torch.optim import Optimizer

from backprop_lab.callbacks.tensorboard import tensorboards
from backprop_lab.errors import GradientCheckError
from backprop_lab.models import SeedModel


def interval(trainer: pl.Trainer, every_n_steps: int | None, samples: int = 25) -> int:
    """``every_n_steps``, or where it is None about ``samples`` times over the whole run (every
    step of a run shorter than that; every 50 steps when the run's length is not known)."""
    if every_n_steps is not None:
        return every_n_steps
    total = trainer.estimated_stepping_batches
    return 50 if not math.isfinite(total) else max(1, int(total) // samples)


class ParameterScalars(pl.Callback):
    """Every parameter and its gradient by the seed's name, as scalars a learner follows:

    - ``params/<scope>/<name>``: the value, from step 0 (the initial value) to the value after
      the last update;
    - ``grads/<scope>/<name>``: dL/d<name> at that step, and ``grads/<scope>/norm``, their global
      L2 norm.

    Read in ``on_before_optimizer_step`` (after backward, before the update) at step 0 and every
    ``log_every_n_steps`` steps, the interval of the loss: every step in the seed experiments, a
    few scalars at an interval otherwise, nothing on the steps between. ``scope`` (the model's
    config name) keeps two models' ``w1`` in charts of their own.

    At the start it also writes a Custom Scalars layout: the train and validation loss in one
    chart, and all the parameters and all the gradients each in one.
    """

    def __init__(self, scope: str) -> None:
        self.scope = scope

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        layout = {
            "Loss": {
                "train and val (epoch means)": ["Multiline", [r"^Loss/(train|val)$"]],
                "train, each logged step": ["Multiline", [r"^Loss/train_step$"]],
            },
            self.scope: {
                "parameters": ["Multiline", [rf"^params/{self.scope}/"]],
                "gradients": ["Multiline", [rf"^grads/{self.scope}/"]],
            },
        }
        for writer in tensorboards(trainer):
            writer.add_custom_scalars(layout)

    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: Optimizer
    ) -> None:
        every = trainer.log_every_n_steps  # type: ignore[attr-defined]  # set by Trainer.__init__
        if not trainer.loggers or every <= 0 or trainer.global_step % every:
            return
        if not isinstance(pl_module, SeedModel):
            return
        params = dict(pl_module.named_parameters())
        grads = {n: p.grad for n, p in params.items() if p.grad is not None}
        values = pl_module.seed_values(params)
        metrics = {f"params/{self.scope}/{k}": v for k, v in values.items()}
        if grads:
            gradients = pl_module.seed_values(grads)
            metrics.update({f"grads/{self.scope}/{k}": g for k, g in gradients.items()})
            norm = math.sqrt(sum(g * g for g in gradients.values()))
            metrics[f"grads/{self.scope}/norm"] = norm
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """The values after the last update, where the charts end."""
        if trainer.loggers and isinstance(pl_module, SeedModel):
            values = pl_module.scalar_values()
            metrics = {f"params/{self.scope}/{k}": v for k, v in values.items()}
            for logger in trainer.loggers:
                logger.log_metrics(metrics, step=trainer.global_step)


class ParameterHistograms(pl.Callback):
    """Histograms of every parameter tensor and its gradient, ``weights/<scope>/<names>`` and
    ``weights/<scope>/<names>.grad``, where ``<names>`` are the seed names the tensor holds
    (``w0..w2``, ``w1..w4``). Grouped under ``weights``, which TensorBoard lists after the
    scalars.

    Every ``every_n_steps`` steps from step 0; None (the default) samples about 25 times over
    the run, so a 100-step run has a readable series too. Written straight to TensorBoard.
    ``bins`` equal-width bins: TensorBoard's default ("tensorflow": ~1,500 exponential bins, then
    rebinned to ~30 for display) costs ~1.5 ms a histogram, 30 bins ~0.25 ms.
    """

    def __init__(self, scope: str, every_n_steps: int | None = None, bins: int = 30) -> None:
        if (every_n_steps is not None and every_n_steps < 1) or bins < 1:
            raise ValueError(
                f"every_n_steps and bins must be at least 1, got {every_n_steps}, {bins}"
            )
        self.scope, self.every_n_steps, self.bins = scope, every_n_steps, bins
        self.every = every_n_steps or 50
        self.names: dict[str, str] = {}

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.every = interval(trainer, self.every_n_steps)
        if isinstance(pl_module, SeedModel):
            self.names = {k: _span(v) for k, v in pl_module.seed_groups().items()}

    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: Optimizer
    ) -> None:
        step = trainer.global_step
        if step % self.every:
            return
        for writer in tensorboards(trainer):
            for name, param in pl_module.named_parameters():
                tag = f"weights/{self.scope}/{self.names.get(name, name)}"
                for suffix, values in (("", param), (".grad", param.grad)):
                    if values is None:
                        continue
                    # numpy has no bins for an inf or nan, or for values too large for 30 bins
                    # to tell apart: a run that diverges, which its loss check stops.
                    with contextlib.suppress(ValueError):
                        writer.add_histogram(tag + suffix, values.detach(), step, bins=self.bins)


def _span(names: list[str]) -> str:
    return names[0] if len(names) == 1 else f"{names[0]}..{names[-1]}"


class GradientCheck(pl.Callback):
    """Every ``every_n_steps`` steps from step 0, compares the hand-derived and autograd gradients
    of the batch (None, the default: about 25 times over the run, every step of a short one).

    Logs one signal, ``gradcheck/<scope>``: the largest relative difference over the parameters
    at that step. When ``|hand - autograd| > atol + rtol * max(|hand|, |autograd|)`` for some
    parameter it logs each parameter's difference (``gradcheck/<scope>/<name>``) at that step
    and stops the run with a :class:`GradientCheckError` naming the parameter, both values and
    the step.

    The check takes the batch's first ``max_rows`` rows: the chain rule holds on any rows, and on
    a batch of 2^18 rows a check of them all costs two training steps.
    """

    def __init__(
        self,
        scope: str = "model",
        every_n_steps: int | None = None,
        rtol: float = 1e-4,
        atol: float = 1e-7,
        max_rows: int = 1024,
    ) -> None:
        if (every_n_steps is not None and every_n_steps < 1) or max_rows < 1:
            raise ValueError(
                f"every_n_steps and max_rows must be at least 1, got {every_n_steps}, {max_rows}"
            )
        if rtol <= 0 or atol <= 0:
            raise ValueError(f"rtol and atol must be > 0, got rtol={rtol}, atol={atol}")
        self.scope, self.every_n_steps, self.rtol, self.atol = scope, every_n_steps, rtol, atol
        self.every = every_n_steps or 50
        self.max_rows = max_rows
        self._batch: Any = None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.every = interval(trainer, self.every_n_steps)

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._batch = batch if trainer.global_step % self.every == 0 else None

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
        failed = None
        for name, h, a in zip(hand, hands, autos, strict=True):
            scale, error = max(abs(h), abs(a)), abs(h - a)
            worst[name] = error / max(scale, self.atol)
            if failed is None and error > self.atol + self.rtol * scale:
                failed = (name, h, a)
        metrics = {f"gradcheck/{self.scope}": max(worst.values())}
        if failed is not None:
            metrics.update({f"gradcheck/{self.scope}/{k}": v for k, v in worst.items()})
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=step)
        if failed is not None:
            name, h, a = failed
            raise GradientCheckError(
                f"gradient check failed at step {step}: dL/d{name} is {h:.8g} by hand but "
                f"{a:.8g} by autograd (relative difference {worst[name]:.3g}, tolerance "
                f"{self.rtol:g}). Fix {type(pl_module).__name__}.backward_by_hand, or explain "
                f"the step: uv run explain.py model=... step={step}"
            )


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
