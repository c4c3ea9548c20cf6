"""The Optuna search: reproducible trials, workers sharing one study, n_trials across workers, and
one-line errors for bad search options. In-process where it can be; subprocesses for workers."""

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
from optuna.trial import TrialState

import backprop_lab.tools.search as search_module
from backprop_lab.errors import ConfigError
from backprop_lab.tools.search import check, search

from conftest import ROOT

QUIET = "trainer.enable_progress_bar=false"
TINY = ("model=linear", "trainer.max_epochs=2")
SEARCH = ("model=quadratic", "search.study_name=s", "search.space.optimizer.momentum.high=0.5")


def cli(*args: str, cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "search.py"), f"paths.log_dir={cwd / 'logs'}", QUIET, *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=timeout,
        env={**os.environ, "HYDRA_FULL_ERROR": "0"},
    )


def run_search(make_cfg, *overrides: str, name: str = "s", base=TINY) -> optuna.Study:
    """search.py in-process (tiny trials unless ``base`` says otherwise), the study in
    <tmp>/logs/searches/<name>/study.db."""
    cfg = make_cfg(*base, f"search.study_name={name}", *overrides, config_name="search")
    return search(cfg, Path(cfg.hydra.run.dir))


def load(tmp_path: Path, name: str = "s") -> optuna.Study:
    db = tmp_path / "logs" / "searches" / name / "study.db"
    return optuna.load_study(study_name=name, storage=f"sqlite:///{db}")


def states(study: optuna.Study) -> list[str]:
    return [t.state.name for t in study.trials]


def params(study: optuna.Study) -> list[dict]:
    return [t.params for t in study.trials]


def done(study: optuna.Study) -> int:
    return len(study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED)))


# ------------------------------------------------------------------ reproducible, never repeated


@pytest.mark.slow
def test_the_same_seed_run_alone_reproduces_the_same_trials(make_cfg):
    first = run_search(make_cfg, "search.n_trials=3", "seed=0", name="a")
    again = run_search(make_cfg, "search.n_trials=3", "seed=0", name="b")
    other = run_search(make_cfg, "search.n_trials=3", "seed=1", name="c")
    assert states(first) == states(again) == ["COMPLETE"] * 3
    assert params(again) == params(first)
    assert [t.value for t in again.trials] == [t.value for t in first.trials]
    assert all(p not in params(first) for p in params(other))  # another seed, other trials


def test_a_resumed_search_draws_what_an_uninterrupted_one_would(make_cfg):
    run_search(make_cfg, "search.n_trials=2", name="resumed")
    resumed = run_search(make_cfg, "search.n_trials=3", name="resumed")
    whole = run_search(make_cfg, "search.n_trials=3", name="whole")
    assert params(resumed) == params(whole)
    assert params(resumed)[2] not in params(resumed)[:2]  # not the first trials drawn again


def test_workers_with_neighbouring_seeds_never_draw_the_same_trial(make_cfg):
    # Seeded by seed + trials run, a seed=1 worker's second trial was a seed=2 worker's first.
    run_search(make_cfg, "search.n_trials=1", "seed=2")
    study = run_search(make_cfg, "search.n_trials=3", "seed=1")
    assert states(study) == ["COMPLETE"] * 3
    lrs = [p["optimizer.lr"] for p in params(study)]
    assert len(set(lrs)) == 3, params(study)


# ------------------------------------------------------------------ n_trials across workers


def test_another_worker_s_running_trial_counts_toward_n_trials(make_cfg, tmp_path):
    run_search(make_cfg, "search.n_trials=1")
    load(tmp_path).ask()  # another worker's trial, running: with trial 0 done, it makes two
    study = run_search(make_cfg, "search.n_trials=2")
    assert states(study) == ["COMPLETE", "RUNNING"]  # nothing more started


def test_a_trial_started_alongside_another_worker_s_last_one_is_not_trained(
    make_cfg, tmp_path, monkeypatch
):
    run_search(make_cfg, "search.n_trials=1")
    load(tmp_path).ask()
    # The other worker's trial started just after this worker looked: it asks for a trial too.
    real, looks = search_module.enough, []

    def looked_too_early(study: optuna.Study, n_trials: int) -> bool:
        looks.append(n_trials)
        return len(looks) > 1 and real(study, n_trials)

    monkeypatch.setattr(search_module, "enough", looked_too_early)
    study = run_search(make_cfg, "search.n_trials=2")
    assert states(study) == ["COMPLETE", "RUNNING", "FAIL"]
    surplus = study.trials[2]
    assert surplus.params == {} and "output_dir" not in surplus.user_attrs
    assert not (tmp_path / "logs" / "searches" / "s" / "trial_2").exists()


@pytest.mark.slow
def test_two_workers_share_one_study_without_repeating_a_trial(tmp_path):
    args = [
        sys.executable,
        str(ROOT / "search.py"),
        f"paths.log_dir={tmp_path / 'logs'}",
        QUIET,
        *TINY,
        "search.study_name=s",
        "search.n_trials=4",
    ]
    workers = [
        subprocess.Popen(
            [*args, f"seed={i}"], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        for i in (1, 2)
    ]
    for worker in workers:
        _, err = worker.communicate(timeout=300)
        assert worker.returncode == 0, err.decode()
    study = load(tmp_path)
    assert done(study) == 4, states(study)
    trained = [t for t in study.trials if t.params]
    assert [t.state.name for t in trained] == ["COMPLETE"] * 4  # any FAIL is a surplus, untrained
    drawn = [tuple(sorted(t.params.items())) for t in trained]
    assert len(set(drawn)) == len(drawn), drawn
    dirs = [t.user_attrs["output_dir"] for t in trained]
    assert len(set(dirs)) == len(dirs)


# ------------------------------------------------------------------ runs, resumes, prunes


def test_search_runs_trials_and_resumes(make_cfg, tmp_path, capsys):
    first = run_search(make_cfg, "search.n_trials=2")
    assert "best trial" in capsys.readouterr().out
    assert states(first) == ["COMPLETE", "COMPLETE"]
    study = run_search(make_cfg, "search.n_trials=4")
    assert states(study) == ["COMPLETE"] * 4
    for trial in study.trials:
        summary = json.loads((Path(trial.user_attrs["output_dir"]) / "summary.json").read_text())
        assert summary["best"]["value"] == trial.value  # the best epoch's value is the objective
    with (tmp_path / "logs" / "searches" / "s" / "trials.csv").open() as f:
        assert len(list(csv.DictReader(f))) == 4


def test_pruning_stops_unpromising_trials(make_cfg):
    study = run_search(
        make_cfg,
        "search.n_trials=6",
        "trainer.max_epochs=6",
        "search.space.optimizer.momentum.high=0.5",
        "search.space.optimizer.lr.high=2.0",
        "search.pruner.n_startup_trials=1",
        "search.pruner.n_warmup_steps=1",
        base=("model=quadratic",),
    )
    pruned = [t for t in study.trials if t.state.name == "PRUNED"]
    assert pruned, states(study)
    assert done(study) == 6
    summary = json.loads((Path(pruned[0].user_attrs["output_dir"]) / "summary.json").read_text())
    assert summary["status"] == "pruned" and summary["epochs"] < 6


# ------------------------------------------------------------------ bad search options

BAD = {
    "search.n_trials=0": "search.n_trials must be a whole number >= 1, got 0; e.g. search.n_tri",
    "search.n_trials=2.5": "search.n_trials must be a whole number >= 1, got 2.5",
    "search.heartbeat_interval=0": "search.heartbeat_interval must be a whole number of seconds",
    "search.grace_period=-1": "search.grace_period must be a whole number of seconds > 0",
    "search.grace_period=10": "search.grace_period (10) must be longer than search.heartbeat",
    "search.max_retry=-1": "search.max_retry must be a whole number >= 0, or null",
    "search.space.optimizer.lr.low=1.0": "search.space.optimizer.lr has low (1.0) above high",
    "search.space.optimizer.lr.low=0.0": "search.space.optimizer.lr has log: true, which needs low",
    "+search.space.data.batch_size={choices: 4}": "search.space.data.batch_size.choices must be",
    "+search.space.data.batch_size={choices: []}": "search.space.data.batch_size.choices must be",
    "search.space.optimizer.momentum.high=1.5": "can set optimizer.momentum=1.5, but optimizer.mom",
    "+search.space.optimizer.lrr={low: 0.1, high: 1.0}": "would set optimizer.lrr, which is not",
    "+search.space.optimizer.lr.lgo=true": "search.space.optimizer.lr has unknown keys ['lgo']",
    "+search.space.optimizer.lr.step=0.01": "has both step and log: true",
    "search.space=null": "search.space is empty",
    "search.sampler._target_=os.system": "search.sampler._target_ must be one of optuna.samplers",
    "search.sampler._target_=optuna.samplers.NoSuch": "must be one of optuna.samplers.{",
    "search.pruner._target_=builtins.eval": "search.pruner._target_ must be one of optuna.pruners",
    "+search.sampler.n_startup=3": "search.sampler: TPESampler(",
    "+search.pruner.n_warmup=3": "search.pruner: MedianPruner(",
    "search.storage=nonsense": "search.storage='nonsense' is not a database URL",
    "search.storage=nosuchdb://u:secret@host/db": "SQLAlchemy knows no database 'nosuchdb'",
    "search.storage=sqlite:////no/such/folder/study.db": "there is no folder /no/such/folder",
}


@pytest.mark.parametrize("override", BAD)
def test_a_bad_search_option_is_named_with_an_example(make_cfg, override):
    cfg = make_cfg(*TINY, override, config_name="search")
    with pytest.raises(ConfigError) as error:
        check(cfg)
    message = str(error.value)
    assert BAD[override] in message
    assert "e.g." in message and "secret" not in message
    assert message.count("\n") == 0


def test_the_default_search_config_passes_its_checks(make_cfg):
    check(make_cfg(config_name="search"))  # so each BAD case above fails for its own reason


@pytest.mark.slow
def test_a_bad_search_option_ends_the_command_in_one_line(tmp_path):
    result = cli(*TINY, "search.study_name=s", "search.n_trials=0", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.startswith("error: search.n_trials must be a whole number >= 1, got 0")
    assert "Traceback" not in result.stderr and result.stderr.count("\n") <= 2
    assert not (tmp_path / "logs" / "searches" / "s" / "study.db").exists()  # nothing opened


@pytest.mark.slow
def test_a_trial_that_fails_for_a_reason_a_user_can_act_on_is_logged_in_one_line(tmp_path):
    # Optuna logs a failed trial with its traceback; for a divergence its message says it all.
    result = cli(
        *TINY,
        "search.study_name=s",
        "search.n_trials=1",
        "search.space.optimizer.lr.low=1000",
        "search.space.optimizer.lr.high=10000",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "study 's': 1 fail" in result.stdout
    failed = [ln for ln in result.stderr.splitlines() if "Trial 0 failed with parameters" in ln]
    assert len(failed) == 1 and "Diverged('training diverged at step" in failed[0], result.stderr
    assert "Traceback" not in result.stderr


# ------------------------------------------------------------------ dead workers, Ctrl-C


def wait_for_a_running_trial(worker: subprocess.Popen, tmp_path: Path) -> bool:
    """Poll the study until the worker's first trial runs with all its parameters drawn (True),
    or the worker ends (False). A trial is RUNNING before its parameters are stored, one by one
    (conf/search.yaml's space: optimizer.lr and optimizer.momentum)."""
    drawn = {"optimizer.lr", "optimizer.momentum"}
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and worker.poll() is None:
        time.sleep(1)
        try:
            trials = load(tmp_path).trials
            if any(t.state.name == "RUNNING" and set(t.params) == drawn for t in trials):
                return True
        except Exception:  # the study or its tables do not exist yet
            continue
    return False


@pytest.mark.slow
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
    resumed = cli(*args[:-1], "trainer.max_epochs=2", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    study = load(tmp_path)
    assert states(study) == ["FAIL", "COMPLETE", "COMPLETE"]
    assert study.trials[1].params == study.trials[0].params  # the retry of the killed trial


@pytest.mark.slow
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
