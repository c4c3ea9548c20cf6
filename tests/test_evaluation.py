"""The test split (data.test_fraction, data.test_csv): trainer.test after fit, on the best
checkpoint; and eval.py, any checkpoint on any CSV with fitting columns."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torchmetrics.functional import mean_absolute_error, mean_squared_error, r2_score

from backprop_lab.errors import BackpropLabError, ConfigError
from backprop_lab.tools.evaluate import evaluate
from backprop_lab.tools.predict import load_model
from backprop_lab.training.build import build_data
from backprop_lab.training.summary import report

from conftest import cli

SPLIT = ("model=linear", "data=synthetic", "data.test_fraction=0.25", "trainer.max_epochs=4")


def metrics_of(model, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """The test metrics computed apart from the project: torchmetrics' functional forms."""
    with torch.no_grad():
        y_hat = model(x.to(next(model.parameters()).dtype))
    return {
        "Loss/test": float(torch.nn.functional.mse_loss(y_hat, y)),
        "test/mse": float(mean_squared_error(y_hat, y)),
        "test/mae": float(mean_absolute_error(y_hat, y)),
        "test/r2": float(r2_score(y_hat, y)),
    }


def write_csv(path: Path, header: str, rows) -> Path:
    path.write_text(header + "\n" + "".join(",".join(map(str, r)) + "\n" for r in rows))
    return path


def test_fractions_split_the_rows_into_disjoint_train_val_and_test_sets(make_cfg):
    cfg = make_cfg(*SPLIT, "data.val_fraction=0.2", "data.n=1000")
    data = build_data(cfg)
    assert data.train_xy is not None and data.val_xy is not None and data.test_xy is not None
    sizes = [len(split[0]) for split in (data.train_xy, data.val_xy, data.test_xy)]
    assert sizes == [550, 200, 250]  # both fractions are of the whole 1000 rows
    x = torch.cat([data.train_xy[0], data.val_xy[0], data.test_xy[0]]).flatten()
    assert len(set(x.tolist())) == 1000  # every row in exactly one split
    again = build_data(make_cfg(*SPLIT, "data.val_fraction=0.2", "data.n=1000"))
    assert again.test_xy is not None and torch.equal(again.test_xy[0], data.test_xy[0])
    other_seed = build_data(make_cfg(*SPLIT, "data.val_fraction=0.2", "data.n=1000", "seed=1"))
    assert other_seed.test_xy is not None
    assert not torch.equal(other_seed.test_xy[0], data.test_xy[0])


def test_without_a_test_split_the_training_and_validation_rows_are_as_before(make_cfg):
    with_key = build_data(make_cfg("model=linear", "data=synthetic", "data.test_fraction=0"))
    plain = build_data(make_cfg("model=linear", "data=synthetic"))
    assert with_key.test_xy is None and plain.test_xy is None
    assert with_key.val_xy is not None and plain.val_xy is not None
    assert torch.equal(with_key.train_xy[0], plain.train_xy[0])
    assert torch.equal(with_key.val_xy[0], plain.val_xy[0])


def test_the_run_tests_the_best_checkpoint_and_reports_every_metric(run, make_cfg):
    summary = run(*SPLIT)
    test = summary["test"]
    out = Path(summary["output_dir"])
    assert test["checkpoint"] == str(out / "checkpoints" / "best.ckpt")
    assert test["epoch"] == summary["best"]["epoch"]
    assert test["rows"] == 250
    # The metrics are those of the best epoch's weights on the held-out rows, computed apart.
    model, _, _ = load_model(test["checkpoint"], device="cpu")
    datamodule = build_data(make_cfg(*SPLIT))
    expected = metrics_of(model, *datamodule.test_xy)
    assert test["metrics"].keys() == expected.keys()
    for name, value in expected.items():
        assert test["metrics"][name] == pytest.approx(value, rel=1e-5), name
    # ... logged to TensorBoard at the last training step, and in the report, a line each.
    events = EventAccumulator(str(out))
    events.Reload()
    for name, value in expected.items():
        (scalar,) = events.Scalars(name)
        assert scalar.step == summary["steps"]
        assert scalar.value == pytest.approx(value, rel=1e-5)
    text = report(summary)
    assert f"test (250 rows, best.ckpt of epoch {test['epoch']}):" in text
    for name in expected:
        assert f"  {name}: {test['metrics'][name]:.6g}" in text.splitlines()


def test_the_trained_model_is_left_as_fit_left_it(run):
    # "Best" is the largest training loss here: epoch 0's, so the tested weights are not the last.
    summary = run(*SPLIT, "trainer.max_epochs=6", "objective.mode=max")
    assert summary["test"]["epoch"] == 0
    last, _, _ = load_model(Path(summary["output_dir"]) / "checkpoints" / "last.ckpt", "cpu")
    # ... yet the summary's parameters and history are the last epoch's, not the tested ones.
    assert summary["parameters"] == pytest.approx(last.scalar_values(), rel=1e-7)
    assert summary["final_metrics"]["epoch"] == 5 and summary["epochs"] == 6


def test_without_a_best_checkpoint_the_trained_weights_are_tested(run, make_cfg):
    summary = run(*SPLIT, "~callbacks.best_checkpoint")
    test = summary["test"]
    assert test["checkpoint"] is None and test["epoch"] == summary["epochs"] - 1
    model, _, _ = load_model(Path(summary["output_dir"]) / "checkpoints" / "last.ckpt", "cpu")
    expected = metrics_of(model, *build_data(make_cfg(*SPLIT)).test_xy)
    assert test["metrics"] == pytest.approx(expected, rel=1e-5)
    assert f"test (250 rows, the weights after epoch {test['epoch']}):" in report(summary)


def test_a_test_csv_is_tested_whole(run, tmp_path):
    rows = [(x / 10, 2 * x / 10 + 0.05) for x in range(-10, 11)]
    test_csv = write_csv(tmp_path / "held_out.csv", "x,y", rows)
    summary = run("model=linear", f"data.test_csv={test_csv}", "trainer.max_epochs=3")
    test = summary["test"]
    assert test["rows"] == 21
    model, _, _ = load_model(test["checkpoint"], device="cpu")
    x = torch.tensor([[r[0]] for r in rows])
    y = torch.tensor([[r[1]] for r in rows])
    assert test["metrics"] == pytest.approx(metrics_of(model, x, y), rel=1e-5)


def test_no_test_split_no_test(run):
    summary = run("model=quadratic")  # seed 004, unchanged
    assert summary["test"] is None
    assert "test (" not in report(summary)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.test_fraction=1.5", "data.test_fraction must be a number in [0, 1), got 1.5"),
        ("data.test_fraction=-0.1", "data.test_fraction must be a number in [0, 1)"),
        ("data.test_fraction=abc", "data.test_fraction must be a number in [0, 1)"),
    ],
)
def test_a_bad_test_fraction_is_one_line(make_cfg, override, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace(")", r"\)")):
        build_data(make_cfg("model=linear", "data=synthetic", override))


def test_fractions_that_leave_no_training_rows_are_one_line(make_cfg):
    cfg = make_cfg(
        "model=linear", "data=synthetic", "data.val_fraction=0.5", "data.test_fraction=0.5"
    )
    with pytest.raises(BackpropLabError, match="leave no rows for training"):
        build_data(cfg)


def test_a_test_csv_without_the_columns_stops_the_run_before_training(tmp_path, run):
    bad = write_csv(tmp_path / "bad.csv", "u,v", [(1, 2)])
    with pytest.raises(BackpropLabError, match=r"bad.csv has no column\(s\) \['x', 'y'\]"):
        run("model=linear", f"data.test_csv={bad}")
    assert not (tmp_path / "run" / "checkpoints").exists()  # nothing trained


# --- eval.py -------------------------------------------------------------------------------


def test_evaluate_gives_the_runs_own_test_metrics(run):
    summary = run(*SPLIT)
    found = evaluate(summary["test"]["checkpoint"], device="cpu")  # the run's own test rows
    assert found.rows == 250 and found.test_csv is None
    assert found.metrics == pytest.approx(summary["test"]["metrics"], rel=1e-6)


def test_evaluate_a_csv_with_other_column_names(run, tmp_path):
    summary = run(*SPLIT)
    rows = [(x / 4, -x / 4) for x in range(8)]
    other = write_csv(tmp_path / "other.csv", "u,v", rows)
    found = evaluate(
        summary["test"]["checkpoint"], other, x_columns=["u"], y_columns=["v"], device="cpu"
    )
    model, _, _ = load_model(summary["test"]["checkpoint"], device="cpu")
    x, y = torch.tensor([[r[0]] for r in rows]), torch.tensor([[r[1]] for r in rows])
    assert found.rows == 8
    assert found.metrics == pytest.approx(metrics_of(model, x, y), rel=1e-5)


@pytest.mark.slow
def test_eval_py_prints_the_metrics_a_line_each_and_refuses_csvs_that_do_not_fit(tmp_path):
    logs = tmp_path / "logs"
    trained = cli("train.py", *SPLIT, f"paths.log_dir={logs}", cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr
    summary = json.loads(next(logs.glob("runs/linear/*/summary.json")).read_text())
    held_out = write_csv(tmp_path / "t.csv", "x,y", [(x / 5, 2 * x / 5) for x in range(-5, 6)])

    done = cli("eval.py", "ckpt_path=best", f"paths.log_dir={logs}", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    for name, value in summary["test"]["metrics"].items():
        assert f"{name}: {value:.6g}" in lines
    assert done.stderr == ""

    on_csv = cli(
        "eval.py",
        "ckpt_path=last",
        f"data.test_csv={held_out}",
        f"paths.log_dir={logs}",
        cwd=tmp_path,
    )
    assert on_csv.returncode == 0, on_csv.stderr
    assert f"test data: {held_out} (11 rows)" in on_csv.stdout.splitlines()

    bad = write_csv(tmp_path / "bad.csv", "a,b", [(1, 2)])
    for args, message in [
        (("ckpt_path=last", f"data.test_csv={bad}"), "error: test file"),
        (("ckpt_path=last", f"data.test_csv={tmp_path / 'gone.csv'}"), "check data.test_csv"),
        (("ckpt_path=last", f"data.test_csv={held_out}", "data.x_columns=[x,y]"), "names 2"),
        (("ckpt_path=nowhere.ckpt",), "checkpoint nowhere.ckpt does not exist"),
        (("ckpt_path=last", "data.batch_size=0"), "data.batch_size must be a whole number"),
    ]:
        refused = cli("eval.py", f"paths.log_dir={logs}", *args, cwd=tmp_path)
        assert refused.returncode == 1, refused.stdout
        assert refused.stderr.startswith("error: ") and message in refused.stderr
        assert len(refused.stderr.strip().splitlines()) <= 2, refused.stderr
        assert "Traceback" not in refused.stderr


def card_of(run_dir: Path) -> str:
    events = EventAccumulator(str(run_dir), size_guidance={"tensors": 0})
    events.Reload()
    (card,) = events.Tensors("card/text_summary")
    return card.tensor_proto.string_val[0].decode()


def test_the_card_ends_with_the_test(run):
    summary = run(*SPLIT)
    card = card_of(Path(summary["output_dir"]))
    table = card.split("**test** after training (250 rows)\n\n", 1)[1]
    assert table.startswith("| metric | value |\n|---|---|\n")
    for name, value in summary["test"]["metrics"].items():
        assert f"| {name} | {value:.6g} |" in table


@pytest.mark.slow
def test_a_sweeps_table_has_each_jobs_test_metrics(tmp_path):
    swept = cli(
        "train.py",
        "-m",
        *SPLIT,
        "optimizer.lr=0.01,0.1",
        "trainer.enable_progress_bar=false",
        f"paths.log_dir={tmp_path / 'logs'}",
        cwd=tmp_path,
    )
    assert swept.returncode == 0, swept.stderr
    (sweep,) = (tmp_path / "logs" / "multiruns").iterdir()
    with (sweep / "summary.csv").open() as f:
        rows = {row["job"]: row for row in csv.DictReader(f)}
    assert len(rows) == 2
    for job, row in rows.items():
        test = json.loads((sweep / job / "summary.json").read_text())["test"]
        for name, value in test["metrics"].items():
            assert float(row[name]) == pytest.approx(value, rel=1e-12), (job, name)


def test_the_hparams_tab_lists_the_test_loss_beside_the_training_loss(run):
    from tensorboard.plugins.hparams import plugin_data_pb2

    summary = run(*SPLIT)
    events = EventAccumulator(summary["output_dir"])
    events.Reload()
    content = events.PluginTagToContent("hparams")["_hparams_/experiment"]
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content).experiment
    tags = [info.name.tag for info in experiment.metric_infos]
    assert tags == ["Loss/train", "Loss/val", "Loss/test"]
    assert events.Scalars("Loss/test")  # the value the tab shows for it
