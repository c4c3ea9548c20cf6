"""How a run begins and ends: its HParams summary, its best epoch, and a stop on Ctrl-C or SIGTERM
that leaves a checkpoint to resume from."""

from __future__ import annotations

import math
import signal
import threading
from pathlib import Path
from typing import Any

import lightning.pytorch as pl

from backprop_lab.errors import Interrupted
from backprop_lab.models import SeedModel


def best_epoch(history: list[dict[str, float]], metric: str, mode: str) -> dict[str, Any] | None:
    """The epoch whose ``metric`` is best (``mode`` min or max), ignoring non-finite values."""
    rows = [r for r in history if metric in r and math.isfinite(r[metric])]
    if not rows:
        return None
    row = (min if mode == "min" else max)(rows, key=lambda r: r[metric])
    return {"metric": metric, "value": row[metric], "epoch": int(row["epoch"])}


class HParamsSummary(pl.Callback):
    """TensorBoard's HParams tab: the run's hyperparameters beside its final and best metrics.

    Written at the end of training, while the loggers are still open, so the tab compares runs
    by how they ended (Lightning's default ``hp_metric`` placeholder is switched off).
    """

    def __init__(self, hparams: dict[str, Any], metric: str, mode: str = "min") -> None:
        self.hparams, self.metric, self.mode = hparams, metric, mode

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not isinstance(pl_module, SeedModel) or pl_module.last_loss is None:
            return
        metrics = {"hp/final_loss": float(pl_module.last_loss)}
        if pl_module.history:
            final = pl_module.history[-1]
            metrics.update({f"hp/final/{k}": v for k, v in final.items() if "/" in k})
            best = best_epoch(pl_module.history, self.metric, self.mode)
            if best:
                metrics[f"hp/best/{self.metric}"] = best["value"]
        metrics = {k: v for k, v in metrics.items() if math.isfinite(v)}
        for logger in trainer.loggers:
            logger.log_hyperparams(self.hparams, metrics)


class StopOnSignal(pl.Callback):
    """Ctrl-C or SIGTERM: finish the step in hand, save ``last.ckpt``, stop with exit 130 or 143.

    Lightning 2.6 ends a run on SIGTERM with exit status 0 and turns Ctrl-C into exit 1 without a
    checkpoint. This callback notes the signal and acts at the next batch end, before Lightning's
    own check: the checkpoint holds a consistent state (the data position included), and the
    interruption is reported as one.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, checkpoint: str | Path) -> None:
        self.checkpoint = Path(checkpoint)
        self.received: int | None = None
        self.saved = False
        self._previous: dict[int, Any] = {}

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._note) for s in self.SIGNALS}

    def _note(self, signum: int, frame: Any) -> None:
        if self.received == signal.SIGINT and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now
        self.received = signum

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        if self.received is None:
            return
        if batch_idx + 1 >= trainer.num_training_batches:
            # The epoch's last batch: let the epoch end (its metrics, validation, the epoch-end
            # checkpoint) and stop there. Lightning resumes a checkpoint taken between the last
            # batch and the epoch's end without running that epoch's end.
            trainer.should_stop = True
            return
        self.save(trainer)
        raise self.interrupted(trainer)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.received is not None:
            self.save(trainer)  # the epoch-end state, also without a checkpoint callback

    def interrupted(self, trainer: pl.Trainer) -> Interrupted:
        """The error that ends a run stopped by a signal (raised here, or after ``fit``)."""
        assert self.received is not None, "asked for the interruption before any signal"
        name = signal.Signals(self.received).name
        return Interrupted(
            f"stopped by {name} at step {trainer.global_step}; "
            f"resume with ckpt_path={self.checkpoint}",
            self.received,
        )

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        if isinstance(exception, KeyboardInterrupt) and self.received is None:
            self.received = signal.SIGINT  # Ctrl-C before this callback's handler was in place
        if self.received is not None and not isinstance(exception, Interrupted):
            self.save(trainer)  # the signal came between batches (e.g. during validation)

    def save(self, trainer: pl.Trainer) -> None:
        """Save a resumable checkpoint (all state) once, if any step was taken."""
        if not self.saved and trainer.global_step > 0:  # before any step there is nothing to keep
            trainer.save_checkpoint(self.checkpoint, weights_only=False)
            self.saved = True

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}
