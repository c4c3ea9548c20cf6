"""Predictions from a trained checkpoint (predict.py at the top is the entry point).

A checkpoint that train.py wrote holds the run's resolved config (``run_config``: model, loss,
optimizer, data, predict_at) beside Lightning's ``state_dict``, so the model is rebuilt from the
checkpoint alone: ``models.build_model(run_config["model"])``, which builds only this project's
own models, then ``load_state_dict``. Checkpoints are read with ``torch.load(weights_only=True)``:
plain tensors and values; nothing read from one chooses code.

Inputs come from ``x`` (a number per row for one-feature models, a list of features per row
otherwise), from a CSV (``input_csv``, its columns ``columns``, by default the run's
``data.x_columns``), or, with neither, the run's own ``predict_at``.
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from backprop_lab import files
from backprop_lab.data import csvfile
from backprop_lab.errors import BackpropLabError, CheckpointError, ConfigError
from backprop_lab.models import build_model
from backprop_lab.rows import as_rows, format_row
from backprop_lab.training import checkpoints

CHECKPOINT_IN_RUN_DIR = Path("checkpoints") / "last.ckpt"


@dataclass
class Predictions:
    """What predict() found: the inputs, one row of outputs per input row, and the column names."""

    checkpoint: Path
    model: str
    steps: int | None
    device: str
    inputs: list[list[float]]
    outputs: list[list[float]]
    input_names: list[str]
    output_names: list[str]
    #: The CSV's rows as read (every column, as text), when the inputs came from a CSV.
    csv_rows: list[dict[str, str]] | None = None


def choose_device(device: str = "auto") -> torch.device:
    """``auto``: the GPU when torch sees one (CUDA, else Apple's MPS), otherwise the CPU.

    ``cpu``, ``cuda``, ``cuda:<n>`` and ``mps`` are checked against what torch sees here, so that a
    device that is not there is one line, not a failure when the model moves to it.
    """
    mps = getattr(torch.backends, "mps", None)
    has_mps = mps is not None and mps.is_available()
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if has_mps else "cpu")
    if re.fullmatch(r"cpu|cuda(:\d+)?|mps", device) is None:
        raise ConfigError(f"device={device} is not a device; use auto, cpu, cuda, cuda:<n> or mps")
    chosen = torch.device(device)
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            f"device={device}, but torch sees no CUDA GPU here; use device=auto or device=cpu"
        )
    if chosen.type == "cuda" and (chosen.index or 0) >= torch.cuda.device_count():
        last = torch.cuda.device_count() - 1
        raise ConfigError(
            f"device={device}, but torch sees {last + 1} CUDA GPU(s) here, cuda:0 to cuda:{last}; "
            "use device=cuda:0 or device=auto"
        )
    if chosen.type == "mps" and not has_mps:
        raise ConfigError(
            f"device={device}, but torch sees no Apple MPS device here; use device=auto or "
            "device=cpu"
        )
    return chosen


def find_checkpoint(ckpt_path: str | Path | None, runs_dir: str | Path | None = None) -> Path:
    """The checkpoint file: ``ckpt_path`` itself, a run dir's checkpoints/last.ckpt, or with
    ``last`` (``best``) the newest run's last.ckpt (best.ckpt) under ``runs_dir`` (logs/runs)."""
    if ckpt_path is None or str(ckpt_path) == "":
        raise CheckpointError(
            "no checkpoint given: pass ckpt_path=<run dir>/checkpoints/last.ckpt, a run dir, "
            "ckpt_path=last (the newest run) or ckpt_path=best (its best epoch)"
        )
    runs = Path(runs_dir) if runs_dir is not None else None  # logs/runs: <model>/<time>/
    return checkpoints.resolve(str(ckpt_path), runs, pattern=f"*/*/{CHECKPOINT_IN_RUN_DIR.parent}")


def load_model(ckpt_path: str | Path | None, device: str = "auto", runs_dir=None):
    """Rebuild the trained model of a train.py checkpoint on ``device``, in eval mode.

    Returns (model, checkpoint dict, checkpoint path)."""
    path = find_checkpoint(ckpt_path, runs_dir)
    target = choose_device(device)
    checkpoint = checkpoints.load(path)  # on the CPU, without running code from the file
    run_config = checkpoint.get("run_config")
    if not isinstance(run_config, dict) or "model" not in run_config:
        raise CheckpointError(
            f"{path} holds no run_config, so the model cannot be rebuilt from it: it was not "
            "written by this project's train.py. Train with train.py and use its checkpoint"
        )
    model_config = run_config["model"]
    try:
        model = build_model(model_config)  # only this project's models, never another target
    except ConfigError as e:
        raise CheckpointError(f"the model of {path} cannot be rebuilt: {e}") from None
    state = checkpoint["state_dict"]
    floats = [t.dtype for t in state.values() if torch.is_tensor(t) and t.is_floating_point()]
    if floats:
        model = model.to(floats[0])  # a run trained in float64 predicts in float64
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise CheckpointError(
            f"the weights in {path} do not fit the model its config describes "
            f"({' '.join(str(e).split())[:200]})"
        ) from None
    return model.to(target).eval(), checkpoint, path


def read_inputs(path: str | Path, columns: Sequence[str]) -> tuple[list[list[float]], list[dict]]:
    """The named columns of a headed CSV as rows of floats, and every row as read (text, by column
    name) for write_csv to copy. csvfile.py reads it, as it reads training data."""
    source = csvfile.Source(
        what="input file",
        setting="input_csv",
        columns_fix="Name the model's input columns with columns=[...]",
    )
    table = csvfile.read_table(path, columns, source)
    records = [dict(zip(table.header, row, strict=True)) for row in table.rows]
    return table.values.tolist(), records


def predict(
    ckpt_path: str | Path | None,
    x: Any = None,
    input_csv: str | Path | None = None,
    columns: Sequence[str] | None = None,
    device: str = "auto",
    runs_dir: str | Path | None = None,
) -> Predictions:
    """The checkpoint's predictions at ``x``, at the rows of ``input_csv``, or at the run's own
    predict_at inputs when neither is given."""
    if x is not None and input_csv is not None:
        raise BackpropLabError("give the inputs either as x=[...] or as input_csv=..., not both")
    model, checkpoint, path = load_model(ckpt_path, device, runs_dir)
    run_config = checkpoint["run_config"]
    data = run_config.get("data") or {}
    n_in, n_out = model.in_features, model.out_features
    input_names = list(data.get("x_columns") or _names("x", n_in))
    output_names = [f"{c}_pred" for c in (data.get("y_columns") or _names("y", n_out))]
    records = None
    if input_csv is not None:
        if columns is None:
            columns = input_names
        columns = list(columns)
        if len(columns) != n_in:
            raise BackpropLabError(
                f"{type(model).__name__} takes {n_in} input feature(s) per row, but columns "
                f"names {len(columns)}: {columns}"
            )
        inputs, records = read_inputs(input_csv, columns)
        input_names = columns
    else:
        given = as_rows(x if x is not None else run_config.get("predict_at"))
        if not given:
            raise BackpropLabError("no inputs: pass x=[...] or input_csv=<file.csv>")
        inputs = given
        if n_in > 1 and all(len(r) == 1 for r in inputs) and len(inputs) % n_in == 0:
            # x=[0.5,0.3] for a 2-input model: one row of features, as the model reads it
            flat = [r[0] for r in inputs]
            inputs = [flat[i : i + n_in] for i in range(0, len(flat), n_in)]
        wrong = [r for r in inputs if len(r) != n_in]
        if wrong:
            example = "x=[4.0]" if n_in == 1 else "x=[[" + ", ".join(["0.5"] * n_in) + "]]"
            raise BackpropLabError(
                f"{type(model).__name__} takes {n_in} input feature(s) per row, but the row "
                f"{wrong[0]} has {len(wrong[0])}; e.g. {example}"
            )
    dtype = next(model.parameters()).dtype
    largest = torch.finfo(dtype).max
    beyond = next((v for row in inputs for v in row if abs(v) > largest), None)
    if beyond is not None:
        raise BackpropLabError(
            f"input {beyond:g} does not fit the model's {str(dtype).removeprefix('torch.')} "
            f"(largest {largest:.3g}); give inputs within it, or train in float64 "
            "(trainer.precision=64) to predict beyond"
        )
    outputs = _forward(model, inputs)
    return Predictions(
        checkpoint=path,
        model=type(model).__name__,
        steps=checkpoint.get("global_step"),
        device=str(next(model.parameters()).device),
        inputs=inputs,
        outputs=outputs,
        input_names=input_names,
        output_names=output_names,
        csv_rows=records,
    )


@torch.no_grad()
def _forward(model, inputs: list[list[float]], chunk: int = 65536) -> list[list[float]]:
    out: list[list[float]] = []
    for start in range(0, len(inputs), chunk):
        x = model.inputs_tensor(inputs[start : start + chunk])
        out += model(x).to(torch.float64).cpu().tolist()
    return out


def _names(prefix: str, n: int) -> list[str]:
    return [prefix] if n == 1 else [f"{prefix}{i + 1}" for i in range(n)]


def write_csv(predictions: Predictions, path: str | Path) -> Path:
    """The inputs (every column of an input CSV) and a ``<target>_pred`` column per output."""
    path = Path(path).expanduser()
    rows: list[dict[str, Any]]
    if predictions.csv_rows is not None:
        rows = [dict(r) for r in predictions.csv_rows]
    else:
        rows = [dict(zip(predictions.input_names, x, strict=True)) for x in predictions.inputs]
    for row, y in zip(rows, predictions.outputs, strict=True):
        row.update(zip(predictions.output_names, (repr(v) for v in y), strict=True))
    columns = list(dict.fromkeys(k for row in rows for k in row))
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        files.write_atomic(path, text.getvalue())  # whole, or the file as it was
    except OSError as error:
        reason = "no space left on the device" if files.is_disk_full(error) else error.strerror
        raise BackpropLabError(
            f"output_csv={path} cannot be written ({reason}); e.g. output_csv=predictions.csv"
        ) from None
    return path


def render(predictions: Predictions, show: int = 20, written: Path | None = None) -> str:
    """The console report: where the model came from, then ``x=... -> prediction`` per row."""
    steps = f" after {predictions.steps} steps" if predictions.steps is not None else ""
    lines = [
        f"checkpoint: {predictions.checkpoint} ({predictions.model}{steps})",
        f"device: {predictions.device}",
    ]
    shown = predictions.inputs if show < 0 else predictions.inputs[:show]
    lines += [
        f"x={format_row(x)} -> {format_row(y)}"
        for x, y in zip(shown, predictions.outputs, strict=False)
    ]
    hidden = len(predictions.inputs) - len(shown)
    if hidden:
        lines.append(f"... {hidden} more row(s)" + (f" in {written}" if written else ""))
    if written:
        lines.append(f"predictions: {written}")
    if any(not math.isfinite(v) for y in predictions.outputs for v in y):
        lines.append("warning: some predictions are not finite (the run may have diverged)")
    return "\n".join(lines)


def main(cfg) -> None:
    """predict.py: check the options, predict, print, and write the CSV when asked.

    The options are checked before the checkpoint is read: each mistake is one line naming it.
    """
    device = str(cfg.get("device") or "auto")
    choose_device(device)
    show = cfg.get("show", 20)
    if isinstance(show, bool) or not isinstance(show, int) or show < -1:
        raise ConfigError(
            f"show must be a whole number >= 0 (the rows printed) or -1 (all of them), "
            f"got {show!r}; e.g. show=20"
        )
    x = cfg.get("x")
    plain = OmegaConf.to_container(x) if OmegaConf.is_config(x) else x
    rows = plain if isinstance(plain, list) else [plain]
    cells = [cell for row in rows for cell in (row if isinstance(row, list) else [row])]
    if x is not None and not all(
        isinstance(c, (int, float)) and not isinstance(c, bool) for c in cells
    ):
        raise ConfigError(
            f"x must be numbers: a number per row, e.g. x=[4.0,5.0], or a list of features per "
            f"row, e.g. x=[[0.5,0.3]]; got {plain!r}"
        )
    predictions = predict(
        cfg.ckpt_path,
        x=x,
        input_csv=cfg.get("input_csv"),
        columns=as_list(cfg.get("columns")),
        device=device,
        runs_dir=cfg.get("runs_dir"),
    )
    written = write_csv(predictions, cfg.output_csv) if cfg.get("output_csv") else None
    print(render(predictions, show, written))


def as_list(value: Any) -> list[str] | None:
    """``columns``: a list of names, or one name alone (``columns=x2``)."""
    if value is None:
        return None
    if OmegaConf.is_config(value):
        value = OmegaConf.to_container(value)
    if not isinstance(value, (list, tuple)):
        return [str(value)]
    return [str(v) for v in value]
