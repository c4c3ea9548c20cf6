"""Small callbacks, one concern each. Gradients are read in ``on_before_optimizer_step``: after
backward (and any accumulation or unscaling) and before the optimiser changes the parameters."""

from __future__ import annotations

import math
import signal
import threading
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger
from torch.optim import Optimizer

from backprop_lab.errors import GradientCheckError, Interrupted
from backprop_lab.models import SeedModel

#: The hooks Lightning calls on every callback at every training or validation batch.
PER_BATCH_HOOKS = (
    "on_train_batch_start",
    "on_before_backward",
    "on_after_backward",
    "on_before_optimizer_step",
    "on_before_zero_grad",
    "on_train_batch_end",
    "on_validation_batch_start",
    "on_validation_batch_end",
)


class Callback(pl.Callback):
    """A ``pl.Callback`` that Lightning calls at a batch only for the per-batch hooks it defines.

    Lightning calls every hook of every callback, each inside a profiler context: ~3 us per hook,
    ~20 us a step for a callback that does nothing per step; with a dozen callbacks that is a
    third of a small model's step (benchmarks/run.py). It skips a hook that is not callable, so
    here a per-batch hook a subclass leaves undefined is None. Every other hook works as usual.
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _skip_unused_batch_hooks(cls)


def _skip_unused_batch_hooks(target: type[pl.Callback] | pl.Callback) -> None:
    """Set to None each per-batch hook that ``target`` (a class or one callback) inherits unchanged
    from ``pl.Callback``, whose hooks do nothing."""
    cls = target if isinstance(target, type) else type(target)
    for hook in PER_BATCH_HOOKS:
        if getattr(cls, hook) is getattr(pl.Callback, hook):
            setattr(target, hook, None)


class EpochEndCheckpoint(ModelCheckpoint):
    """Lightning's ModelCheckpoint without the per-batch calls of the hooks it inherits as no-ops,
    and without two costs that serve only options this project's ``last.ckpt`` (no monitored
    metric, saved at epoch ends) does not use:

    - its per-batch hook, which serves ``every_n_train_steps`` and ``train_time_interval``: off
      when neither is set (Lightning skips a hook that is not callable);
    - a deep copy of every logged metric at each save (~0.5 ms), kept for ranking the top-k
      checkpoints by a monitored metric: a shallow copy when nothing is monitored.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _skip_unused_batch_hooks(self)  # five no-op calls a step (~30 us)
        if not self._every_n_train_steps and self._train_time_interval is None:
            self.on_train_batch_end = None

    def _monitor_candidates(self, trainer: pl.Trainer) -> dict[str, torch.Tensor]:
        if self.monitor is not None:
            return super()._monitor_candidates(trainer)
        candidates = dict(trainer.callback_metrics)
        epoch, step = candidates.get("epoch"), candidates.get("step")
        candidates["epoch"] = (
            epoch.int() if isinstance(epoch, torch.Tensor) else torch.tensor(trainer.current_epoch)
        )
        candidates["step"] = (
            step.int() if isinstance(step, torch.Tensor) else torch.tensor(trainer.global_step)
        )
        return candidates


def tensorboard_loggers(trainer: pl.Trainer) -> list[TensorBoardLogger]:
    """The run's TensorBoard loggers, on the global-rank-0 process (the one that writes)."""
    if not trainer.is_global_zero:
        return []
    return [lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)]


def tensorboards(trainer: pl.Trainer) -> list:
    """The SummaryWriters of :func:`tensorboard_loggers`."""
    return [lg.experiment for lg in tensorboard_loggers(trainer)]


class GradNormLogger(Callback):
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


class ParameterHistograms(Callback):
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


class GradientCheck(Callback):
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
        self._batch = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        self._batch = batch if trainer.global_step % self.every_n_steps == 0 else None

    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: SeedModel, optimizer: Optimizer
    ) -> None:
        if self._batch is None:
            return
        dtype = next(pl_module.parameters()).dtype
        whole = len(self._batch[0]) <= self.max_rows
        batch = tuple(t[: self.max_rows].to(dtype) for t in self._batch)
        self._batch = None
        hand = pl_module.seed_names(pl_module.hand_gradients(batch)[3])
        if whole and _grads_of_this_batch(trainer, pl_module):
            autograd = {name: p.grad for name, p in pl_module.trainable().items()}
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


def best_epoch(history: list[dict[str, float]], metric: str, mode: str) -> dict[str, Any] | None:
    """The epoch whose ``metric`` is best (``mode`` min or max), ignoring non-finite values."""
    rows = [r for r in history if metric in r and math.isfinite(r[metric])]
    if not rows:
        return None
    row = (min if mode == "min" else max)(rows, key=lambda r: r[metric])
    return {"metric": metric, "value": row[metric], "epoch": int(row["epoch"])}


class HParamsSummary(Callback):
    """TensorBoard's HParams tab: the run's hyperparameters beside its final and best metrics.

    Written at the end of training, while the loggers are still open, so the tab compares runs
    by how they ended (Lightning's default ``hp_metric`` placeholder is switched off).
    """

    def __init__(self, hparams: dict[str, Any], metric: str, mode: str = "min") -> None:
        self.hparams, self.metric, self.mode = hparams, metric, mode

    def on_train_end(self, trainer: pl.Trainer, pl_module: SeedModel) -> None:
        if pl_module.last_loss is None:
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


class StopOnSignal(Callback):
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

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module, outputs, batch, batch_idx) -> None:
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
        name = signal.Signals(self.received).name
        return Interrupted(
            f"stopped by {name} at step {trainer.global_step}; "
            f"resume with ckpt_path={self.checkpoint}",
            self.received,
        )

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception) -> None:
        if isinstance(exception, KeyboardInterrupt) and self.received is None:
            self.received = signal.SIGINT  # Ctrl-C before this callback's handler was in place
        if self.received is not None and not isinstance(exception, Interrupted):
            self.save(trainer)  # the signal came between batches (e.g. during validation)

    def save(self, trainer: pl.Trainer) -> None:
        if not self.saved and trainer.global_step > 0:  # before any step there is nothing to keep
            trainer.save_checkpoint(self.checkpoint, weights_only=False)  # resumable: all state
            self.saved = True

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}
