"""How a run begins and ends: its hyperparameters for every logger, its best epoch, and a stop on
Ctrl-C or SIGTERM that leaves a checkpoint to resume from."""

from __future__ import annotations

import math
import signal
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl

from backprop_lab.callbacks.tensorboard import other_loggers, tensorboards
from backprop_lab.errors import Interrupted


def best_epoch(history: list[dict[str, float]], metric: str, mode: str) -> dict[str, Any] | None:
    """The epoch whose ``metric`` is best (``mode`` min or max), ignoring non-finite values."""
    rows = [r for r in history if metric in r and math.isfinite(r[metric])]
    if not rows:
        return None
    row = (min if mode == "min" else max)(rows, key=lambda r: r[metric])
    return {"metric": metric, "value": row[metric], "epoch": int(row["epoch"])}


class HParamsSummary(pl.Callback):
    """The run's hyperparameters for every logger: TensorBoard's HParams tab beside its losses and
    objective, and for any other logger (CSV's hparams.yaml, MLflow's params) through
    ``log_hyperparams`` as training starts.

    The metrics are scalars the run already logs (``Loss/train``, ``Loss/val``,
    ``objective.metric``, and ``Loss/test`` with a test split): the tab shows each one's last
    value, and no extra scalar joins the charts. ``chosen`` are the keys the command line set (a
    sweep's swept keys): they are listed first, so they are among the columns the tab shows before
    any is ticked. ``trial`` names the run in the table's Trial ID column. Written at the end
    of training, while the writers are open, with tensorboard's own hparams summaries.
    """

    def __init__(
        self,
        hparams: dict[str, Any],
        metric: str,
        mode: str = "min",
        chosen: Sequence[str] = (),
        trial: str | None = None,
    ) -> None:
        self.hparams, self.metric, self.mode, self.chosen = hparams, metric, mode, list(chosen)
        self.trial = trial

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """The other loggers get the values as training starts, so a run stopped early has them
        too. TensorBoard's are written with the metrics at the end, as its HParams tab wants."""
        for logger in other_loggers(trainer):
            logger.log_hyperparams(self.hparams)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        writers = tensorboards(trainer)
        if not writers:
            return
        from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2, summary_v2

        types = {bool: api_pb2.DATA_TYPE_BOOL, str: api_pb2.DATA_TYPE_STRING}
        infos = [
            api_pb2.HParamInfo(
                name=name,
                type=types.get(type(value), api_pb2.DATA_TYPE_FLOAT64),
                differs=name in self.chosen,
            )
            for name, value in self.hparams.items()
        ]
        logged = getattr(pl_module, "history", None) or [{}]
        tags = dict.fromkeys(
            [self.metric, *(t for t in ("Loss/train", "Loss/val") if t in logged[-1])]
        )
        if getattr(trainer.datamodule, "test_xy", None) is not None:  # type: ignore[attr-defined]
            tags["Loss/test"] = None  # logged by the test after training, at the same step
        metrics = [api_pb2.MetricInfo(name=api_pb2.MetricName(tag=tag)) for tag in tags]
        status = api_pb2.STATUS_ABORTED if trainer.interrupted else api_pb2.STATUS_SUCCESS
        summaries = (
            _hparams_summary(
                metadata.EXPERIMENT_TAG,
                experiment=api_pb2.Experiment(hparam_infos=infos, metric_infos=metrics),
            ),
            summary_v2.hparams_pb(self.hparams, trial_id=self.trial),
            _hparams_summary(
                metadata.SESSION_END_INFO_TAG,
                session_end_info=plugin_data_pb2.SessionEndInfo(status=status),
            ),
        )
        for writer in writers:
            # SummaryWriter has no call for a Summary of one's own; its FileWriter's add_summary
            # is the public one (the writer makes it on creation and keeps it until closed).
            file_writer: Any = writer.file_writer
            for summary in summaries:
                file_writer.add_summary(summary, trainer.global_step)


def _hparams_summary(tag: str, **data: Any) -> Any:
    """A Summary of the hparams plugin's data under ``tag``, as tensorboard's summary_v2 makes its
    own (its public helpers for the experiment need TensorFlow, or compute the hparams' order)."""
    from tensorboard.compat.proto.summary_pb2 import Summary
    from tensorboard.plugins.hparams import metadata, plugin_data_pb2

    meta = metadata.create_summary_metadata(plugin_data_pb2.HParamsPluginData(**data))
    return Summary(value=[Summary.Value(tag=tag, metadata=meta, tensor=metadata.NULL_TENSOR)])


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
