"""Early stopping (callbacks.early_stopping.patience) and checkpoints/best.ckpt (ckpt_path=best)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from backprop_lab import schema
from backprop_lab.errors import CheckpointError, ConfigError
from backprop_lab.tools.predict import predict
from backprop_lab.training import checkpoints
from backprop_lab.training.run import train

from conftest import cli

EXAMPLE = ("model=linear", "trainer.max_epochs=2000", "callbacks.early_stopping.patience=10")


def ckpt(summary: dict, name: str) -> Path:
    return Path(summary["output_dir"]) / "checkpoints" / f"{name}.ckpt"


def test_the_2000_epoch_example_stops_long_before_and_says_when_and_why(run):
    summary = run(*EXAMPLE)
    stopped = summary["stopped_early"]
    assert stopped is not None and stopped["epoch"] < 200
    assert summary["epochs"] == stopped["epoch"] + 1  # epochs 0..stopped ran, no more
    assert stopped["reason"].startswith("Loss/train did not improve by more than 0 for 10 epochs")
    # The best epoch is the one 10 epochs before the stop: none after it beat it.
    assert summary["best"]["epoch"] == stopped["epoch"] - 10
    with (Path(summary["output_dir"]) / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == summary["epochs"] and int(rows[-1]["epoch"]) == stopped["epoch"]
    best = min(rows, key=lambda r: float(r["Loss/train"]))
    assert int(best["epoch"]) == summary["best"]["epoch"]
    # The last and the best checkpoints: the stopping epoch's and the best one's.
    assert torch.load(ckpt(summary, "last"), weights_only=True)["epoch"] == stopped["epoch"]
    assert torch.load(ckpt(summary, "best"), weights_only=True)["epoch"] == int(best["epoch"])


def test_the_report_names_the_stop_and_the_best_checkpoint(run):
    from backprop_lab.training.summary import report

    summary = run(*EXAMPLE)
    lines = report(summary).splitlines()
    stopped = summary["stopped_early"]
    assert f"stopped early: at epoch {stopped['epoch']}, {stopped['reason']}" in lines
    assert f"best checkpoint: {ckpt(summary, 'best')}" in lines


@pytest.mark.slow
def test_the_example_on_the_command_line(tmp_path):
    result = cli("train.py", *EXAMPLE, f"paths.log_dir={tmp_path / 'logs'}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "stopped early: at epoch " in result.stdout
    (summary,) = (tmp_path / "logs" / "runs" / "linear").glob("*/summary.json")
    assert json.loads(summary.read_text())["epochs"] < 200


def test_a_seed_experiment_runs_all_its_epochs(run, make_cfg):
    assert make_cfg("model=quadratic").callbacks.early_stopping.patience is None  # off
    summary = run("model=quadratic")
    assert summary["epochs"] == 100 and summary["steps"] == 300
    assert summary["stopped_early"] is None
    assert summary["final_loss"] == 0.00631808303296566  # seed 004's number, unchanged


def test_min_delta_stops_sooner(run):
    plain = run(*EXAMPLE, out="plain")
    coarse = run(*EXAMPLE, "callbacks.early_stopping.min_delta=0.01", out="coarse")
    assert coarse["epochs"] < plain["epochs"]
    assert "by more than 0.01 for 10 epochs" in coarse["stopped_early"]["reason"]


def test_best_ckpt_holds_the_best_epochs_parameters(run):
    # With mode=max the highest loss is best: epoch 0's, so best.ckpt is not last.ckpt.
    five = run("model=quadratic", "trainer.max_epochs=5", "objective.mode=max", out="five")
    one = run("model=quadratic", "trainer.max_epochs=1", out="one")
    assert five["best"]["epoch"] == 0
    best = torch.load(ckpt(five, "best"), weights_only=True)
    assert best["epoch"] == 0
    after_epoch_0 = torch.load(ckpt(one, "last"), weights_only=True)["state_dict"]
    assert torch.equal(best["state_dict"]["w"], after_epoch_0["w"])
    last = torch.load(ckpt(five, "last"), weights_only=True)["state_dict"]
    assert not torch.equal(best["state_dict"]["w"], last["w"])
    # Its history ends at the best epoch, with the value summary.json calls best.
    rows = [json.loads(line) for line in best["run_state"]["history"].splitlines()]
    assert rows[-1]["epoch"] == 0 and rows[-1]["Loss/train"] == five["best"]["value"]


def test_predict_with_ckpt_path_best(run, tmp_path):
    summary = run(
        "model=quadratic", "trainer.max_epochs=5", "objective.mode=max", out="logs/runs/quadratic/a"
    )
    runs = tmp_path / "logs" / "runs"
    predictions = predict("best", runs_dir=runs, device="cpu")
    assert predictions.checkpoint == ckpt(summary, "best")
    assert predictions.steps == 3  # epoch 0's end, seed 004's three rows
    assert predict("last", runs_dir=runs, device="cpu").checkpoint == ckpt(summary, "last")
    # A run dir keeps meaning its last checkpoint.
    assert predict(summary["output_dir"], device="cpu").checkpoint == ckpt(summary, "last")


def test_ckpt_path_best_without_a_best_checkpoint(run, tmp_path):
    runs = tmp_path / "logs" / "runs"
    with pytest.raises(CheckpointError, match=r"^ckpt_path=best: no run under"):
        checkpoints.resolve("best", runs)
    # Loss/val without validation data: never logged, so no best.ckpt is written.
    summary = run(
        "model=linear",
        "trainer.max_epochs=2",
        "objective.metric=Loss/val",
        out="logs/runs/linear/a",
    )
    assert ckpt(summary, "last").is_file() and not ckpt(summary, "best").exists()
    with pytest.raises(CheckpointError, match=r"^ckpt_path=best: the newest run, .* has no ") as e:
        predict("best", runs_dir=runs)
    assert "\n" not in str(e.value)


@pytest.mark.slow
def test_predict_cli_best_without_one_is_one_error_line(tmp_path):
    result = cli("predict.py", "ckpt_path=best", f"paths.log_dir={tmp_path / 'logs'}", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.startswith("error: ckpt_path=best: no run under")
    assert len(result.stderr.strip().splitlines()) == 1 and result.stdout == ""


def test_resume_from_best(run):
    first = run(*EXAMPLE, out="logs/runs/linear/first")
    resumed = run(
        *EXAMPLE,
        "ckpt_path=best",
        "callbacks.early_stopping.patience=null",
        "trainer.max_epochs=70",
        out="logs/runs/linear/resumed",
    )
    assert resumed["resumed_from"] == str(ckpt(first, "best"))
    assert resumed["epochs"] == 70 and resumed["stopped_early"] is None
    assert resumed["best"] == first["best"]  # the whole run's history came with the checkpoint


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("callbacks.early_stopping.patience=-1", "callbacks.early_stopping.patience must be a "),
        ("callbacks.early_stopping.patience=2.5", "callbacks.early_stopping.patience must be a "),
        ("callbacks.early_stopping.min_delta=-0.1", "callbacks.early_stopping.min_delta must be "),
    ],
)
def test_bad_values_are_one_line(make_cfg, override, message):
    with pytest.raises(ConfigError) as error:
        schema.check(make_cfg("model=linear", override))
    assert str(error.value).startswith(message) and "\n" not in str(error.value)


@pytest.mark.slow
def test_a_negative_patience_on_the_command_line(tmp_path):
    result = cli(
        "train.py",
        "model=linear",
        "callbacks.early_stopping.patience=-1",
        f"paths.log_dir={tmp_path / 'logs'}",
        cwd=tmp_path,
    )
    assert result.returncode == 1
    assert result.stderr.startswith("error: callbacks.early_stopping.patience must be a whole")
    assert len(result.stderr.strip().splitlines()) == 1


def test_early_stopping_on_a_metric_the_run_does_not_log(make_cfg):
    no_val = make_cfg(
        "model=linear", "callbacks.early_stopping.patience=3", "objective.metric=Loss/val"
    )
    with pytest.raises(ConfigError, match=r"watches Loss/val, but this run has no validation"):
        train(no_val, quiet=True)
    typo = make_cfg(
        "model=linear",
        "callbacks.early_stopping.patience=3",
        "objective.metric=Loss/trian",
        out="typo",
    )
    with pytest.raises(ConfigError, match=r"^callbacks.early_stopping: .*`Loss/trian`"):
        train(typo, quiet=True)


@pytest.mark.slow
def test_early_stopping_on_the_validation_loss(run):
    summary = run(
        "model=linear",
        "data=synthetic",
        "data.n=200",
        "data.val_fraction=0.25",
        "trainer.max_epochs=500",
        "objective.metric=Loss/val",
        "callbacks.early_stopping.patience=5",
    )
    assert summary["stopped_early"]["reason"].startswith("Loss/val did not improve")
    assert summary["epochs"] < 500
    best = torch.load(ckpt(summary, "best"), weights_only=True)
    assert best["epoch"] == summary["best"]["epoch"]


def test_the_card_says_when_and_why_it_stopped(run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    summary = run(*EXAMPLE)
    events = EventAccumulator(summary["output_dir"], size_guidance={"tensors": 0})
    events.Reload()
    (card,) = events.Tensors("card/text_summary")
    stopped = summary["stopped_early"]
    row = f"| stopped early | at epoch {stopped['epoch']}: {stopped['reason']} |"
    assert row in card.tensor_proto.string_val[0].decode()
