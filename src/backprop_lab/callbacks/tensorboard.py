"""The run's TensorBoard loggers and writers, for callbacks that write to TensorBoard directly
(histograms, graphs, images: what ``logger.log_metrics`` cannot carry), and its other loggers; and
the TensorBoard logger the runs use."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import lightning.pytorch as pl
from lightning.pytorch import loggers as lightning_loggers
from lightning.pytorch.loggers import Logger
from lightning.pytorch.utilities import rank_zero_only
from torch import Tensor

if TYPE_CHECKING:  # the writer's module loads with the logger's first write, not here
    from torch.utils.tensorboard import SummaryWriter


def tensorboard_loggers(trainer: pl.Trainer) -> list[lightning_loggers.TensorBoardLogger]:
    """The run's TensorBoard loggers, on the global-rank-0 process (the one that writes)."""
    if not trainer.is_global_zero:
        return []
    return [lg for lg in trainer.loggers if isinstance(lg, lightning_loggers.TensorBoardLogger)]


def tensorboards(trainer: pl.Trainer) -> list[SummaryWriter]:
    """The SummaryWriters of :func:`tensorboard_loggers`."""
    return [lg.experiment for lg in tensorboard_loggers(trainer)]


def other_loggers(trainer: pl.Trainer) -> list[Logger]:
    """The run's loggers that are not TensorBoard's (CSV, MLflow), on the global-rank-0 process:
    what they get goes through the public ``Logger`` API alone."""
    if not trainer.is_global_zero:
        return []
    return [lg for lg in trainer.loggers if not isinstance(lg, lightning_loggers.TensorBoardLogger)]


class TensorBoardLogger(lightning_loggers.TensorBoardLogger):
    """Lightning's TensorBoardLogger, writing the scalars of one ``log_metrics`` call as one event.

    Lightning writes each scalar as an event of its own (``SummaryWriter.add_scalar``). A seed
    run logs every parameter and gradient at every step: sigmoid_net's 26 scalars cost ~610 us a
    step as 26 events, ~120 us as one ``Summary`` holding them all, which TensorBoard reads as
    the same 26 series. (benchmarks/run.py, section long: "project model=sigmoid_net, default
    callbacks".) A call Lightning's way handles otherwise (a logger ``prefix``, a dict of values,
    a writer closed at the end of fit) goes to Lightning's own ``log_metrics``.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.one_event = not kwargs.get("prefix")

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        writer = self.experiment
        values = [(k, v.item() if isinstance(v, Tensor) else v) for k, v in metrics.items()]
        if (
            not self.one_event
            or writer.file_writer is None
            or not all(isinstance(v, int | float) for _, v in values)
        ):
            super().log_metrics(metrics, step)
            return
        from tensorboard.compat.proto.summary_pb2 import Summary  # loaded with the writer

        summary = Summary(value=[Summary.Value(tag=k, simple_value=v) for k, v in values])
        writer.file_writer.add_summary(summary, step)
