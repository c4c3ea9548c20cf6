"""Small callbacks, one concern each. Gradients are read in ``on_before_optimizer_step``: after
backward (and any accumulation or unscaling) and before the optimiser changes the parameters."""

from __future__ import annotations

import lightning.pytorch as pl
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from torch.optim import Optimizer


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
