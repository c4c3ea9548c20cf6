"""Learning-rate schedulers (``scheduler=none|step|cosine|plateau``): the rate each epoch trains
with, as TensorBoard and metrics.csv log it, the same under manual gradients, exact on resume, and
nothing changed under the default ``none``."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from backprop_lab import schema
from backprop_lab.errors import ConfigError
from backprop_lab.training.build import build
from backprop_lab.training.run import train
from backprop_lab.training.summary import report

from conftest import ROOT

TAG = "lr-SGD"  # Lightning's LearningRateMonitor's name for the optimizer's rate


def logged_lr(summary: dict) -> list[float]:
    """The rate of each epoch, as TensorBoard has it (logged at the epoch's start)."""
    events = EventAccumulator(summary["output_dir"], size_guidance={"scalars": 0})
    events.Reload()
    if TAG not in events.Tags()["scalars"]:
        return []
    return [e.value for e in events.Scalars(TAG)]


def card(summary: dict) -> str:
    """The run card's Markdown (TensorBoard's Text tab, tag ``card``)."""
    events = EventAccumulator(summary["output_dir"], size_guidance={"tensors": 0})
    events.Reload()
    (text,) = events.Tensors("card/text_summary")
    return text.tensor_proto.string_val[0].decode()


def csv_lr(summary: dict) -> list[float]:
    with (Path(summary["output_dir"]) / "metrics.csv").open() as f:
        return [float(row[TAG]) for row in csv.DictReader(f)]


def quiet_run(make_cfg, *overrides: str, out: str = "run") -> dict:
    return train(make_cfg("callbacks.graph_figure.path=null", *overrides, out=out), quiet=True)


STEP = ["model=quadratic", "scheduler=step", "scheduler.step_size=2", "scheduler.gamma=0.5"]
# Seed 004's loss falls by more than half an epoch until epoch 4: from there the rate drops.
PLATEAU = [
    "model=quadratic",
    "scheduler=plateau",
    "scheduler.patience=0",
    "+scheduler.threshold=0.5",
]


def test_the_default_is_no_scheduler_and_the_seed_numbers_stay(run, make_cfg):
    assert not make_cfg().scheduler  # scheduler=none: no _target_
    summary = run("model=quadratic")
    assert summary["final_loss"] == 0.00631808303296566  # seed 004, as tests/test_seeds.py pins
    assert summary["predictions_after"] == [[8.544171333312988]]
    assert summary["lr"] == {"first": 0.01, "last": 0.01}
    assert logged_lr(summary) == []  # no chart of a constant rate
    assert "| learning rate | 0.01 |" in card(summary)
    assert "learning rate" not in report(summary)  # it did not change
    with (Path(summary["output_dir"]) / "metrics.csv").open() as f:
        assert TAG not in next(csv.reader(f))


def test_step_halves_the_rate_every_step_size_epochs(make_cfg):
    summary = quiet_run(make_cfg, *STEP, "trainer.max_epochs=6")
    expected = [0.01, 0.01, 0.005, 0.005, 0.0025, 0.0025]
    assert logged_lr(summary) == pytest.approx(expected, rel=1e-6)  # float32 scalars
    assert csv_lr(summary) == pytest.approx(expected, rel=1e-6)
    assert summary["lr"] == pytest.approx({"first": 0.01, "last": 0.00125})
    assert "| learning rate | 0.01 -> 0.00125 |" in card(summary)
    assert "learning rate: 0.01 -> 0.00125" in report(summary).splitlines()


def test_cosine_ends_at_eta_min(make_cfg):
    args = ["model=quadratic", "scheduler=cosine", "scheduler.eta_min=0.001"]
    summary = quiet_run(make_cfg, *args, "trainer.max_epochs=5")
    rates = logged_lr(summary)
    assert rates[0] == pytest.approx(0.01) and rates == sorted(rates, reverse=True)
    assert summary["lr"]["last"] == pytest.approx(0.001)  # T_max is trainer.max_epochs


def test_plateau_reduces_the_rate_when_the_objective_stalls(make_cfg):
    # w = 2 fits y = 2x exactly: the loss is 0 from the first step and never improves.
    args = ["model=linear", "model.w=2.0", "scheduler=plateau", "scheduler.patience=1"]
    summary = quiet_run(make_cfg, *args, "trainer.max_epochs=5")
    assert csv_lr(summary) == pytest.approx([0.01, 0.01, 0.01, 0.001, 0.001], rel=1e-6)
    assert summary["lr"] == pytest.approx({"first": 0.01, "last": 0.0001})
    # The seed's quadratic improves every epoch: the same schedule leaves its rate alone.
    improving = quiet_run(make_cfg, "model=quadratic", *args[2:], "trainer.max_epochs=5", out="b")
    assert improving["lr"] == {"first": 0.01, "last": 0.01}


@pytest.mark.parametrize(
    "args",
    [
        [*STEP, "trainer.max_epochs=6"],
        ["model=linear", "model.w=2.0", "scheduler=plateau", "scheduler.patience=1"],
    ],
    ids=["step", "plateau"],
)
def test_manual_gradients_step_the_scheduler_as_autograd_does(make_cfg, args):
    auto = quiet_run(make_cfg, *args, "trainer.max_epochs=5", out="auto")
    manual = quiet_run(make_cfg, *args, "trainer.max_epochs=5", "model.gradients=manual")
    assert csv_lr(manual) == csv_lr(auto)
    assert manual["lr"] == auto["lr"] and manual["lr"]["last"] < manual["lr"]["first"]
    assert manual["parameters"] == pytest.approx(auto["parameters"], rel=1e-5)


class CrashAt(pl.Callback):
    """Raises as training step ``step`` ends: the run resumes from the last epoch end."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step == self.step:
            raise RuntimeError("crash")


class SignalAt(CrashAt):
    """SIGINT as step ``step`` ends, as Ctrl-C: the run saves a checkpoint mid-epoch."""

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step == self.step:
            import signal

            os.kill(os.getpid(), signal.SIGINT)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("extra", "stopper"),
    [
        (STEP, CrashAt(10)),  # epoch 3 of 8: resumes from the end of epoch 2, just after a step
        (STEP, SignalAt(7)),  # mid-epoch 2
        ([*STEP, "model.gradients=manual"], CrashAt(10)),
        ([*STEP, "model.gradients=manual"], SignalAt(7)),
        (["model=quadratic", "scheduler=cosine"], CrashAt(13)),
        (PLATEAU, CrashAt(16)),  # resumes from the end of epoch 4, where the rate drops
        (PLATEAU, SignalAt(16)),
        ([*PLATEAU, "model.gradients=manual"], CrashAt(16)),
    ],
    ids=[
        "step, crash",
        "step, Ctrl-C mid-epoch",
        "step, crash, manual gradients",
        "step, Ctrl-C mid-epoch, manual gradients",
        "cosine, crash",
        "plateau, crash",
        "plateau, Ctrl-C mid-epoch",
        "plateau, crash, manual gradients",
    ],
)
def test_a_resumed_scheduled_run_is_the_uninterrupted_run(make_cfg, extra, stopper):
    from backprop_lab.errors import Interrupted

    args = [*extra, "trainer.max_epochs=8"]
    whole = quiet_run(make_cfg, *args, out="whole")
    with pytest.raises((RuntimeError, Interrupted)):
        quiet_run_with(make_cfg, args, stopper)
    cut = json.loads((Path(make_cfg(out="cut").paths.output_dir) / "summary.json").read_text())
    assert 0 < cut["steps"] < whole["steps"]
    resumed = quiet_run(make_cfg, *args, f"ckpt_path={cut['output_dir']}", out="resumed")
    assert resumed["steps"] == whole["steps"]
    assert resumed["parameters"] == whole["parameters"]  # exactly
    assert resumed["final_loss"] == whole["final_loss"]
    assert resumed["lr"] == whole["lr"] and whole["lr"]["last"] < whole["lr"]["first"]
    assert csv_lr(resumed) == csv_lr(whole)  # the rate of every epoch, before the stop too


def quiet_run_with(make_cfg, args: list[str], stopper: pl.Callback) -> dict:
    cfg = make_cfg("callbacks.graph_figure.path=null", *args, out="cut")
    return train(cfg, [stopper], quiet=True)


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        (["scheduler=step", "scheduler.step_size=0"], "scheduler.step_size must be a whole number"),
        (["scheduler=step", "scheduler.gamma=-0.5"], "scheduler.gamma must be a number > 0"),
        (["scheduler=plateau", "scheduler.factor=1.5"], "scheduler.factor must be a number in (0,"),
        (["scheduler=plateau", "scheduler.patience=-1"], "scheduler.patience must be a whole"),
        (["scheduler=cosine", "scheduler.T_max=0.5"], "scheduler.T_max must be a whole number"),
        (["scheduler=cosine", "scheduler.eta_min=-1"], "scheduler.eta_min must be a number >= 0"),
        (["scheduler=step", "+scheduler.T_max=3"], "scheduler.T_max is not an argument of"),
        (["scheduler=step", "scheduler._target_=os.system"], "scheduler._target_ must be"),
    ],
)
def test_bad_values_are_one_line(make_cfg, overrides, words):
    with pytest.raises(ConfigError) as error:
        schema.check(make_cfg(*overrides))
    assert str(error.value).startswith(words) and "\n" not in str(error.value)


def test_a_plateau_on_validation_needs_validation_data(make_cfg):
    with pytest.raises(ConfigError, match=r"^scheduler=plateau watches Loss/val .* no validation"):
        build(make_cfg("scheduler=plateau", "objective.metric=Loss/val"))
    build(make_cfg("scheduler=plateau", "objective.metric=Loss/val", "data.val_fraction=0.4"))


def test_every_schedule_builds_and_hands_lightning_its_dict(make_cfg):
    for name in ("none", "step", "cosine", "plateau"):
        _, model = build(make_cfg(f"scheduler={name}"))  # checks the schema first
        configured = model.configure_optimizers()
        if name == "none":
            assert isinstance(configured, torch.optim.Optimizer)
            continue
        assert isinstance(configured, dict)
        assert configured["lr_scheduler"]["interval"] == "epoch"
        monitor = configured["lr_scheduler"].get("monitor")
        assert monitor == ("Loss/train" if name == "plateau" else None)
    cfg = make_cfg("scheduler=cosine", "trainer.max_epochs=7")
    assert cfg.scheduler.T_max == 7
    cfg = make_cfg("scheduler=plateau", "objective.mode=max")
    assert cfg.scheduler.mode == "max"


def test_the_cli_names_an_unknown_scheduler_and_the_options(tmp_path):
    result = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), f"paths.log_dir={tmp_path}", "scheduler=foo"],
        capture_output=True,
        text=True,
        env={**os.environ, "HYDRA_FULL_ERROR": "0"},
        cwd=tmp_path,
        timeout=120,
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "error: scheduler=foo is not an option of scheduler; choose one of cosine, none, "
        "plateau, step"
    ]
