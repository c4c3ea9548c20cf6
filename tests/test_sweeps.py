"""Sweeps: multirun with a summary, failures isolated, parallel launchers, DDP (the Optuna search:
test_search.py)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from conftest import ROOT

QUIET = "trainer.enable_progress_bar=false"


def cli(script: str, *args: str, cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    flags = [a for a in args if a.startswith("-")]  # argparse wants -m before the overrides
    overrides = [a for a in args if not a.startswith("-")]
    return subprocess.run(
        [
            sys.executable,
            str(ROOT / script),
            *flags,
            f"paths.log_dir={cwd / 'logs'}",
            QUIET,
            *overrides,
        ],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=timeout,
        env={**os.environ, "HYDRA_FULL_ERROR": "0"},
    )


def sweep_dir(tmp_path: Path) -> Path:
    (only,) = (tmp_path / "logs" / "multiruns").iterdir()
    return only


def read_summary(path: Path) -> list[dict]:
    with (path / "summary.csv").open() as f:
        return list(csv.DictReader(f))


def hparams_of(run_dir: Path) -> plugin_data_pb2.HParamsPluginData:
    events = EventAccumulator(str(run_dir))
    events.Reload()
    content = events.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    return plugin_data_pb2.HParamsPluginData.FromString(content)


@pytest.mark.slow
def test_multirun_every_combination_with_a_sorted_summary(tmp_path):
    result = cli(
        "train.py",
        "-m",
        "model=linear,quadratic",
        "optimizer.lr=0.001,0.01",
        "trainer.max_epochs=3",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    sweep = sweep_dir(tmp_path)
    jobs = sorted(p.name for p in sweep.iterdir() if p.is_dir())
    assert jobs == [
        # the swept keys only (max_epochs=3 is every job's), each by its last part
        "0_model=linear,lr=0.001",
        "1_model=linear,lr=0.01",
        "2_model=quadratic,lr=0.001",
        "3_model=quadratic,lr=0.01",
    ]
    # One TensorBoard run per job: its events, then its figures' (render.py's worker draws them
    # while the next job trains).
    for job in jobs:
        events, figures = sorted(p.name for p in (sweep / job).glob("events.out.tfevents.*"))
        assert figures == events + ".figures"
    rows = read_summary(sweep)
    assert {r["status"] for r in rows} == {"finished"}
    objectives = [float(r["objective"]) for r in rows]
    assert objectives == sorted(objectives)
    assert {
        "job",
        "overrides",
        "final_loss",
        "objective",
        "wall_time_s",
        "final/train/mae",
    } <= rows[0].keys()
    assert rows[0]["objective"] == str(
        json.loads((sweep / rows[0]["job"] / "summary.json").read_text())["best"]["value"]
    )
    assert "sweep of 4 job(s)" in result.stdout and str(sweep / "summary.csv") in result.stdout
    # One TensorBoard command for the whole sweep; the jobs' reports leave theirs out.
    commands = [line for line in result.stdout.splitlines() if "tensorboard --logdir" in line]
    assert commands == [f"tensorboard: uv run tensorboard --logdir {sweep}"]
    # The HParams tab compares jobs by their overrides, typed as the run used them, and losses.
    hp = hparams_of(sweep / jobs[3])
    assert hp.session_start_info.hparams["optimizer.lr"].number_value == 0.01
    assert hp.session_start_info.hparams["trainer.max_epochs"].number_value == 3
    assert hp.session_start_info.hparams["model"].string_value == "quadratic"
    experiment = EventAccumulator(str(sweep / jobs[3]))
    experiment.Reload()
    defined = plugin_data_pb2.HParamsPluginData.FromString(
        experiment.PluginTagToContent("hparams")["_hparams_/experiment"]
    ).experiment
    assert {m.name.tag for m in defined.metric_infos} == {"Loss/train"}  # no validation data
    # the keys the sweep varies are the ones TensorBoard lists first
    differs = {h.name for h in defined.hparam_infos if h.differs}
    assert differs == {"model", "optimizer.lr"}


@pytest.mark.slow
def test_a_failing_job_is_recorded_and_the_others_run(tmp_path):
    result = cli(
        "train.py",
        "-m",
        "model=linear",
        "optimizer.lr=-1,0.01",
        "trainer.max_epochs=2",
        cwd=tmp_path,
    )
    assert result.returncode == 1
    rows = {r["job"].split("_")[0]: r for r in read_summary(sweep_dir(tmp_path))}
    assert rows["0"]["status"] == "failed"
    assert "optimizer.lr must be a number > 0" in rows["0"]["error"]
    assert rows["1"]["status"] == "finished"
    assert "1 of 2 job(s) failed" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_joblib_runs_jobs_in_parallel_processes(tmp_path):
    result = cli(
        "train.py",
        "-m",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        "model=linear,quadratic",
        "trainer.max_epochs=2",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    rows = read_summary(sweep_dir(tmp_path))
    assert len(rows) == 2 and {r["status"] for r in rows} == {"finished"}


def test_slurm_launcher_config_composes(make_cfg):
    cfg = make_cfg("hydra/launcher=slurm", "hydra.launcher.partition=gpu")
    assert cfg.hydra.launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    assert cfg.hydra.launcher.partition == "gpu" and cfg.hydra.launcher.gpus_per_node is None


@pytest.mark.slow
def test_ddp_over_two_processes_matches_one_process(tmp_path):
    common = (
        "model=quadratic",
        "data=synthetic",
        "data.n=64",
        "data.batch_size=16",
        "data.val_fraction=0.25",
        "trainer.max_epochs=3",
        "optimizer.lr=0.1",
    )
    summaries = {}
    for trainer in ("default", "ddp"):
        result = cli("train.py", *common, f"trainer={trainer}", cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert result.stdout.count("parameters:") == 1  # only rank 0 reports
        run = Path(result.stdout.split("logs: ")[-1].strip())
        summaries[trainer] = json.loads((run / "summary.json").read_text())
    one, two = summaries["default"], summaries["ddp"]
    assert two["steps"] == one["steps"] == 9
    for name, value in one["parameters"].items():
        assert two["parameters"][name] == pytest.approx(value, rel=1e-6, abs=1e-7)
    # Whole-run values, not rank 0's shard: the last batch's loss and every epoch metric.
    assert two["final_loss"] == pytest.approx(one["final_loss"], rel=1e-5)
    for name, value in one["final_metrics"].items():
        assert two["final_metrics"][name] == pytest.approx(value, rel=1e-5, abs=1e-7), name


@pytest.mark.slow
def test_a_ddp_error_is_printed_once(tmp_path):
    # 63 rows do not split evenly over 2 processes: every rank meets the same error.
    result = cli(
        "train.py",
        "model=quadratic",
        "data=synthetic",
        "data.n=63",
        "data.val_fraction=0",
        "data.batch_size=16",
        "trainer=ddp",
        "trainer.max_epochs=1",
        cwd=tmp_path,
    )
    assert result.returncode == 1, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "split evenly" in errors[0], result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_ddp_inside_a_multirun_is_refused(tmp_path):
    result = cli(
        "train.py", "-m", "trainer=ddp", "model=linear", "trainer.max_epochs=1", cwd=tmp_path
    )
    assert result.returncode == 1
    (row,) = read_summary(sweep_dir(tmp_path))
    assert row["status"] == "failed" and "Lightning issue 11300" in row["error"]
    assert "cannot run inside a multirun" in result.stderr
