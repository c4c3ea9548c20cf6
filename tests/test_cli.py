"""train.py as a user runs it: a subprocess, its console report, its output dir."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT


def train_cli(*args: str, log_dir: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HYDRA_FULL_ERROR": "0"}
    return subprocess.run(
        [sys.executable, str(ROOT / "train.py"), f"paths.log_dir={log_dir}", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=log_dir.parent,
        timeout=300,
    )


@pytest.mark.slow
def test_train_quadratic_prints_the_seed_report(tmp_path):
    result = train_cli(
        "model=quadratic", "trainer.enable_progress_bar=false", log_dir=tmp_path / "logs"
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "predict (before training): x=4.0 -> 21.0" in out
    # Rounded for reading; summary.json keeps the seed's 8.544171333312988.
    assert "predict (after training): x=4.0 -> 8.54417" in out
    assert "final loss: 0.00631808303296566" in out
    assert re.search(r"^device: (cpu|cuda)", out, re.M)
    logs = Path(re.search(r"^logs: (.+)$", out, re.M).group(1))
    # The run's own dir under logs/runs/<model>/<time>, holding everything it wrote.
    assert logs.parent == tmp_path / "logs" / "runs" / "quadratic"
    assert (logs / "summary.json").is_file()
    assert (logs / "checkpoints" / "last.ckpt").is_file()
    assert list(logs.glob("events.out.tfevents.*"))
    assert json.loads((logs / "summary.json").read_text())["steps"] == 300
    # Nothing lands in the directory the command ran from.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["logs"]
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_a_logged_warning_shows_once_on_the_console(tmp_path):
    # Seed 000's target y2 = -0.07 lies outside the sigmoid's (0, 1): the run warns, once. With
    # Lightning's console handler beside Hydra's, every logged line would show twice.
    result = train_cli(
        "model=sigmoid_net",
        "trainer.max_epochs=1",
        "trainer.enable_progress_bar=false",
        log_dir=tmp_path / "logs",
    )
    assert result.returncode == 0, result.stderr
    console = (result.stdout + result.stderr).splitlines()
    warnings = [line for line in console if "the loss cannot reach 0" in line]
    assert len(warnings) == 1, console
    # In the short style of an error, on stderr; train.log keeps Hydra's timestamped line.
    (warning,) = warnings
    assert warning.startswith("warning: 1 target value(s) lie outside (0, 1)")
    assert warning in result.stderr.splitlines()
    logs = Path(re.search(r"^logs: (.+)$", result.stdout, re.M).group(1))
    log = (logs / "train.log").read_text()
    assert "[backprop_lab.training.build][WARNING] - 1 target value(s) lie outside" in log


@pytest.mark.slow
def test_two_runs_get_separate_output_dirs(tmp_path):
    args = ("model=linear", "trainer.max_epochs=1", "trainer.enable_progress_bar=false")
    first = train_cli(*args, log_dir=tmp_path / "logs")
    second = train_cli(*args, log_dir=tmp_path / "logs")
    assert first.returncode == second.returncode == 0
    runs = list((tmp_path / "logs" / "runs" / "linear").iterdir())
    assert len(runs) == 2


def test_help_is_the_projects_own_page(tmp_path):
    result = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), "--help"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    page = result.stdout
    assert page.startswith("train.py: train one of backprop-lab's seed models")
    assert "model: cubic, linear, quadratic, sigmoid_net" in page  # the groups, from conf/
    assert "experiment: seed000, seed002, seed003, seed004" in page
    assert page.count("uv run train.py ") >= 3  # three example commands
    assert "--hydra-help" in page and "-sc install=bash" in page
    assert "Powered by Hydra" not in page  # not Hydra's generic page
    assert not list(tmp_path.iterdir())  # asking for help writes nothing


@pytest.mark.parametrize("script", ["explain.py", "search.py", "predict.py", "eval.py"])
def test_every_script_has_its_own_help(tmp_path, script):
    result = subprocess.run(
        [sys.executable, str(ROOT / script), "--help"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"{script}: ")
    assert f"uv run {script} " in result.stdout and "Powered by Hydra" not in result.stdout


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (
            ["scheduler=foo"],
            "error: scheduler=foo is not an option of scheduler; choose one of "
            "cosine, none, plateau, step",
        ),
        (
            ["-m", "model=linear,foo"],
            "error: model=foo is not an option of model; choose one of "
            "cubic, linear, quadratic, sigmoid_net",
        ),
        (["optimizer=choice(sgd,adamw)"], "error: optimizer=adamw is not an option of optimizer"),
        (["scheduler=null"], "error: scheduler=null is not an option of scheduler"),
        (["-m", "debug=fast_dev_run,limit"], "error: debug=fast_dev_run,limit: one debug mode"),
        (
            ["experiment=quadratic/nope"],
            "error: experiment=quadratic/nope is not an option of "
            "experiment; choose one of cubic/y_equals_2x,",
        ),
    ],
)
def test_an_unknown_group_option_is_one_line(capsys, args, line):
    from backprop_lab import cli

    with pytest.raises(SystemExit) as stopped:
        cli.check_choices(args)
    assert stopped.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith(line) and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "args",
    [
        ["model=linear", "scheduler=step", "experiment=seed004", "optimizer.lr=0.1"],
        ["-m", "model=linear,quadratic", "~callbacks.plots", "+callbacks.x=1"],
        ["--cfg", "job", "model=whatever"],  # other flags: Hydra's to check
        ["hydra/launcher=joblib"],
    ],
)
def test_known_options_and_other_overrides_pass(args):
    from backprop_lab import cli

    cli.check_choices(args)  # returns: no SystemExit


def test_train_py_says_an_unknown_option_in_one_line(tmp_path):
    result = train_cli("scheduler=foo", log_dir=tmp_path / "logs")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "error: scheduler=foo is not an option of scheduler; choose one of cosine, none, "
        "plateau, step"
    ]
    assert not (tmp_path / "logs").exists()  # nothing written
