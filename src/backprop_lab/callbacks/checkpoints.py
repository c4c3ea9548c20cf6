"""Lightning's ModelCheckpoint at epoch ends, at an interval that keeps a long run's saves few."""

from __future__ import annotations

import math
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

#: A run whose ``every_n_epochs`` is None saves at every epoch end up to this many epochs...
EVERY_EPOCH = 100
#: ... and a longer one about this many times.
SAVES = 50


class EpochCheckpoint(ModelCheckpoint):
    """ModelCheckpoint (its top-k, monitor and file options as they are) saving at the end of every
    ``every_n_epochs``-th epoch and at the end of the run's last one: the epoch of
    ``trainer.max_epochs`` or ``max_steps``, or one after which the run stops (EarlyStopping).
    ``every_n_epochs`` None: every epoch of a run of up to 100 epochs (every seed experiment)
    and of one an EarlyStopping on the same ``monitor`` may stop, about 50 times over a longer
    run. A ``monitor``'s best is the best of the epochs saved at.

    Speed: a save costs ~2-4 ms on the training thread (the checkpoint's state gathered, copied
    and pickled for the writing thread), where an epoch of a seed model's long run (3334 or 5000
    epochs of one to three steps) takes ~1.5-4 ms. Every epoch, the two checkpoints tripled its
    step time; 100 saves a run of each still cost ~130 us a step, 50 half that.
    The per-step hook and the state key ModelCheckpoint rebuilds at every hook call cost the two
    ~60 us a step more. (benchmarks/run.py, section long: "project model=quadratic, default
    callbacks".)
    """

    def __init__(self, every_n_epochs: int | None = None, **kwargs: Any) -> None:
        if every_n_epochs is not None and every_n_epochs < 1:
            raise ValueError(f"every_n_epochs must be at least 1 or null, got {every_n_epochs}")
        steps = {"every_n_train_steps", "train_time_interval"} & set(kwargs)
        if steps:
            name = type(self).__name__
            raise ValueError(f"{name} saves at epoch ends only; drop {sorted(steps)}")
        super().__init__(every_n_epochs=1, save_on_train_epoch_end=True, **kwargs)
        self.interval = every_n_epochs
        self.every = every_n_epochs or 1
        # ModelCheckpoint's, made once: Lightning reads it at each of a callback's hook calls
        # (~10 a step) and ModelCheckpoint builds it from its settings anew each time.
        self._state_key = super().state_key

    @property
    def state_key(self) -> str:
        return self._state_key

    def on_train_batch_end(self, *args: Any, **kwargs: Any) -> None:
        """Nothing: saves are at epoch ends (ModelCheckpoint checks its step and time triggers
        here, which this callback does not have)."""

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        epochs, self.every = trainer.max_epochs or 0, self.interval or 1
        if self.interval is None and epochs > EVERY_EPOCH and not self.stopped_by(trainer):
            self.every = math.ceil(epochs / SAVES)

    def stopped_by(self, trainer: pl.Trainer) -> bool:
        """Whether an EarlyStopping watches this checkpoint's monitor: the run then stops its
        ``patience`` epochs after the best one, and every epoch is a candidate."""
        callbacks = trainer.callbacks  # type: ignore[attr-defined]  # a list
        return self.monitor is not None and any(
            isinstance(cb, EarlyStopping) and cb.monitor == self.monitor for cb in callbacks
        )

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.due(trainer):
            super().on_train_epoch_end(trainer, pl_module)

    def due(self, trainer: pl.Trainer) -> bool:
        """Whether the epoch ending now is saved: every ``every``-th, and the run's last."""
        epochs, steps = trainer.current_epoch + 1, trainer.max_steps
        return (
            epochs % self.every == 0
            or trainer.should_stop
            or (trainer.max_epochs is not None and epochs >= trainer.max_epochs)
            or (steps is not None and 0 <= steps <= trainer.global_step)
        )
