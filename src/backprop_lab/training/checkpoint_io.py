"""Checkpoints written in the background, the newest one per file, at most one a second.

A seed run saves ``last.ckpt`` at each of its 100 epoch ends, three steps apart; writing one costs
2-5 ms here (serialise, write a temporary file, rename it), a fifth of the run. Lightning hands each
checkpoint to its CheckpointIO plugin: this one copies the tensors on the spot, so the state is the
one of that moment, and a thread writes the newest checkpoint of each path, at most one write every
``min_interval_s`` seconds; a checkpoint that a newer one replaces before its turn is skipped.
``teardown``, which Lightning calls at the end of every fit (also after an error, a divergence or a
signal), writes what is pending at once and waits for it, so a run leaves on disk what it would
leave writing every checkpoint as it comes. Only a process killed outright (SIGKILL, power loss)
can find the file up to ``min_interval_s`` seconds behind.
"""

from __future__ import annotations

import io
import os
import threading
import time
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins import TorchCheckpointIO
from torch import Tensor

from backprop_lab.files import write_atomic


class AtomicCheckpointIO(TorchCheckpointIO):
    """TorchCheckpointIO that writes each checkpoint whole or not at all (files.write_atomic):
    a crash or a full disk leaves the previous complete checkpoint, never a cut one. Lightning's
    own save stages the file outside its directory when the default temp dir is on another
    device, and a full disk then cut ``last.ckpt`` short."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None
    ) -> None:
        if storage_options is not None:
            super().save_checkpoint(checkpoint, path, storage_options)  # raises: not supported
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, buffer.getbuffer())


class BackgroundCheckpointIO(AtomicCheckpointIO):
    """AtomicCheckpointIO whose saves a background thread writes: the newest one per path, at most
    one write every ``min_interval_s`` seconds, everything pending at ``flush``/``teardown``."""

    def __init__(self, min_interval_s: float = 1.0) -> None:
        super().__init__()
        self.min_interval_s = min_interval_s
        self._pending: dict[str, tuple[dict[str, Any], Any]] = {}
        self._writing = False
        self._flushing = 0
        self._last_write = -float("inf")
        self._error: BaseException | None = None
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None
    ) -> None:
        if storage_options is not None:
            super().save_checkpoint(checkpoint, path, storage_options)  # raises: not supported
        checkpoint = _snapshot(checkpoint)
        with self._changed:
            self._raise_error()
            self._pending[os.fspath(path)] = (checkpoint, path)
            if self._thread is None:
                # Not a daemon: a save handed over outside fit is still written before exit.
                self._thread = threading.Thread(target=self._write, name="checkpoints")
                self._thread.start()

    def _write(self) -> None:
        while True:
            with self._changed:
                while True:
                    if not self._pending:  # nothing left: the thread ends; a save starts another
                        self._thread = None
                        return
                    wait = self._last_write + self.min_interval_s - time.monotonic()
                    if wait <= 0 or self._flushing:
                        break
                    self._changed.wait(wait)
                checkpoint, path = self._pending.pop(next(iter(self._pending)))
                self._writing = True
            try:
                super().save_checkpoint(checkpoint, path)
            except BaseException as error:  # raised by the next save, flush or teardown
                self._error = error
            with self._changed:
                self._writing, self._last_write = False, time.monotonic()
                self._changed.notify_all()

    def flush(self) -> None:
        """Write every checkpoint handed over now and wait for it; raise a write's error."""
        with self._changed:
            self._flushing += 1
            self._changed.notify_all()
            try:
                while self._pending or self._writing:
                    self._changed.wait()
            finally:
                self._flushing -= 1
            self._raise_error()

    def _raise_error(self) -> None:
        error, self._error = self._error, None
        if error is not None:
            raise error

    def load_checkpoint(self, path: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
        self.flush()
        return super().load_checkpoint(path, *args, **kwargs)

    def remove_checkpoint(self, path: Any) -> None:
        self.flush()
        super().remove_checkpoint(path)

    def teardown(self) -> None:
        self.flush()


def _snapshot(value: Any) -> Any:
    """``value`` with every tensor in its dicts, lists and tuples copied, as it is now.

    Lightning's ``apply_to_collection`` does the same for any collection, at ~1 ms for a seed
    model's checkpoint (a dozen dataclass and namedtuple checks per value); this costs ~0.1 ms.
    """
    if isinstance(value, Tensor):
        return value.detach().clone()
    if isinstance(value, dict):
        copied = {k: _snapshot(v) for k, v in value.items()}
        if type(value) is not dict:  # OrderedDict (a state_dict, with its _metadata), AttributeDict
            copied = type(value)(copied)
            if hasattr(value, "_metadata"):
                copied._metadata = value._metadata
        return copied
    if isinstance(value, list):
        return [_snapshot(v) for v in value]
    if type(value) is tuple:
        return tuple(_snapshot(v) for v in value)
    return value
