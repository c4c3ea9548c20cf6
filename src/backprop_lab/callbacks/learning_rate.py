"""Lightning's LearningRateMonitor, for the runs that have a learning-rate schedule."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import LearningRateMonitor


class ScheduledLearningRate(LearningRateMonitor):
    """Logs the learning rate as Lightning's LearningRateMonitor does (tag ``lr-<optimizer>``,
    e.g. ``lr-SGD``, and the same value in ``trainer.callback_metrics``, so metrics.csv has it
    per epoch), but only where a scheduler changes it (``scheduler=step|cosine|plateau``): under
    ``scheduler=none`` a chart of one constant value is left out, and a run without loggers
    (``logger=none``) is not an error, as it is for Lightning's callback."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.active = False
        self._epoch: int | None = None  # the epoch whose rate was logged last

    def on_train_start(self, trainer: pl.Trainer, *args: Any, **kwargs: Any) -> None:
        self.active = bool(trainer.loggers and trainer.lr_scheduler_configs)
        self._epoch = None
        if self.active:
            super().on_train_start(trainer, *args, **kwargs)

    def on_train_batch_start(self, trainer: pl.Trainer, *args: Any, **kwargs: Any) -> None:
        if not self.active:
            return
        if self.logging_interval != "step" and self._epoch != trainer.current_epoch:
            # A run resumed mid-epoch: Lightning calls no epoch start for the epoch it goes on with.
            self.on_train_epoch_start(trainer)
        super().on_train_batch_start(trainer, *args, **kwargs)

    def on_train_epoch_start(self, trainer: pl.Trainer, *args: Any, **kwargs: Any) -> None:
        if self.active:
            super().on_train_epoch_start(trainer, *args, **kwargs)
            self._epoch = trainer.current_epoch


def lr_monitor(scheduler: str | None, **options: Any) -> ScheduledLearningRate | None:
    """``ScheduledLearningRate(**options)`` for a run with a scheduler (``scheduler``: the
    ``scheduler._target_`` of the config), or None, no callback at all, under scheduler=none:
    a run without a schedule pays nothing at its steps."""
    return ScheduledLearningRate(**options) if scheduler else None
