"""The loggers besides TensorBoard, read back as a person would: logger=csv's file and its
hparams.yaml, logger=mlflow's run through MLflow's own client, logger=many's both, and the one
line a run without the mlflow extra ends with."""

from __future__ import annotations

import csv
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from backprop_lab.training.hparams import hparams

from conftest import ROOT

#: A short run with validation data: Loss/train and Loss/val each epoch, a few logged steps.
SHORT = ("model=quadratic", "data=synthetic", "data.n=40", "trainer.max_epochs=3")


def train_with(make_cfg, *overrides: str) -> tuple[dict, dict]:
    """Train in-process; the composed config (resolved) and the summary train() returned."""
    from backprop_lab.training.run import train

    cfg = make_cfg(*overrides)
    values, _ = hparams(cfg)
    return {"cfg": cfg, "hparams": values}, train(cfg)


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as file:
        return list(csv.DictReader(file))


def column(rows: list[dict[str, str]], name: str) -> dict[int, float]:
    """A column's logged values by step (the rows where it has one)."""
    return {int(r["step"]): float(r[name]) for r in rows if r.get(name)}


def run_history(run_dir: Path, name: str) -> dict[int, float]:
    """The run's own metrics.csv, one row per epoch: ``name`` by the step the epoch ended at."""
    return column(read_csv(run_dir / "metrics.csv"), name)


# --- the config group ---------------------------------------------------------------------------


def test_tensorboard_stays_the_default_and_many_is_tensorboard_and_csv(make_cfg):
    assert list(make_cfg().logger) == ["tensorboard"]
    assert list(make_cfg("logger=many").logger) == ["tensorboard", "csv"]
    many, alone = make_cfg("logger=many").logger, make_cfg("logger=csv").logger
    assert many.csv == alone.csv
    assert many.tensorboard == make_cfg().logger.tensorboard


# --- logger=csv ---------------------------------------------------------------------------------


def test_csv_holds_every_scalar_by_step_and_the_runs_hyperparameters(make_cfg, capsys):
    composed, summary = train_with(make_cfg, *SHORT, "logger=csv")
    run_dir = Path(summary["output_dir"])
    rows = read_csv(run_dir / "csv" / "metrics.csv")
    # one value of Loss/train per epoch, at the step it ended, as the run's own metrics.csv has it
    losses = column(rows, "Loss/train")
    assert len(losses) == summary["epochs"] > 0
    assert losses == pytest.approx(run_history(run_dir, "Loss/train"), rel=1e-12)
    assert column(rows, "Loss/val") == pytest.approx(run_history(run_dir, "Loss/val"), rel=1e-12)
    # every parameter and its gradient by the seed's name: the first step's, then the last value
    scope = "quadratic"
    for name, value in summary["first_step"]["gradients"].items():
        assert column(rows, f"grads/{scope}/{name}")[0] == pytest.approx(value, rel=1e-6)
    for name, value in summary["parameters"].items():
        logged = column(rows, f"params/{scope}/{name}")
        assert logged[0] == pytest.approx(summary["first_step"]["parameters"][name], rel=1e-6)
        assert logged[summary["steps"]] == pytest.approx(value, rel=1e-6)
    # the Loss/train_step column has a value at every logged step (each step in the seed setups)
    steps = column(rows, "Loss/train_step")
    every = composed["cfg"].trainer.log_every_n_steps
    assert sorted(steps) == list(range(0, summary["steps"], every))
    assert all(math.isfinite(v) for v in steps.values())
    # hparams.yaml: the run's hyperparameters, as the HParams tab gets them, with their types
    saved = yaml.safe_load((run_dir / "csv" / "hparams.yaml").read_text())
    assert composed["hparams"] and composed["hparams"].items() <= saved.items()
    assert isinstance(saved["optimizer.lr"], float) and saved["model"] == "quadratic"
    # the run's own files are all there; no TensorBoard file, and no TensorBoard line
    assert (run_dir / "summary.json").is_file() and summary["status"] == "finished"
    assert not list(run_dir.glob("events.out.tfevents.*"))
    printed = capsys.readouterr().out
    assert f"logs: {run_dir}" in printed and "final loss:" in printed
    assert "tensorboard" not in printed


# --- logger=many --------------------------------------------------------------------------------


def test_many_writes_the_same_scalars_to_tensorboard_and_csv(make_cfg, capsys):
    _, summary = train_with(make_cfg, *SHORT, "logger=many")
    run_dir = Path(summary["output_dir"])
    rows = read_csv(run_dir / "csv" / "metrics.csv")
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    events.Reload()
    for tag in ("Loss/train", "Loss/val", "params/quadratic/w0", "grads/quadratic/w0"):
        in_events = {e.step: e.value for e in events.Scalars(tag)}
        assert in_events and in_events == pytest.approx(column(rows, tag), rel=1e-6), tag
    assert f"tensorboard: uv run tensorboard --logdir {run_dir}" in capsys.readouterr().out


# --- logger=mlflow ------------------------------------------------------------------------------


@pytest.mark.slow
def test_mlflow_keeps_the_run_its_params_and_every_scalars_history(make_cfg):
    from mlflow.tracking import MlflowClient

    composed, summary = train_with(make_cfg, *SHORT, "logger=mlflow")
    cfg, run_dir = composed["cfg"], Path(summary["output_dir"])
    uri = cfg.logger.mlflow.tracking_uri
    assert uri == f"sqlite:///{Path(cfg.paths.log_dir) / 'mlflow.db'}"  # a store in the logs dir
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(str(cfg.run_name))
    assert experiment is not None
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED" and run.info.run_name == str(cfg.run_name)
    assert run.data.tags["output_dir"] == str(run_dir)
    # params: the run's hyperparameters, as text (MLflow keeps params as strings)
    assert {k: str(v) for k, v in composed["hparams"].items()}.items() <= run.data.params.items()
    # the loss's history: one value per epoch, as the run's own metrics.csv and summary.json say
    history = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "Loss/train")}
    assert len(history) == summary["epochs"]
    assert history == pytest.approx(run_history(run_dir, "Loss/train"), rel=1e-12)
    assert history[max(history)] == pytest.approx(summary["final_metrics"]["Loss/train"])
    # each parameter by the seed's name, from its initial value to its last
    for name, value in summary["parameters"].items():
        values = client.get_metric_history(run.info.run_id, f"params/quadratic/{name}")
        by_step = {m.step: m.value for m in values}
        assert by_step[0] == pytest.approx(summary["first_step"]["parameters"][name], rel=1e-6)
        assert by_step[summary["steps"]] == pytest.approx(value, rel=1e-6)
    # the experiment's artifacts (none unless log_model is set) would go to the logs dir too
    assert Path(experiment.artifact_location).is_relative_to(Path(cfg.paths.log_dir))


@pytest.mark.slow
def test_a_run_with_mlflow_but_without_its_package_ends_in_one_line(tmp_path):
    # mlflow as if not installed: `import mlflow` fails and Lightning finds no module to load
    hide = (
        "import runpy, sys; sys.modules['mlflow'] = None; sys.argv[0] = sys.argv[1]; "
        "del sys.argv[1]; runpy.run_path(sys.argv[0], run_name='__main__')"
    )
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            hide,
            str(ROOT / "train.py"),
            f"paths.log_dir={tmp_path / 'logs'}",
            "trainer.enable_progress_bar=false",
            "logger=mlflow",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
        env={**os.environ, "HYDRA_FULL_ERROR": "0"},
    )
    assert result.returncode == 1, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    assert "uv sync --extra mlflow" in errors[0]
    assert "uv run --extra mlflow train.py logger=mlflow" in errors[0]
    assert "Traceback" not in result.stderr and "pip install" not in result.stderr
