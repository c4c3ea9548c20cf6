"""Sweeps: multirun with a summary, failures isolated, parallel launchers, Optuna, DDP."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
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
        "0_model=linear,optimizer.lr=0.001,trainer.max_epochs=3",
        "1_model=linear,optimizer.lr=0.01,trainer.max_epochs=3",
        "2_model=quadratic,optimizer.lr=0.001,trainer.max_epochs=3",
        "3_model=quadratic,optimizer.lr=0.01,trainer.max_epochs=3",
    ]
    for job in jobs:  # one TensorBoard run per job: its events, then its figures' (render.py)
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
        "final/train/mse",
    } <= rows[0].keys()
    assert rows[0]["objective"] == str(
        json.loads((sweep / rows[0]["job"] / "summary.json").read_text())["best"]["value"]
    )
    assert "sweep of 4 job(s)" in result.stdout and str(sweep / "summary.csv") in result.stdout
    # The HParams tab compares jobs by their overrides and final/best metrics.
    hp = hparams_of(sweep / jobs[3])
    assert hp.session_start_info.hparams["optimizer.lr"].string_value == "0.01"
    assert hp.session_start_info.hparams["model"].string_value == "quadratic"
    experiment = EventAccumulator(str(sweep / jobs[3]))
    experiment.Reload()
    metrics = plugin_data_pb2.HParamsPluginData.FromString(
        experiment.PluginTagToContent("hparams")["_hparams_/experiment"]
    ).experiment.metric_infos
    assert {"hp/final_loss", "hp/best/train/loss_epoch"} <= {m.name.tag for m in metrics}


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
    assert cfg.hydra.launcher.partition == "gpu" and cfg.hydra.launcher.gpus_per_node == 1


SEARCH = ("model=quadratic", "search.study_name=s", "search.space.optimizer.momentum.high=0.5")


def load(tmp_path: Path, name: str = "s") -> optuna.Study:
    db = tmp_path / "logs" / "searches" / name / "study.db"
    return optuna.load_study(study_name=name, storage=f"sqlite:///{db}")


def states(study: optuna.Study) -> list[str]:
    return [t.state.name for t in study.trials]


def wait_for_a_running_trial(worker: subprocess.Popen, tmp_path: Path) -> bool:
    """Poll the study until the worker's first trial runs (True), or the worker ends (False)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and worker.poll() is None:
        time.sleep(1)
        try:
            if "RUNNING" in states(load(tmp_path)):
                return True
        except Exception:  # the study or its tables do not exist yet
            continue
    return False


def test_search_runs_trials_and_resumes(tmp_path):
    first = cli("search.py", *SEARCH, "search.n_trials=2", "trainer.max_epochs=3", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "best trial" in first.stdout
    assert states(load(tmp_path)) == ["COMPLETE", "COMPLETE"]
    again = cli("search.py", *SEARCH, "search.n_trials=4", "trainer.max_epochs=3", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    study = load(tmp_path)
    assert states(study) == ["COMPLETE"] * 4
    # The resumed trials drew new values, not the first process's again.
    assert study.trials[2].params != study.trials[0].params
    for trial in study.trials:
        summary = json.loads((Path(trial.user_attrs["output_dir"]) / "summary.json").read_text())
        assert summary["best"]["value"] == trial.value  # the best epoch's value is the objective
    with (tmp_path / "logs" / "searches" / "s" / "trials.csv").open() as f:
        assert len(list(csv.DictReader(f))) == 4


def test_pruning_stops_unpromising_trials(tmp_path):
    result = cli(
        "search.py",
        *SEARCH,
        "search.n_trials=6",
        "trainer.max_epochs=6",
        "search.space.optimizer.lr.high=2.0",
        "search.pruner.n_startup_trials=1",
        "search.pruner.n_warmup_steps=1",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    study = load(tmp_path)
    pruned = [t for t in study.trials if t.state.name == "PRUNED"]
    assert pruned, states(study)
    summary = json.loads((Path(pruned[0].user_attrs["output_dir"]) / "summary.json").read_text())
    assert summary["status"] == "pruned" and summary["epochs"] < 6


def test_a_killed_worker_s_trial_is_retried_on_resume(tmp_path):
    args = (
        *SEARCH,
        "search.n_trials=2",
        "search.heartbeat_interval=1",
        "search.grace_period=2",
        "data=synthetic",
        "data.n=20000",
        "data.batch_size=4",
        "trainer.max_epochs=50",
    )
    worker = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "search.py"),
            f"paths.log_dir={tmp_path / 'logs'}",
            QUIET,
            *args,
        ],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        started = wait_for_a_running_trial(worker, tmp_path)
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait(30)
    assert started, "the search never started a trial"
    assert states(load(tmp_path)) == ["RUNNING"]  # left behind by the dead worker
    time.sleep(3)  # past the grace period
    resumed = cli("search.py", *args[:-1], "trainer.max_epochs=2", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    study = load(tmp_path)
    assert states(study)[0] == "FAIL"
    assert states(study).count("COMPLETE") == 2
    assert study.trials[1].params == study.trials[0].params  # the retry of the killed trial


def test_two_workers_share_one_study(tmp_path):
    args = [
        sys.executable,
        str(ROOT / "search.py"),
        f"paths.log_dir={tmp_path / 'logs'}",
        QUIET,
        *SEARCH,
        "search.n_trials=4",
        "trainer.max_epochs=3",
    ]
    workers = [
        subprocess.Popen(
            [*args, f"seed={i}"],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in (1, 2)
    ]
    for worker in workers:
        _, err = worker.communicate(timeout=300)
        assert worker.returncode == 0, err
    study = load(tmp_path)
    assert states(study).count("COMPLETE") >= 4
    dirs = [t.user_attrs["output_dir"] for t in study.trials]
    assert len(set(dirs)) == len(dirs)


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


def test_ddp_inside_a_multirun_is_refused(tmp_path):
    result = cli(
        "train.py", "-m", "trainer=ddp", "model=linear", "trainer.max_epochs=1", cwd=tmp_path
    )
    assert result.returncode == 1
    (row,) = read_summary(sweep_dir(tmp_path))
    assert row["status"] == "failed" and "Lightning issue 11300" in row["error"]
    assert "cannot run inside a multirun" in result.stderr


def test_ctrl_c_stops_the_whole_search(tmp_path):
    worker = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "search.py"),
            f"paths.log_dir={tmp_path / 'logs'}",
            QUIET,
            *SEARCH,
            "search.n_trials=3",
            "data=synthetic",
            "data.n=20000",
            "data.batch_size=4",
            "trainer.max_epochs=50",
        ],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        started = wait_for_a_running_trial(worker, tmp_path)
        worker.send_signal(signal.SIGINT)
        _, err = worker.communicate(timeout=120)
    finally:
        worker.kill()
    assert started
    assert worker.returncode == 130, err
    assert "stopped by SIGINT" in err and "the search resumes" in err and "Traceback" not in err
    assert states(load(tmp_path)) == ["FAIL"]  # one trial, stopped; no further trial started
