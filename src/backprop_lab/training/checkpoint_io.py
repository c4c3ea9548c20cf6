"""Checkpoints written whole or not at all.

The trainer's ``plugins`` (conf/trainer/default.yaml) wrap :class:`AtomicCheckpointIO` in
Lightning's ``AsyncCheckpointIO``: it clones every tensor of a checkpoint on the training thread
when the checkpoint is handed over (so a save holds the state of that moment, which exact resume
needs), then writes it in a thread of its own, so an epoch-end save does not hold up training.
Lightning calls its ``teardown`` at the end of every fit, also after an error, a divergence or a
signal: it waits for every pending write and raises the first write's error (a full disk).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins import TorchCheckpointIO

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
