"""Bad input ends in a clear error; faults lose nothing; an interrupted run resumes exactly."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch

from backprop_lab.errors import Interrupted
from backprop_lab.training.run import train

from conftest import ROOT

QUIET = "trainer.enable_progress_bar=false"


def cli(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "train.py"), f"paths.log_dir={cwd / 'logs'}", QUIET, *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
        env={**os.environ, "HYDRA_FULL_ERROR": "0", **(env or {})},
    )


def csv_file(tmp_path: Path, text: str) -> str:
    path = tmp_path / "data.csv"
    path.write_text(text)
    return f"data.train_csv={path}"


BAD_CONFIG = [
    (["model=foo"], ["model=foo is not an option of model", "linear, quadratic, sigmoid_net"]),
    (["optimizer=foo"], ["optimizer=foo is not an option of optimizer", "adam", "sgd"]),
    (["optimizer.lrr=0.1"], ["Could not override 'optimizer.lrr'", "not in struct"]),
    (["optimizer.lr=-1"], ["optimizer.lr must be a number > 0, got -1", "optimizer.lr=0.01"]),
    (["optimizer.lr=abc"], ["optimizer.lr must be a number > 0, got 'abc'"]),
    (["optimizer.momentum=1.5"], ["optimizer.momentum must be a number in [0, 1)"]),
    (["data.batch_size=0"], ["data.batch_size must be a whole number >= 1, got 0"]),
    (["data.batch_size=1.5"], ["data.batch_size must be a whole number >= 1, got 1.5"]),
    (["trainer.max_epochs=0"], ["trainer.max_epochs must be a whole number >= 1"]),
    (["callbacks.gradient_check.rtol=0"], ["callbacks.gradient_check.rtol must be a number > 0"]),
    (["seed=abc"], ["seed must be a whole number or null"]),
    (["model.w=[1,2]"], ["model:", "3 coefficients", "[1, 2]"]),
    (["model=sigmoid_net", "model.hidden_weight=[[1,2],[3]]"], ["model:", "rectangular"]),
    (
        ["model=sigmoid_net", "model.output_weight=[[1,2,3],[1,2,3]]"],
        ["one column per hidden unit"],
    ),
    (["model=sigmoid_net", "model.hidden_bias=[0.1]"], ["hidden_bias needs 2 value"]),
    (["model.w=[a,b,c]"], ["model:", "must be numbers"]),
    (["model=sigmoid_net", "data=y_equals_2x"], ["1 input and 1 target", "x_columns"]),
    (["trainer.precision=foo"], ["trainer:", "foo"]),
    (["seed=-1"], ["seed must be a whole number or null", "4294967295", "seed=0"]),
    (["model=linear", "model.w=[1,2]"], ["model.w must be a number", "model.w=3.0"]),
    (["model=linear", "model.w=1e39"], ["model.w holds 1e+39", "trainer.precision=64"]),
    (["predict_at=[[1,2]]"], ["predict_at", "1 input feature", "predict_at=[4.0]"]),
    (
        ["optimizer=adam", "+optimizer.momentum=0.9"],
        ["optimizer.momentum is not an argument of torch.optim.Adam", "lr, betas"],
    ),
    (["loss.terms.mse=-1"], ["loss.terms.mse must be a number >= 0, got -1"]),
]

BAD_DATA = [
    (None, ["does not exist", "data.train_csv"]),
    ("", ["is empty"]),
    ("x,y\n", ["header but no data rows"]),
    ("a,b\n1,2\n", ["no column(s) ['x', 'y']", "its columns are ['a', 'b']"]),
    ("x,y\n1,2\n2,two\n", ["row 3", "column 'y'", "'two' is not a number"]),
    ("x,y\n1,2\n2,4,6\n", ["row 3", "3 field(s)", "header has 2"]),
    ("x,y\n1,2\nnan,4\n", ["row 3", "column 'x'", "not finite"]),
    ("x,y\n1,inf\n", ["row 2", "column 'y'", "not finite"]),
    ("x,y\n1,2\n#3,4\n", ["'#3' is not a number", "row 3", "column 'x'"]),  # no comment rows
    ("x,y,x\n1,2,3\n", ["duplicate column name(s) ['x']"]),
    ("x,y\n1,2\n3,1e39\n", ["does not fit float32", "row 3", "trainer.precision=64"]),
]


def assert_clean_failure(result: subprocess.CompletedProcess, words: list[str]) -> None:
    assert result.returncode == 1, result.stderr
    for word in words:
        assert word in result.stderr, (word, result.stderr)
    assert "Traceback" not in result.stderr
    assert "final loss" not in result.stdout  # nothing that looks like a finished run


@pytest.mark.slow
@pytest.mark.parametrize(("args", "words"), BAD_CONFIG, ids=[" ".join(a) for a, _ in BAD_CONFIG])
def test_bad_config(tmp_path, args, words):
    result = cli(*args, cwd=tmp_path)
    assert_clean_failure(result, words)
    assert len([ln for ln in result.stderr.splitlines() if ln.startswith("error:")]) <= 1


@pytest.mark.slow
@pytest.mark.parametrize(("text", "words"), BAD_DATA, ids=[w[0] for _, w in BAD_DATA])
def test_bad_data(tmp_path, text, words):
    arg = f"data.train_csv={tmp_path / 'missing.csv'}" if text is None else csv_file(tmp_path, text)
    result = cli(arg, cwd=tmp_path)
    assert_clean_failure(result, [*words, str(tmp_path)])


@pytest.mark.slow
def test_the_full_traceback_on_request(tmp_path):
    result = cli("optimizer.lr=-1", cwd=tmp_path, env={"HYDRA_FULL_ERROR": "1"})
    assert result.returncode == 1
    assert "Traceback" in result.stderr and "ConfigError" in result.stderr


@pytest.fixture(scope="module")
def linear_run(tmp_path_factory) -> Path:
    """A finished one-epoch linear run, for checkpoint tests."""
    cwd = tmp_path_factory.mktemp("linear")
    result = cli("model=linear", "trainer.max_epochs=1", cwd=cwd)
    assert result.returncode == 0, result.stderr
    return Path(result.stdout.split("logs: ")[-1].strip())


@pytest.mark.slow
def test_checkpoints_load_without_running_code(linear_run):
    checkpoint = torch.load(linear_run / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["run_config"]["model"]["_target_"].endswith("LinearRegression")


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["missing", "not a checkpoint", "other model", "other shape"])
def test_bad_checkpoint_paths(tmp_path, linear_run, kind):
    if kind == "missing":
        args, words = [f"ckpt_path={tmp_path / 'no.ckpt'}"], ["does not exist"]
    elif kind == "not a checkpoint":
        (tmp_path / "x.ckpt").write_text("hello")
        args, words = [f"ckpt_path={tmp_path / 'x.ckpt'}"], ["is not a checkpoint"]
    elif kind == "other model":
        args, words = (
            ["model=quadratic", f"ckpt_path={linear_run}"],
            ["holds a LinearRegression", "builds a QuadraticRegression"],
        )
    else:
        args, words = (
            ["model=linear", "model.bias=true", f"ckpt_path={linear_run}"],
            ["holds parameters", "model settings it was trained with"],
        )
    assert_clean_failure(cli(*args, cwd=tmp_path), words)


@pytest.mark.slow
def test_ckpt_path_last_without_runs(tmp_path):
    assert_clean_failure(cli("ckpt_path=last", cwd=tmp_path), ["no run under", "last.ckpt"])


@pytest.mark.slow
def test_unreachable_targets_warn_but_train(tmp_path):
    result = cli("model=sigmoid_net", "trainer.max_epochs=2", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    (line,) = [line for line in result.stderr.splitlines() if "outside (0, 1)" in line]
    assert line.startswith("warning: ") and "-0.07" in line  # the style of the errors


@pytest.mark.slow
def test_divergence_stops_with_the_step_and_keeps_the_last_finite_checkpoint(tmp_path):
    result = cli("model=quadratic", "optimizer.lr=1", cwd=tmp_path)
    assert_clean_failure(
        result,
        ["diverged at step 14 (epoch 4)", "the loss is inf", "optimizer.lr=1", "learning rate"],
    )
    run_dir = next((tmp_path / "logs" / "runs" / "quadratic").iterdir())
    assert str(run_dir / "checkpoints" / "last.ckpt") in result.stderr
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "failed" and "Diverged" in summary["error"]
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["epoch"] == 3
    assert all(torch.isfinite(v).all() for v in checkpoint["state_dict"].values())


@pytest.mark.slow
@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_saves_a_checkpoint_and_exits_with_its_status(tmp_path, signum, code):
    worker = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "train.py"),
            f"paths.log_dir={tmp_path / 'logs'}",
            QUIET,
            "model=linear",
            "data=synthetic",
            "data.n=20000",
            "data.batch_size=1",
            "trainer.max_epochs=100",
        ],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    runs = tmp_path / "logs" / "runs" / "linear"
    deadline = time.monotonic() + 120
    while not list(runs.glob("*/events.out.tfevents.*")) and time.monotonic() < deadline:
        time.sleep(0.5)  # training has started once the logger wrote its first file
    time.sleep(1.0)
    worker.send_signal(signum)
    _, err = worker.communicate(timeout=120)
    assert worker.returncode == code, err
    name = signal.Signals(signum).name
    assert f"stopped by {name}" in err and "ckpt_path=" in err and "Traceback" not in err
    (run_dir,) = runs.iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "interrupted" and 0 < summary["steps"] < 2_000_000
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["global_step"] == summary["steps"]


class SignalAt(pl.Callback):
    """Sends this process SIGINT as training step ``step`` ends, as Ctrl-C would."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGINT)


RESUME_CASES = {
    "epoch end": (["model=quadratic", "trainer.max_epochs=6"], 9),
    "mid-epoch": (["model=quadratic", "trainer.max_epochs=6"], 7),
    "shuffled mid-epoch": (
        [
            "model=quadratic",
            "data=synthetic",
            "data.n=50",
            "data.batch_size=4",
            "data.val_fraction=0.2",
            "trainer.max_epochs=4",
            "optimizer.lr=0.05",
            "model.gradients=manual",
        ],
        17,
    ),
}


@pytest.mark.parametrize("case", list(RESUME_CASES))
def test_interrupted_and_resumed_equals_uninterrupted_bit_for_bit(make_cfg, case):
    args, stop_at = RESUME_CASES[case]
    whole = train(make_cfg(*args, out="whole"), quiet=True)
    with pytest.raises(Interrupted) as stopped:
        train(make_cfg(*args, out="cut"), [SignalAt(stop_at)], quiet=True)
    assert stopped.value.exit_code == 130
    cut = json.loads((Path(make_cfg(out="cut").paths.output_dir) / "summary.json").read_text())
    assert cut["status"] == "interrupted" and cut["steps"] == stop_at
    resumed = train(make_cfg(*args, f"ckpt_path={cut['output_dir']}", out="resumed"), quiet=True)
    assert resumed["resumed_from"].endswith("cut/checkpoints/last.ckpt")
    assert resumed["steps"] == whole["steps"]
    assert resumed["parameters"] == whole["parameters"]  # exactly, not approximately
    assert resumed["final_loss"] == whole["final_loss"]
    assert math.isfinite(resumed["final_loss"])


@pytest.mark.slow
def test_ckpt_path_last_resumes_the_newest_run(tmp_path):
    first = cli("model=linear", "trainer.max_epochs=2", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    again = cli("model=linear", "trainer.max_epochs=4", "ckpt_path=last", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    run_dir = Path(again.stdout.split("logs: ")[-1].strip())
    summary = json.loads((run_dir / "summary.json").read_text())
    assert (
        summary["resumed_from"]
        == first.stdout.split("logs: ")[-1].strip() + "/checkpoints/last.ckpt"
    )
    assert summary["steps"] == 12
