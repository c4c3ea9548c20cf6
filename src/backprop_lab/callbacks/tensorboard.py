"""The run's TensorBoard loggers and writers, for callbacks that write to TensorBoard directly
(histograms, graphs, images: what ``logger.log_metrics`` cannot carry), and its other loggers."""

from __future__ import annotations

from typing import TYPE_CHECKING

import lightning.pytorch as pl
from lightning.pytorch.loggers import Logger, TensorBoardLogger

if TYPE_CHECKING:  # the writer's module loads with the logger's first write, not here
    from torch.utils.tensorboard import SummaryWriter


def tensorboard_loggers(trainer: pl.Trainer) -> list[TensorBoardLogger]:
    """The run's TensorBoard loggers, on the global-rank-0 process (the one that writes)."""
    if not trainer.is_global_zero:
        return []
    return [lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)]


def tensorboards(trainer: pl.Trainer) -> list[SummaryWriter]:
    """The SummaryWriters of :func:`tensorboard_loggers`."""
    return [lg.experiment for lg in tensorboard_loggers(trainer)]


def other_loggers(trainer: pl.Trainer) -> list[Logger]:
    """The run's loggers that are not TensorBoard's (CSV, MLflow), on the global-rank-0 process:
    what they get goes through the public ``Logger`` API alone."""
    if not trainer.is_global_zero:
        return []
    return [lg for lg in trainer.loggers if not isinstance(lg, TensorBoardLogger)]
