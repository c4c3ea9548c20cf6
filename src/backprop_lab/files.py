"""What a run leaves on disk: files written whole or not at all, and a run dir never shared.

A file is written to a temporary name in its own directory and renamed over the target
(``os.replace``): a crash, a full disk or a Ctrl-C leaves the previous complete file or the new
one, never half of one. A run writes only into a directory that holds no other run's files.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from backprop_lab.errors import BackpropLabError

#: What a run writes into its directory; a dir holding any of these belongs to another run.
RUN_FILES = ("summary.json", "metrics.csv", "checkpoints", "loss_curve.png")
#: errno values that mean the device is full, not that the path is wrong.
FULL = (errno.ENOSPC, errno.EDQUOT)


class DiskFull(BackpropLabError):
    """The run's device has no space left."""


def write_atomic(path: str | os.PathLike, data: str | bytes | memoryview) -> None:
    """Write ``data`` to ``path`` whole: a temporary file beside it, flushed, then renamed."""
    path = Path(path)
    raw = data.encode() if isinstance(data, str) else data
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.partial")
    try:
        with open(temporary, "xb") as f:  # as open() makes any file: the umask's permissions
            f.write(raw)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def other_runs_files(directory: str | os.PathLike) -> list[str]:
    """The names in ``directory`` that another run wrote (empty for a new or missing dir)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [name for name in RUN_FILES if (directory / name).exists()]
    return found + sorted(p.name for p in directory.glob("events.out.tfevents.*"))[:1]


def check_run_dir(directory: str | os.PathLike, key: str = "hydra.run.dir") -> None:
    """Refuse a run dir that is a file, lies under a file, cannot be made, or holds another run's
    files; make it otherwise."""
    directory = Path(directory)
    for parent in (directory, *directory.parents):
        if parent.exists() and not parent.is_dir():
            raise BackpropLabError(
                f"{key}={directory} cannot be a run dir: {parent} is a file; "
                "give a directory path, or leave it unset for a fresh one under logs/"
            )
    held = other_runs_files(directory)
    if held:
        raise BackpropLabError(
            f"{key}={directory} already holds another run's files ({', '.join(held)}); "
            "nothing was written. Give a new dir, or leave it unset for a fresh one under logs/"
        )
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise BackpropLabError(
            f"{key}={directory} cannot be made ({error.strerror}); give a dir this user can "
            "write, or leave it unset for a fresh one under logs/"
        ) from None


@contextlib.contextmanager
def background_writers_report_full_disks(directory: str | os.PathLike) -> Iterator[None]:
    """While a run trains, a background writer (TensorBoard's event writer thread) that stops on
    a full disk is reported in one line instead of a thread traceback; the run's own next write
    then fails and ends the run with its error. Other thread errors are shown as usual."""
    previous = threading.excepthook

    def hook(args: threading.ExceptHookArgs) -> None:
        if args.exc_value is not None and is_disk_full(args.exc_value):
            print(
                f"error: a background writer ({args.thread.name if args.thread else 'thread'}) "
                f"stopped: no space left on the device of {directory}",
                file=sys.stderr,
            )
        else:
            previous(args)

    threading.excepthook = hook
    try:
        yield
    finally:
        threading.excepthook = previous


def is_disk_full(error: BaseException) -> bool:
    """Whether ``error``, or an error it was raised from, is a full device."""
    current: BaseException | None = error
    while current is not None:
        if isinstance(current, OSError) and current.errno in FULL:
            return True
        current = current.__cause__ or current.__context__
    return False


class RunDirGuard(Callback):
    """Hydra callback: refuse a run or sweep dir that is a file, lies under one, or holds another
    run's files, before Hydra writes its .hydra/ and train.log there.

    An entry point whose Hydra writes nothing into its run dir (``hydra.output_subdir: null``,
    as explain.py and predict.py have) is not checked; a search reuses its dir on purpose, and
    each of its trials is checked by ``training.train``."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        if config.hydra.output_subdir is not None:
            HydraConfig.instance().set_config(config)  # the dir's ${hydra:...} resolve with it
            _refuse(lambda: check_run_dir(config.hydra.run.dir, "hydra.run.dir"))

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        HydraConfig.instance().set_config(config)

        def check() -> None:
            sweep_dir = Path(config.hydra.sweep.dir)
            check_run_dir(sweep_dir, "hydra.sweep.dir")
            if sweep_dir.is_dir() and any(sweep_dir.glob("*/summary.json")):
                raise BackpropLabError(
                    f"hydra.sweep.dir={sweep_dir} already holds another sweep's jobs; nothing "
                    "was written. Give a new dir, or leave it unset for a fresh one under logs/"
                )

        _refuse(check)


def _refuse(check: Callable[[], None]) -> None:
    """Run ``check``; its error ends the process in one line, as cli.run ends a task."""
    try:
        check()
    except BackpropLabError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(error.exit_code)
