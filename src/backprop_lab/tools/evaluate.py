"""A checkpoint's test metrics on a CSV (eval.py at the top is the entry point).

The model is rebuilt from the checkpoint alone, as predict.py does (``predict.load_model``: only
this project's models, weights read with ``torch.load(weights_only=True)``), with the run's
objective rebuilt from the values of its loss config. The test is Lightning's ``trainer.test``
on the model's own ``test_step``, so the metrics are those a run logs after training:
``Loss/test`` (the objective, with any L2 term), ``test/mse``, ``test/mae``, ``test/r2``.

The rows: ``data.test_csv``, or by default the run's own test CSV, or the rows its
``data.test_fraction`` held out (drawn again from its data config and seed); the columns:
``data.x_columns`` and ``data.y_columns``, by default the run's.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from backprop_lab import console
from backprop_lab.data import CSVDataModule, SyntheticDataModule, TensorBatches, read_csv
from backprop_lab.data.csvfile import Source
from backprop_lab.errors import CheckpointError, ConfigError
from backprop_lab.models import SeedModel
from backprop_lab.schema import is_whole
from backprop_lab.tools.predict import as_list, choose_device, load_model
from backprop_lab.training.objective import Objective


@dataclass
class Evaluation:
    """What evaluate() found: the checkpoint, the rows tested and the metrics by name."""

    checkpoint: Path
    model: str
    steps: int | None
    epoch: int | None
    device: str
    test_csv: Path | None  # None: the run's own test split (data.test_fraction)
    rows: int
    metrics: dict[str, float]


def objective_of(run_config: dict[str, Any], path: Path) -> Objective:
    """The run's objective from its loss config's values (its ``_target_`` is not used: nothing
    read from a checkpoint chooses code)."""
    loss = run_config.get("loss") or {}
    try:
        return Objective(terms=loss.get("terms"), l2=loss.get("l2", 0.0))
    except (TypeError, ValueError, AttributeError) as error:
        raise CheckpointError(f"the loss of {path} cannot be rebuilt: {error}") from None


def evaluate(
    ckpt_path: str | Path | None,
    test_csv: str | Path | None = None,
    x_columns: Sequence[str] | None = None,
    y_columns: Sequence[str] | None = None,
    batch_size: int = 65536,
    device: str = "auto",
    runs_dir: str | Path | None = None,
) -> Evaluation:
    """The checkpoint's test metrics on ``test_csv`` (default: the run's data.test_csv)."""
    model, checkpoint, path = load_model(ckpt_path, device, runs_dir)
    run_config = checkpoint["run_config"]
    data = run_config.get("data") or {}
    model.objective = objective_of(run_config, path)
    dtype = next(model.parameters()).dtype
    if test_csv is None and not data.get("test_csv") and data.get("test_fraction"):
        x, y = _run_test_split(checkpoint, path, dtype)  # the rows train.py held out and tested
    else:
        test_csv = test_csv or data.get("test_csv")
        if not test_csv:
            raise ConfigError(
                f"no test data: {path} was trained without data.test_csv or data.test_fraction; "
                "give one, e.g. data.test_csv=test.csv (a CSV with the run's input and target "
                "columns)"
            )
        x, y = _read_test_csv(test_csv, model, data, x_columns, y_columns, dtype)
    metrics = _test(model, TensorBatches(x.to(model.device), y.to(model.device), batch_size))
    return Evaluation(
        checkpoint=path,
        model=type(model).__name__,
        steps=checkpoint.get("global_step"),
        epoch=checkpoint.get("epoch"),
        device=str(model.device),
        test_csv=Path(test_csv) if test_csv else None,
        rows=len(x),
        metrics=metrics,
    )


def _read_test_csv(test_csv, model: SeedModel, data: dict[str, Any], x_columns, y_columns, dtype):
    """(x, y) of a test CSV: its columns ``x_columns`` and ``y_columns``, by default the run's,
    as many as the model takes."""
    x_names = list(x_columns or data.get("x_columns") or ["x"])
    y_names = list(y_columns or data.get("y_columns") or ["y"])
    for key, names, wanted in (
        ("x_columns", x_names, model.in_features),
        ("y_columns", y_names, model.out_features),
    ):
        if len(names) != wanted:
            raise ConfigError(
                f"data.{key} names {len(names)} column(s) {names}, but {type(model).__name__} "
                f"has {wanted}"
            )
    source = Source(
        what="test file",
        setting="data.test_csv",
        columns_fix="Name its input and target columns with data.x_columns=[...] and "
        "data.y_columns=[...].",
        error=ConfigError,
    )
    return read_csv(test_csv, x_names, y_names, dtype, source)


def _run_test_split(checkpoint: dict[str, Any], path: Path, dtype: torch.dtype):
    """The test rows the run held out by data.test_fraction, drawn again from its data config:
    one of this project's data modules (:data:`DATA_MODULES`), never another target, with the
    seed its data was drawn with."""
    data = dict(checkpoint["run_config"]["data"])
    cls = DATA_MODULES.get(data.pop("_target_", None))
    if cls is None:
        raise CheckpointError(
            f"the data of {path} is not one of this project's data modules; give the test rows "
            "as data.test_csv=<file.csv>"
        )
    saved = (checkpoint.get("run_state") or {}).get("data") or {}
    if data.get("seed") is None and saved.get("seed") is not None:
        data["seed"] = saved["seed"]  # data.seed=null: the seed the run drew
    try:
        datamodule = cls(**data, dtype=dtype)
        datamodule.setup("test")
    except TypeError as error:
        raise CheckpointError(f"the data config of {path} cannot be rebuilt: {error}") from None
    assert datamodule.test_xy is not None  # a test_fraction > 0 holds rows out
    return datamodule.test_xy


#: The data modules a checkpoint's data config may name, by ``_target_``.
DATA_MODULES = {
    f"backprop_lab.data.{cls.__name__}": cls for cls in (CSVDataModule, SyntheticDataModule)
}


def _test(model: SeedModel, batches: TensorBatches) -> dict[str, float]:
    """Lightning's test loop over ``batches`` on the model's device, writing nothing."""
    import lightning.pytorch as pl

    device = model.device
    accelerator = {"cuda": "gpu"}.get(device.type, device.type)
    devices = [device.index or 0] if device.type == "cuda" else 1
    wide = next(model.parameters()).dtype == torch.float64
    console.lightning_through_root()  # Lightning's start-up notes (INFO) stay off the console
    with warnings.catch_warnings():
        # Lightning 2.6 calls a torch.utils._pytree API that torch 2.15 deprecates.
        warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)`")
        # Its hint to start with srun, on a machine with SLURM installed: one process evaluates.
        warnings.filterwarnings("ignore", message="The `srun` command is available")
        trainer = pl.Trainer(
            accelerator=accelerator,
            devices=devices,
            precision="64-true" if wide else "32-true",
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        )
        trainer.test(model, dataloaders=batches, verbose=False)
    assert model.test_results is not None  # set by the test epoch's end
    return model.test_results


def render(evaluation: Evaluation) -> str:
    """The console report: where the model and the rows came from, then a line per metric."""
    steps = f" after {evaluation.steps} steps" if evaluation.steps is not None else ""
    rows = evaluation.test_csv or "the run's test split (data.test_fraction)"
    lines = [
        f"checkpoint: {evaluation.checkpoint} ({evaluation.model}{steps})",
        f"test data: {rows} ({evaluation.rows} rows)",
        f"device: {evaluation.device}",
    ]
    lines += [f"{name}: {value:.6g}" for name, value in evaluation.metrics.items()]
    return "\n".join(lines)


def main(cfg) -> None:
    """eval.py: check the options, evaluate, print. Each mistake is one line naming it."""
    device = str(cfg.get("device") or "auto")
    choose_device(device)
    data = cfg.get("data") or {}
    batch_size = data.get("batch_size", 65536)
    if not is_whole(batch_size) or batch_size < 1:
        raise ConfigError(
            f"data.batch_size must be a whole number >= 1, got {batch_size!r}; "
            "e.g. data.batch_size=65536"
        )
    test_csv = data.get("test_csv")
    evaluation = evaluate(
        cfg.ckpt_path,
        test_csv=str(test_csv) if test_csv is not None else None,
        x_columns=as_list(data.get("x_columns")),
        y_columns=as_list(data.get("y_columns")),
        batch_size=batch_size,
        device=device,
        runs_dir=cfg.get("runs_dir"),
    )
    print(render(evaluation))
