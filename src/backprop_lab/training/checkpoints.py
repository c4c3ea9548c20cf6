"""Finding and checking the checkpoint a run resumes from (``ckpt_path``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from backprop_lab.errors import CheckpointError, ConfigError
from backprop_lab.models import check_model_config

#: The checkpoints a run writes, by the name ckpt_path gives them: ``last`` and ``best``.
NAMED = ("last", "best")


def resolve(
    ckpt_path: str,
    runs_dir: Path | None,
    exclude: Path | None = None,
    pattern: str = "*/checkpoints",
) -> Path:
    """``last`` or ``best`` (the newest run's checkpoints/last.ckpt or best.ckpt: the run among the
    checkpoint dirs matching ``pattern`` under runs_dir, not in ``exclude``, with the newest
    checkpoint), a run dir (its last.ckpt), or a .ckpt file."""
    if ckpt_path in NAMED and runs_dir is not None:
        return _newest(ckpt_path, runs_dir, exclude, pattern)
    path = Path(ckpt_path).expanduser()
    if path.is_dir():
        for candidate in (path / "checkpoints" / "last.ckpt", path / "last.ckpt"):
            if candidate.is_file():
                return candidate
        raise CheckpointError(
            f"{path} is a directory without checkpoints/last.ckpt; give a run dir of train.py "
            "or the .ckpt file itself"
        )
    if path.exists() and not path.is_file():
        raise CheckpointError(f"{path} is not a regular file; give a .ckpt file a run saved")
    if not path.is_file():
        raise CheckpointError(
            f"checkpoint {path} does not exist; give a .ckpt file, a run dir (train.py prints "
            "it as 'logs:'), ckpt_path=last or ckpt_path=best"
        )
    return path


def _newest(name: str, runs_dir: Path, exclude: Path | None, pattern: str) -> Path:
    """The newest run's checkpoints/<name>.ckpt: of the runs with a last.ckpt or best.ckpt, the
    one that wrote a checkpoint last (its last.ckpt, at its last epoch's end)."""
    newest: dict[Path, float] = {}  # checkpoints dir -> its newest checkpoint's mtime
    for named in NAMED:
        for p in runs_dir.glob(f"{pattern}/{named}.ckpt"):
            if p.is_file() and (exclude is None or p.parents[1] != exclude):
                newest[p.parent] = max(p.stat().st_mtime, newest.get(p.parent, 0.0))
    if not newest:
        raise CheckpointError(
            f"ckpt_path={name}: no run under {runs_dir} has a checkpoints/{name}.ckpt; train one "
            "first (uv run train.py ...) or give the checkpoint's path"
        )
    folder = max(newest, key=lambda f: newest[f])
    found = folder / f"{name}.ckpt"
    if not found.is_file():
        raise CheckpointError(
            f"ckpt_path={name}: the newest run, {folder.parent}, has no checkpoints/{name}.ckpt "
            "(its objective.metric was never logged: Loss/val without validation data?); use "
            "ckpt_path=last, or the path of another run's checkpoint"
        )
    return found


def load(path: Path) -> dict[str, Any]:
    """The checkpoint's contents, read without running any code from the file."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise CheckpointError(
            f"{path} is not a checkpoint this project can read "
            f"({type(error).__name__}); give a .ckpt file a run saved"
        ) from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise CheckpointError(f"{path} is not a Lightning checkpoint (it has no state_dict)")
    wrong = _misshapen(checkpoint)
    if wrong:
        raise CheckpointError(
            f"{path} is not a checkpoint as this project writes them: its {wrong}; give a "
            ".ckpt file a run saved"
        )
    return checkpoint


#: What each part of a checkpoint this project wrote holds: (key path, accepted types).
LAYOUT: tuple[tuple[tuple[str, ...], tuple[type, ...]], ...] = (
    (("state_dict",), (dict,)),
    (("run_config",), (dict, type(None))),
    (("run_config", "model"), (dict,)),
    (("run_state",), (dict, type(None))),
    (("run_state", "history"), (str,)),
    (("run_state", "last_loss"), (float, type(None))),
    (("run_state", "predictions_before"), (dict, type(None))),
    (("run_state", "data"), (dict, type(None))),
)


def _misshapen(checkpoint: dict[str, Any]) -> str | None:
    """The first part of ``checkpoint`` that is not what this project writes there, in words: a
    checkpoint is data, and a wrong type is reported, not tripped over later."""
    for keys, types in LAYOUT:
        node: Any = checkpoint
        for key in keys[:-1]:
            node = node.get(key) if isinstance(node, dict) else None
        if not isinstance(node, dict) or keys[-1] not in node:
            continue  # a part the checkpoint does not have (an older or a plain Lightning one)
        value = node[keys[-1]]
        if not isinstance(value, types):
            return f"{'.'.join(keys)} is of type {type(value).__name__}"
    if not all(torch.is_tensor(t) for t in checkpoint["state_dict"].values()):
        return "state_dict holds values that are not tensors"
    state = checkpoint.get("run_state") or {}
    try:
        rows = [json.loads(line) for line in state.get("history", "").split("\n") if line]
    except ValueError:
        return "run_state.history is not JSON lines"
    if not all(isinstance(row, dict) for row in rows):
        return "run_state.history holds lines that are not records"
    return None


def check_fits(checkpoint: dict[str, Any], path: Path, cfg: DictConfig, model, datamodule) -> None:
    """The checkpoint must hold the model this config builds, with the same parameter shapes,
    trained on the same data batched the same way: otherwise the resumed run would not continue
    the one that was stopped."""
    saved_config = (checkpoint.get("run_config") or {}).get("model")
    if saved_config is not None:
        try:
            check_model_config(saved_config)  # nothing it names is imported or called
        except ConfigError as error:
            raise CheckpointError(
                f"{path} holds a model this project does not build: {error}"
            ) from None
    saved = (saved_config or {}).get("_target_")
    wanted = cfg.model._target_
    if saved and saved != wanted:
        raise CheckpointError(
            f"{path} holds a {saved.rsplit('.', 1)[-1]}, but this run builds a "
            f"{wanted.rsplit('.', 1)[-1]}: choose the model it was trained with"
        )
    own = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    theirs = {k: tuple(v.shape) for k, v in checkpoint["state_dict"].items()}
    if own != theirs:
        raise CheckpointError(
            f"{path} holds parameters {theirs}, but this run's model has {own}: "
            "resume with the model settings it was trained with"
        )
    saved_data = (checkpoint.get("run_state") or {}).get("data")
    if saved_data and saved_data != datamodule.fingerprint():
        ours = datamodule.fingerprint()
        differ = ", ".join(
            f"{k} {saved_data.get(k)} there, {v} here"
            for k, v in ours.items()
            if saved_data.get(k) != v and k != "digest"
        )
        raise CheckpointError(
            f"{path} was trained on other data ({differ or 'other rows'}): resume with the data "
            "and data settings it was trained with, or start a new run without ckpt_path"
        )
