"""Resume is exact after any stop: a crash after an epoch-end checkpoint, Ctrl-C mid-epoch, with
and without shuffling, with validation, with manual gradients. The resumed run ends bit-identical
to the uninterrupted one and reports what the whole run would: its metrics, best epoch, history
and predictions before training."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch

from backprop_lab.errors import CheckpointError, Interrupted
from backprop_lab.training.run import train

from conftest import ROOT


class CrashAt(pl.Callback):
    """Raises as training step ``step`` ends, as a crash would: the checkpoint left on disk is the
    last epoch end's."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step == self.step:
            raise RuntimeError("crash")


class SignalAt(CrashAt):
    """Sends this process SIGINT as training step ``step`` ends, as Ctrl-C would."""

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGINT)


SHUFFLED = ["model=quadratic", "data=synthetic", "data.n=40", "data.batch_size=8"]
CASES = {
    # The quoted case: an epoch-end checkpoint of shuffled data used to replay epoch 0's order.
    "crash, shuffled, epoch-end checkpoint": (
        [*SHUFFLED, "data.val_fraction=0", "trainer.max_epochs=4"],
        CrashAt(13),  # epoch 2, step 3 of 5: resumes from the end of epoch 1
    ),
    "crash, shuffled, validation, manual gradients": (
        [*SHUFFLED, "trainer.max_epochs=4", "model.gradients=manual", "optimizer.lr=0.05"],
        CrashAt(9),
    ),
    "Ctrl-C, shuffled, validation, mid-epoch": (
        [*SHUFFLED, "trainer.max_epochs=4", "optimizer.lr=0.05"],
        SignalAt(6),
    ),
    "Ctrl-C, in order, mid-epoch": (["model=quadratic", "trainer.max_epochs=6"], SignalAt(7)),
    "Ctrl-C, sigmoid net, manual": (
        ["model=sigmoid_net", "trainer.max_epochs=8", "model.gradients=manual"],
        SignalAt(5),
    ),
}

#: conf/model/*.yaml: every model's save and resume round trip, a model added there included.
MODEL_CONFIGS = sorted(p.stem for p in (ROOT / "conf" / "model").glob("*.yaml"))
CASES.update(
    {
        f"crash, model={m}": ([f"model={m}", "trainer.max_epochs=6"], CrashAt(4))
        for m in MODEL_CONFIGS
    }
)


def metrics_csv(summary: dict) -> list[dict[str, str]]:
    with (Path(summary["output_dir"]) / "metrics.csv").open() as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_a_resumed_run_is_the_uninterrupted_run(make_cfg, case):
    args, stopper = CASES[case]
    whole = train(make_cfg(*args, out="whole"), quiet=True)
    with pytest.raises((RuntimeError, Interrupted)):
        train(make_cfg(*args, out="cut"), [stopper], quiet=True)
    cut = json.loads((Path(make_cfg(out="cut").paths.output_dir) / "summary.json").read_text())
    assert cut["status"] in ("failed", "interrupted")
    assert 0 < cut["steps"] < whole["steps"]
    resumed = train(make_cfg(*args, f"ckpt_path={cut['output_dir']}", out="resumed"), quiet=True)

    assert resumed["steps"] == whole["steps"] and resumed["epochs"] == whole["epochs"]
    assert resumed["parameters"] == whole["parameters"]  # exactly, not approximately
    assert resumed["final_loss"] == whole["final_loss"]
    assert resumed["final_metrics"] == whole["final_metrics"]
    assert resumed["best"] == whole["best"]
    assert resumed["predictions_before"] == whole["predictions_before"]
    assert resumed["predictions_after"] == whole["predictions_after"]
    assert metrics_csv(resumed) == metrics_csv(whole)  # every epoch, those before the stop too


def test_a_resumed_run_reports_the_checkpointed_runs_predictions_before(make_cfg):
    """The resumed config starts from other initial values; "before training" is the run's."""
    args = ["model=linear", "trainer.max_epochs=4"]
    with pytest.raises(RuntimeError):
        train(make_cfg(*args, out="cut"), [CrashAt(7)], quiet=True)
    cut = make_cfg(out="cut").paths.output_dir
    resumed = train(make_cfg(*args, f"ckpt_path={cut}", out="resumed"), quiet=True)
    assert resumed["predictions_before"] == [[12.0]]  # w = 3 at x = 4, as the seed prints


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ("data.batch_size=4", ["other data", "batch_size 8 there, 4 here"]),
        ("data.n=41", ["other data", "train_rows"]),
        ("data.coefficients=[1.0,0.0]", ["other data", "other rows"]),
        ("data.shuffle=false", ["other data", "shuffle True there, False here"]),
    ],
)
def test_resuming_onto_other_data_is_refused(make_cfg, change, words):
    args = [*SHUFFLED, "trainer.max_epochs=2"]
    train(make_cfg(*args, out="first"), quiet=True)
    first = make_cfg(out="first").paths.output_dir
    with pytest.raises(CheckpointError) as refused:
        train(make_cfg(*args, change, f"ckpt_path={first}", out="second"), quiet=True)
    message = str(refused.value)
    assert all(word in message for word in words), message
    assert "ckpt_path" in message


def test_seed_null_resumes_with_the_checkpointed_data_seed(make_cfg):
    args = [*SHUFFLED, "seed=null", "trainer.max_epochs=3"]
    with pytest.raises(RuntimeError):
        train(make_cfg(*args, out="cut"), [CrashAt(8)], quiet=True)
    cut = make_cfg(out="cut").paths.output_dir
    # A fresh seed would draw other rows, and resuming onto other data is refused.
    resumed = train(make_cfg(*args, f"ckpt_path={cut}", out="resumed"), quiet=True)
    assert resumed["status"] == "finished" and resumed["steps"] == 12  # 32 training rows / 8


@pytest.mark.slow
def test_sigkill_after_an_epoch_end_resumes_exactly(tmp_path):
    """The issue's case, killed for real: SIGKILL in epoch 2 or later of shuffled data."""
    command = [
        sys.executable,
        str(ROOT / "train.py"),
        f"paths.log_dir={tmp_path / 'logs'}",
        "trainer.enable_progress_bar=false",
        "model=quadratic",
        "data=synthetic",
        "data.n=16000",
        "data.batch_size=8",
        "trainer.max_epochs=4",
    ]

    def finish(run_dir: Path, *extra: str) -> dict:
        done = subprocess.run([*command, f"hydra.run.dir={run_dir}", *extra], capture_output=True)
        assert done.returncode == 0, done.stderr.decode()
        return json.loads((run_dir / "summary.json").read_text())

    whole = finish(tmp_path / "whole")
    killed = tmp_path / "killed"
    worker = subprocess.Popen([*command, f"hydra.run.dir={killed}"], stderr=subprocess.DEVNULL)
    checkpoint, deadline = killed / "checkpoints" / "last.ckpt", time.monotonic() + 120
    while time.monotonic() < deadline and worker.poll() is None:
        try:
            if torch.load(checkpoint, weights_only=True)["epoch"] >= 1:
                break
        except (OSError, RuntimeError, EOFError):
            pass  # not there yet
        time.sleep(0.05)
    worker.send_signal(signal.SIGKILL)
    worker.wait(timeout=60)
    assert not (killed / "summary.json").exists()  # killed before it finished
    resumed = finish(tmp_path / "resumed", f"ckpt_path={killed}")
    assert resumed["steps"] == whole["steps"] == 6400  # 12800 training rows / 8, 4 epochs
    assert resumed["parameters"] == whole["parameters"]
    assert resumed["final_loss"] == whole["final_loss"]
    assert resumed["best"] == whole["best"]
