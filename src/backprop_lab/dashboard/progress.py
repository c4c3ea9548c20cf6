"""The console while a run trains: one progress bar, shown only once the run lasts."""

from __future__ import annotations

import math
import sys
import time
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import ProgressBar as LightningProgressBar


class ProgressBar(LightningProgressBar):
    """One progress bar for the whole run: epoch, steps, last loss, time left.

    On a terminal (stderr) the bar appears once training has lasted ``delay`` seconds, is redrawn
    at most every ``refresh`` seconds and is erased at the end, so a run of a moment prints only
    its results. When stderr is not a terminal (a log file, a cluster job), a plain line is
    written every ``log_every`` seconds instead. Per step it costs one clock read.
    """

    def __init__(self, delay: float = 2.0, refresh: float = 0.2, log_every: float = 30.0) -> None:
        super().__init__()
        self.delay, self.refresh, self.log_every = delay, refresh, log_every
        self._enabled = True
        self._tty = False
        self._bar: Any = None
        self._started = self._next = 0.0

    @property
    def is_enabled(self) -> bool:
        return self._enabled

    @property
    def is_disabled(self) -> bool:
        return not self._enabled

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._tty = sys.stderr.isatty()
        self._started = time.monotonic()
        self._next = self._started + (self.delay if self._tty else max(self.delay, self.log_every))

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        if self._enabled and time.monotonic() >= self._next:
            self._show(trainer, pl_module)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._close()

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        self._close()

    def print(self, *args: Any, **kwargs: Any) -> None:
        if self._bar is not None:
            self._bar.write(kwargs.get("sep", " ").join(map(str, args)), file=sys.stderr)
        else:
            print(*args, **kwargs)

    def _show(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        now = time.monotonic()
        estimated = trainer.estimated_stepping_batches
        total = int(estimated) if math.isfinite(estimated) else None
        step, epoch = trainer.global_step, trainer.current_epoch + 1
        most = trainer.max_epochs or 0
        epochs = f"{epoch}/{most}" if most > 0 else str(epoch)
        last = getattr(pl_module, "last_loss", None)
        loss = f"loss {float(last):.4g}" if last is not None else ""
        if self._tty:
            if self._bar is None:
                from tqdm.auto import tqdm

                self._bar = tqdm(
                    total=total,
                    file=sys.stderr,
                    leave=False,
                    dynamic_ncols=True,
                    unit="step",
                    smoothing=0,
                    delay=max(self.delay, 1e-3),  # no empty first bar; refresh() draws it
                    disable=None,  # off where stderr cannot show it
                )
                self._bar.start_t -= now - self._started  # rate and time left count from the start
            self._bar.set_description(f"epoch {epochs}", refresh=False)
            self._bar.set_postfix_str(loss, refresh=False)
            self._bar.n = step
            self._bar.refresh()
            self._next = now + self.refresh
        else:
            elapsed = now - self._started
            done = f"step {step}/{total}" if total else f"step {step}"
            left = ""
            if total and step:
                left = f", ~{_duration(elapsed * (total - step) / step)} left"
            print(
                f"epoch {epochs}, {done}, {loss}, {_duration(elapsed)} elapsed{left}",
                file=sys.stderr,
                flush=True,
            )
            self._next = now + self.log_every

    def _close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def progress_bar(enabled: bool = True, **kwargs: Any) -> ProgressBar | None:
    """The :class:`ProgressBar` where ``trainer.enable_progress_bar`` is on; otherwise None, no
    callback (Lightning refuses a progress bar with the flag off), as lr_monitor and
    early_stopping give where they are off: Lightning calls every callback's hooks at every step."""
    return ProgressBar(**kwargs) if enabled else None


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, seconds = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s"
