"""The debug modes (conf/debug/): off unless `debug=` names one, each a Lightning debugging flag
over whatever the seed experiment set, each writing under logs/debug/."""

from __future__ import annotations

import csv
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import lightning.pytorch as pl
import pytest
from omegaconf import OmegaConf

from backprop_lab.config import CONFIG_DIR
from backprop_lab.errors import ConfigError
from backprop_lab.training.build import build_data

from conftest import ROOT

MODES = sorted(p.stem for p in (CONFIG_DIR / "debug").glob("*.yaml"))


def train_cli(*args: str, log_dir: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "train.py"), f"paths.log_dir={log_dir}", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "HYDRA_FULL_ERROR": "0"},
        cwd=log_dir.parent,
        timeout=300,
    )


class Batches(pl.Callback):
    """The training batches' inputs, and the validation and test batches, of each epoch."""

    def __init__(self) -> None:
        self.train: list[tuple[int, object]] = []
        self.val: list[int] = []
        self.test: list[int] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.train.append((trainer.current_epoch, batch[0].detach().clone()))

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        self.val.append(trainer.current_epoch)

    def on_test_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        self.test.append(len(batch[0]))


def train_recording(cfg) -> tuple[dict, Batches]:
    from backprop_lab.training.run import train

    batches = Batches()
    return train(cfg, extra_callbacks=[batches], quiet=True), batches


def n_batches(rows: int, batch_size: int) -> int:
    return math.ceil(rows / batch_size)


def with_test_split(make_cfg, *overrides: str):
    """Synthetic data with a test split held out, where the data config has one."""
    if "test_fraction" not in make_cfg("data=synthetic").data:
        pytest.skip("the data has no test split (data.test_fraction)")
    return make_cfg("model=linear", "data=synthetic", "data.test_fraction=0.2", *overrides)


# --- composition ------------------------------------------------------------------------------


def test_every_mode_is_on_the_help_page():
    assert {"fast_dev_run", "overfit", "limit", "profiler"} <= set(MODES)
    footer = OmegaConf.load(CONFIG_DIR / "hydra" / "help" / "train.yaml").footer
    (line,) = [line for line in footer.splitlines() if line.startswith("Debug modes:")]
    listed = line.removeprefix("Debug modes: debug=").split(" (")[0].split(" | ")
    assert sorted(listed) == MODES


@pytest.mark.parametrize("mode", MODES)
def test_a_debug_run_writes_under_logs_debug(make_cfg, tmp_path, mode):
    cfg = make_cfg("model=quadratic", f"debug={mode}")
    logs = Path(cfg.paths.log_dir)
    assert Path(cfg.hydra.run.dir).parent == logs / "debug" / "runs" / str(cfg.run_name)
    assert Path(cfg.hydra.sweep.dir).parent == logs / "debug" / "multiruns"


def test_without_debug_runs_write_where_they_always_did(make_cfg):
    cfg = make_cfg("model=quadratic")
    logs = Path(cfg.paths.log_dir)
    assert Path(cfg.hydra.run.dir).parent == logs / "runs" / "quadratic"
    assert Path(cfg.hydra.sweep.dir).parent == logs / "multiruns"
    assert cfg.hydra.runtime.choices.debug is None
    for key in ("fast_dev_run", "overfit_batches", "limit_train_batches", "profiler"):
        assert key not in cfg.trainer


def test_a_debug_mode_overrides_the_seed_experiments_trainer(make_cfg):
    seed = make_cfg("model=quadratic")
    debug = make_cfg("model=quadratic", "debug=overfit")
    wanted = OmegaConf.load(CONFIG_DIR / "debug" / "overfit.yaml").trainer.max_epochs
    assert seed.trainer.max_epochs != wanted  # seed 004's 100 epochs
    assert debug.trainer.max_epochs == wanted
    # ... and the command line overrides the debug mode.
    assert (
        make_cfg("model=quadratic", "debug=overfit", "trainer.max_epochs=7").trainer.max_epochs == 7
    )


def test_an_unknown_debug_mode_fails_as_other_groups_do(tmp_path):
    debug = train_cli("debug=foo", log_dir=tmp_path / "logs")
    model = train_cli("model=foo", log_dir=tmp_path / "logs")
    assert debug.returncode == model.returncode != 0
    assert "Traceback" not in debug.stderr
    # The same message as model=foo's, naming the group and its options (Hydra lists them).
    assert "debug/foo" in debug.stderr or "debug=foo" in debug.stderr, debug.stderr
    assert all(mode in debug.stderr for mode in MODES)
    assert len(debug.stderr.splitlines()) == len(model.stderr.splitlines())
    assert not (tmp_path / "logs").exists()


# --- fast_dev_run -----------------------------------------------------------------------------


def test_fast_dev_run_takes_one_step_and_one_validation_batch(make_cfg):
    cfg = make_cfg("model=linear", "data=synthetic", "debug=fast_dev_run")
    summary, batches = train_recording(cfg)
    out = Path(cfg.paths.output_dir)
    assert summary["status"] == "finished"
    assert summary["steps"] == 1 and len(batches.train) == 1
    assert len(batches.val) == 1
    assert "Loss/val" in summary["final_metrics"]
    # Lightning turns checkpoints and loggers off; the project's own files are still written.
    assert not (out / "checkpoints").exists()
    assert not list(out.glob("events.out.tfevents.*"))
    with open(out / "metrics.csv", newline="") as f:
        assert len(list(csv.DictReader(f))) == 1
    assert (out / "summary.json").is_file()


def test_fast_dev_run_tests_one_batch(make_cfg):
    cfg = with_test_split(make_cfg, "debug=fast_dev_run")
    summary, batches = train_recording(cfg)
    assert summary["status"] == "finished"
    assert batches.test == [cfg.data.batch_size]
    assert summary["test"]["rows"] == sum(batches.test)  # the rows tested, not the split's


@pytest.mark.slow
def test_fast_dev_run_on_the_command_line(tmp_path):
    logs = tmp_path / "logs"
    result = train_cli("model=quadratic", "debug=fast_dev_run", log_dir=logs)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert re.search(r"^epochs: 1, steps: 1\b", result.stdout, re.M), result.stdout
    run_dir = Path(re.search(r"^logs: (.+)$", result.stdout, re.M).group(1))
    assert run_dir.parent == logs / "debug" / "runs" / "quadratic"
    assert json.loads((run_dir / "summary.json").read_text())["steps"] == 1
    # Nothing outside logs/debug/: no logs/runs/, no logs/multiruns/, nothing in the cwd.
    assert sorted(p.name for p in logs.iterdir()) == ["debug"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["logs"]
    # The report names only what exists: no checkpoint, no TensorBoard under fast_dev_run.
    assert "checkpoint:" not in result.stdout and "tensorboard:" not in result.stdout
    assert not (run_dir / "checkpoints").exists()


# --- overfit ----------------------------------------------------------------------------------


def test_overfit_fits_the_first_batch_alone(make_cfg):
    cfg = make_cfg("model=quadratic", "debug=overfit")
    x, y = build_data(cfg).train_xy
    cfg.predict_at = [float(x[0, 0])]
    summary, batches = train_recording(cfg)
    epochs, limit = cfg.trainer.max_epochs, cfg.trainer.overfit_batches
    assert summary["status"] == "finished"
    assert summary["epochs"] == epochs
    assert summary["steps"] == epochs * limit == len(batches.train)
    assert all((b == x[:limit]).all() for _, b in batches.train)  # the first row, every epoch
    # Trained on that row alone, the model reproduces it, far better than its first epoch.
    (prediction,) = summary["predictions_after"][0]
    assert prediction == pytest.approx(float(y[0, 0]), abs=1e-3)
    with open(Path(cfg.paths.output_dir) / "metrics.csv", newline="") as f:
        first = float(next(csv.DictReader(f))["Loss/train"])
    assert summary["final_loss"] < first * 1e-3


def test_overfit_serves_the_same_batch_every_epoch_from_shuffled_data(make_cfg):
    # Lightning turns shuffling off only for a torch DataLoader; the project serves its own.
    assert make_cfg("data=synthetic").data.shuffle is True
    cfg = make_cfg("model=linear", "data=synthetic", "debug=overfit", "trainer.max_epochs=4")
    summary, batches = train_recording(cfg)
    assert summary["steps"] == 4 * cfg.trainer.overfit_batches
    epochs = {epoch for epoch, _ in batches.train}
    assert epochs == set(range(4))
    first = batches.train[0][1]
    assert all(b.shape == first.shape and (b == first).all() for _, b in batches.train)
    assert len(batches.val) == 4 * cfg.trainer.overfit_batches  # and the first validation batch


# --- limit ------------------------------------------------------------------------------------


def test_limit_takes_a_fraction_of_each_epochs_batches(make_cfg):
    cfg = make_cfg("model=linear", "data=synthetic", "debug=limit")
    data = build_data(cfg)
    train_batches = n_batches(len(data.train_xy[0]), cfg.data.batch_size)
    val_batches = n_batches(len(data.val_xy[0]), cfg.data.batch_size)
    summary, batches = train_recording(cfg)
    epochs = cfg.trainer.max_epochs
    per_epoch = int(cfg.trainer.limit_train_batches * train_batches)  # Lightning rounds down
    assert 0 < per_epoch < train_batches
    assert summary["epochs"] == epochs
    assert summary["steps"] == epochs * per_epoch == len(batches.train)
    assert len(batches.val) == epochs * int(cfg.trainer.limit_val_batches * val_batches)


def test_limit_takes_a_fraction_of_the_test_batches(make_cfg):
    cfg = with_test_split(make_cfg, "debug=limit")
    data = build_data(cfg)
    test_batches = n_batches(len(data.test_xy[0]), cfg.data.batch_size)
    summary, batches = train_recording(cfg)
    assert summary["status"] == "finished"
    assert len(batches.test) == int(cfg.trainer.limit_test_batches * test_batches) > 0


def test_limit_without_validation_data(make_cfg):
    # run.py tells the Trainer limit_val_batches=0 where there is no validation data: that wins.
    cfg = make_cfg("model=quadratic", "debug=limit")
    rows = len(build_data(cfg).train_xy[0])
    summary, batches = train_recording(cfg)
    per_epoch = int(cfg.trainer.limit_train_batches * n_batches(rows, cfg.data.batch_size))
    assert summary["status"] == "finished"
    assert summary["steps"] == cfg.trainer.max_epochs * per_epoch
    assert batches.val == []


def test_limit_of_a_single_batch_is_an_error_that_says_so(make_cfg):
    from backprop_lab.training.run import train

    cfg = make_cfg("experiment=seed002", "debug=limit")  # one full batch of three rows
    with pytest.raises(ConfigError, match=r"^trainer: .*limit_train_batches"):
        train(cfg, quiet=True)


# --- profiler ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("profiler", "table"),
    [
        (None, "run_training_epoch"),
        ("lightning.pytorch.profilers.AdvancedProfiler", "Profile stats for"),
    ],
)
def test_profiler_writes_its_report_in_the_run_dir(make_cfg, profiler, table):
    chosen = [f"trainer.profiler._target_={profiler}"] if profiler else []
    cfg = make_cfg("model=linear", "debug=profiler", *chosen)
    summary, _ = train_recording(cfg)
    assert summary["status"] == "finished"
    report = Path(cfg.paths.output_dir) / f"fit-{cfg.trainer.profiler.filename}.txt"
    text = report.read_text()
    assert text.startswith("FIT Profiler Report")
    assert table in text


# --- bad values -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides",
    [
        ["debug=limit", "trainer.limit_train_batches=-1"],
        ["debug=limit", "trainer.limit_val_batches=1.5", "data=synthetic"],
        ["debug=overfit", "trainer.overfit_batches=abc"],
        ["debug=overfit", "trainer.overfit_batches=-2"],
        ["debug=fast_dev_run", "trainer.fast_dev_run=-1"],
        ["debug=profiler", "trainer.profiler=bogus"],
    ],
)
def test_a_bad_debug_value_is_a_config_error(make_cfg, overrides):
    from backprop_lab.training.run import train

    cfg = make_cfg("model=linear", *overrides)
    with pytest.raises(ConfigError, match=r"^trainer") as caught:
        train(cfg, quiet=True)
    assert "\n" not in str(caught.value)


@pytest.mark.slow
def test_a_bad_debug_value_ends_in_one_line_on_the_command_line(tmp_path):
    result = train_cli("debug=limit", "trainer.limit_train_batches=-1", log_dir=tmp_path / "logs")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "limit_train_batches" in errors[0], result.stderr
