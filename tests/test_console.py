"""What a run shows and keeps: the console report, train.log, the run card, a sweep's last lines,
warnings and errors in one short style."""

from __future__ import annotations

import logging
import logging.config
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from backprop_lab import console
from backprop_lab.dashboard.card import _override, _path, table
from backprop_lab.training.summary import report

from conftest import ROOT

QUIET = "trainer.enable_progress_bar=false"
#: Seed 002's one step: w -0.2505 -> -0.150451, b 0.9166 -> 0.958288.
SEED_002_GRADIENTS = "gradients at step 0: dL/dw = -10.0049, dL/db = -4.1688"
SEED_002_PARAMETERS = "parameters: w=-0.2505 -> -0.150451, b=0.9166 -> 0.958288"


def train_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    flags = [a for a in args if a.startswith("-")]  # argparse wants -m before the overrides
    overrides = [a for a in args if not a.startswith("-")]
    return subprocess.run(
        [
            sys.executable,
            str(ROOT / "train.py"),
            *flags,
            f"paths.log_dir={cwd / 'logs'}",
            *overrides,
        ],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
        env={**os.environ, "HYDRA_FULL_ERROR": "0"},
    )


@pytest.fixture(scope="module")
def seed002(tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path]:
    """`train.py experiment=seed002` run once for the tests of its console, train.log and card."""
    cwd = tmp_path_factory.mktemp("seed002")
    result = train_cli("experiment=seed002", QUIET, cwd=cwd)
    assert result.returncode == 0, result.stderr
    return result, Path(re.search(r"^logs: (.+)$", result.stdout, re.M).group(1))


def card_of(run_dir: Path) -> tuple[list[str], str]:
    """The run's Text tab: its tags, and the card's Markdown."""
    events = EventAccumulator(str(run_dir), size_guidance={"tensors": 0})
    events.Reload()
    tags = [t for t in events.Tags()["tensors"] if t.endswith("/text_summary")]
    (card,) = events.Tensors("card/text_summary")
    return tags, card.tensor_proto.string_val[0].decode()


# --- the console and train.log of a real run ------------------------------------------------------


@pytest.mark.slow
def test_seed002_prints_its_step_and_train_log_keeps_the_report(seed002):
    result, run_dir = seed002
    lines = result.stdout.splitlines()
    assert SEED_002_GRADIENTS in lines
    assert SEED_002_PARAMETERS in lines
    # Rounded for reading (summary.json keeps every digit: 0.666100025177002).
    assert "predict (before training): x=1.0 -> 0.6661, x=2.0 -> 0.4156, x=3.0 -> 0.1651" in lines
    assert "predict (after training): x=1.0 -> 0.807837, x=2.0 -> 0.657387, x=3.0 -> 0.506936" in (
        lines
    )
    assert f"tensorboard: uv run tensorboard --logdir {run_dir}" in lines
    assert result.stderr == ""

    log = (run_dir / "train.log").read_text()
    assert log.strip()
    assert re.match(r"^\[\d{4}-\d\d-\d\d [\d:,]+\]\[backprop_lab\]\[INFO\] - predict", log)
    for line in lines:  # the whole report, as the console showed it
        assert line in log, line


@pytest.mark.slow
def test_the_card_sorts_first_with_clean_tables_the_first_step_and_the_chosen_config(seed002):
    _, run_dir = seed002
    tags, card = card_of(run_dir)
    assert sorted(tags)[0] == "card/text_summary", tags  # the Text tab lists tags in name order
    assert card.startswith("**seed002** · LinearRegression: 1 epoch(s), 1 step(s)")
    # Every table has a named header; `| | |` rendered as an empty first row.
    for header in re.findall(r"^(\|.*\|)\n\|(?:---\|)+$", card, re.M):
        assert all(cell.strip() for cell in header.strip("|").split("|")), header
    assert "| parameter | before training | dL/dparam at step 0 | after training |" in card
    assert "| `w` | -0.2505 | -10.0049 | -0.150451 |" in card
    assert "| `b` | 0.9166 | -4.1688 | 0.958288 |" in card
    assert "| 1.0 | 0.6661 | 0.807837 |" in card  # predictions rounded
    assert "0.666100025177002" not in card

    config = card.split("```yaml\n", 1)[1].split("```", 1)[0]
    parsed = OmegaConf.to_container(OmegaConf.create(config))
    assert parsed["overrides"] == ["experiment=seed002", QUIET]  # paths.log_dir=<tmp> left out
    assert parsed["model"] == {"w": -0.2505, "bias": True, "b": 0.9166, "gradients": "autograd"}
    assert set(parsed) == {"overrides", "model", "loss", "optimizer", "data"}
    assert parsed["data"]["train_csv"] == "data/seed002_linear_bias.csv"
    assert "model:  # model=linear" in config
    assert "_target_" not in config and "_partial_" not in config
    assert not re.search(r"(^|[\s=])/", config), config  # no absolute path of the machine
    assert str(run_dir.parent) not in card and str(ROOT) not in card


# --- a sweep --------------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_sweep_prints_one_tensorboard_command_for_all_its_jobs(tmp_path):
    result = train_cli("-m", "model=linear", "trainer.max_epochs=1,2", QUIET, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    (sweep,) = (tmp_path / "logs" / "multiruns").iterdir()
    commands = [line for line in result.stdout.splitlines() if "tensorboard --logdir" in line]
    assert commands == [f"tensorboard: uv run tensorboard --logdir {sweep}"]
    assert result.stdout.count("logs: ") == 2  # each job still says where its files are
    for job in (p for p in sweep.iterdir() if p.is_dir()):
        assert "gradients at step 0: dL/dw = " in (job / "train.log").read_text()


# --- warnings and errors: one short style on the console, timestamps in train.log ---------------


@contextmanager
def job_logging(cfg, log_file: Path) -> Iterator[None]:
    """train.py's job logging (conf/hydra/default.yaml, as Hydra applies it at a job's start),
    writing ``log_file``; the logging as it was afterwards. Entered in the test itself, so that
    its console handlers write to the test's captured stdout and stderr."""
    conf = OmegaConf.to_container(cfg.hydra.job_logging)
    conf["handlers"]["file"]["filename"] = str(log_file)
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    levels = {name: logging.getLogger(name).level for name in conf.get("loggers", {})}
    logging.config.dictConfig(conf)
    try:
        yield
    finally:
        for handler in root.handlers:
            handler.close()
        root.handlers[:], root.level = saved[0], saved[1]
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


def test_a_warning_prints_as_warning_colon_and_train_log_keeps_its_timestamp(
    make_cfg, tmp_path, capsys
):
    with job_logging(make_cfg(), tmp_path / "train.log"):
        logging.getLogger("backprop_lab.training.build").warning("the loss cannot reach %d", 0)
        console.say("a report line")
        console.say("optimizer.lr must be a number > 0", logging.ERROR)
    out, err = capsys.readouterr()
    assert out == "a report line\n"
    assert err == "warning: the loss cannot reach 0\nerror: optimizer.lr must be a number > 0\n"
    log = (tmp_path / "train.log").read_text().splitlines()
    assert re.match(r"\[[\d :,-]+\]\[backprop_lab.training.build\]\[WARNING\] - the loss", log[0])
    assert log[1].endswith("[backprop_lab][INFO] - a report line")
    assert log[2].endswith("[backprop_lab][ERROR] - optimizer.lr must be a number > 0")


def test_say_prints_the_same_without_hydras_logging(capsys):
    console.say("a report line")
    console.say("careful", logging.WARNING)
    assert capsys.readouterr() == ("a report line\n", "warning: careful\n")


def test_a_user_error_under_job_logging_is_one_line_in_the_console_and_in_train_log(
    make_cfg, tmp_path, capsys
):
    from backprop_lab import cli
    from backprop_lab.errors import ConfigError

    def task(cfg):
        raise ConfigError("optimizer.lr must be a number > 0, got -1")

    with job_logging(make_cfg(), tmp_path / "train.log"), pytest.raises(SystemExit):
        cli.run(task, OmegaConf.create({}))
    assert capsys.readouterr().err == "error: optimizer.lr must be a number > 0, got -1\n"
    assert "[ERROR] - optimizer.lr must be a number > 0" in (tmp_path / "train.log").read_text()


# --- the report and the card's parts --------------------------------------------------------------


def seed002_summary(tmp_path: Path) -> dict:
    return {
        "output_dir": str(tmp_path),
        "predict_at": [[1.0], [2.0], [3.0]],
        "predictions_before": [[0.666100025177002], [0.4156000018119812], [0.16509997844696045]],
        "predictions_after": [[0.8078373670578003], [0.6573866605758667], [0.5069360136985779]],
        "final_loss": 5.387223720550537,
        "final_metrics": {"epoch": 0, "Loss/train": 5.387223720550537},
        "best": {"epoch": 0, "metric": "Loss/train", "value": 5.387223720550537},
        "parameters": {"w": -0.15045100450515747, "b": 0.9582880139350891},
        "first_step": {
            "parameters": {"w": -0.2505000114440918, "b": 0.9165999889373779},
            "gradients": {"w": -10.004899978637695, "b": -4.168799877166748},
        },
        "device": "cpu",
        "epochs": 1,
        "steps": 1,
        "wall_time_s": 0.4,
    }


def test_the_report_tells_a_short_runs_whole_story(tmp_path):
    (tmp_path / "events.out.tfevents.1").touch()
    lines = report(seed002_summary(tmp_path)).splitlines()
    assert lines[:4] == [
        "predict (before training): x=1.0 -> 0.6661, x=2.0 -> 0.4156, x=3.0 -> 0.1651",
        "predict (after training): x=1.0 -> 0.807837, x=2.0 -> 0.657387, x=3.0 -> 0.506936",
        SEED_002_PARAMETERS,
        SEED_002_GRADIENTS,
    ]
    assert "final loss: 5.387223720550537" in lines  # the seed's number, every digit
    assert f"tensorboard: uv run tensorboard --logdir {tmp_path}" in lines
    assert lines[-1] == f"logs: {tmp_path}"


def test_a_sweep_jobs_report_leaves_the_tensorboard_command_to_the_sweep(tmp_path):
    (tmp_path / "events.out.tfevents.1").touch()
    text = report(seed002_summary(tmp_path), tensorboard=False)
    assert "tensorboard" not in text and text.endswith(f"logs: {tmp_path}")


def test_a_report_without_a_first_step_shows_the_parameters_as_they_are(tmp_path):
    summary = {**seed002_summary(tmp_path), "first_step": None}
    lines = report(summary).splitlines()
    assert "parameters: w=-0.150451, b=0.958288" in lines
    assert not any(line.startswith("gradients") for line in lines)


def test_card_tables_have_named_columns_and_paths_are_cut():
    assert table(("a", "b"), [("x|y", "1")]).splitlines() == [
        "| a | b |",
        "|---|---|",
        r"| x\|y | 1 |",
    ]
    assert _path(str(ROOT / "data" / "y_equals_2x.csv")) == "data/y_equals_2x.csv"
    assert _path("/somewhere/else/rows.csv") == ".../rows.csv"
    assert _path("relative/rows.csv") == "relative/rows.csv"
    assert _override("data.train_csv=/home/me/rows.csv") == "data.train_csv=.../rows.csv"
    assert _override("optimizer.lr=0.1") == "optimizer.lr=0.1"
