"""predict.py: a trained checkpoint's predictions, from the command line and in-process."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from backprop_lab.errors import BackpropLabError
from backprop_lab.tools.predict import predict, render, write_csv

from conftest import ROOT

SEED_004_AT_4 = 8.544171333312988


def predict_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "predict.py"), *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
        env={**os.environ, "HYDRA_FULL_ERROR": "0"},
    )


@pytest.fixture
def seed004(run) -> Path:
    """The seed 004 run (model=quadratic) and its checkpoint."""
    summary = run("model=quadratic", out="logs/runs/quadratic/seed004")
    return Path(summary["output_dir"]) / "checkpoints" / "last.ckpt"


@pytest.mark.slow
def test_predict_cli_prints_seed_004s_prediction(seed004, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    result = predict_cli(f"ckpt_path={seed004}", "x=[4.0]", cwd=work)
    assert result.returncode == 0, result.stderr
    assert f"x=4.0 -> {SEED_004_AT_4}" in result.stdout.splitlines()
    assert "8.544171" in result.stdout
    assert f"checkpoint: {seed004} (QuadraticRegression after 300 steps)" in result.stdout
    assert "device: cpu" in result.stdout or "device: cuda" in result.stdout
    assert list(work.iterdir()) == []  # predict writes nothing it was not asked to


@pytest.mark.slow
def test_predict_cli_reads_and_writes_csv(seed004, tmp_path):
    inputs = tmp_path / "inputs.csv"
    inputs.write_text("id,x\na,1\nb,2.5\nc,4\n")
    output = tmp_path / "out" / "predictions.csv"
    result = predict_cli(
        f"ckpt_path={seed004.parent.parent}",  # the run dir works too
        f"input_csv={inputs}",
        f"output_csv={output}",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    with output.open() as f:
        rows = list(csv.DictReader(f))
    assert [r["id"] for r in rows] == ["a", "b", "c"]  # every input column is kept
    assert list(rows[0]) == ["id", "x", "y_pred"]
    assert float(rows[2]["y_pred"]) == SEED_004_AT_4
    assert f"predictions: {output}" in result.stdout


@pytest.mark.slow
def test_predict_cli_errors_are_one_line_without_traceback(tmp_path):
    result = predict_cli(f"ckpt_path={tmp_path / 'missing.ckpt'}", "x=[4.0]", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.startswith(f"error: checkpoint {tmp_path / 'missing.ckpt'} does not exist")
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr and result.stdout == ""


# --- in-process -----------------------------------------------------------------------------------
def test_predict_defaults_to_the_runs_own_inputs_and_last_to_the_newest_run(seed004, tmp_path):
    predictions = predict("last", runs_dir=tmp_path / "logs" / "runs")
    assert predictions.checkpoint == seed004
    assert predictions.inputs == [[4.0]] and predictions.outputs == [[SEED_004_AT_4]]
    assert predictions.device == ("cuda:0" if torch.cuda.is_available() else "cpu")


def test_predict_rebuilds_a_two_input_model_and_a_float64_run(run):
    net = run("model=sigmoid_net", "trainer.max_epochs=5", out="net")
    ckpt = Path(net["output_dir"]) / "checkpoints" / "last.ckpt"
    assert predict(ckpt, x=[[0.5, 0.3]], device="cpu").outputs == net["predictions_after"]
    assert predict(ckpt, x=[0.5, 0.3], device="cpu").outputs == net["predictions_after"]

    wide = run("model=quadratic", "trainer.precision=64", "trainer.max_epochs=5", out="f64")
    ckpt = Path(wide["output_dir"]) / "checkpoints" / "last.ckpt"
    assert predict(ckpt, x=[4.0], device="cpu").outputs == wide["predictions_after"]


def test_write_csv_from_x_names_the_columns_after_the_runs_data(seed004, tmp_path):
    predictions = predict(seed004, x=[1.0, 4.0])
    path = write_csv(predictions, tmp_path / "p.csv")
    assert path.read_text().splitlines() == [
        "x,y_pred",
        "1.0,2.1584129333496094",
        f"4.0,{SEED_004_AT_4}",
    ]
    shown = render(predictions, show=1, written=path)
    assert "x=1.0 -> 2.1584129333496094" in shown and f"... 1 more row(s) in {path}" in shown


def test_user_errors_name_the_problem_and_the_fix(seed004, tmp_path):
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(BackpropLabError, match=r"garbage.ckpt is not a"):
        predict(garbage)

    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {"w": torch.ones(3)}}, foreign)
    with pytest.raises(BackpropLabError, match=r"holds no run_config.*Train with train.py"):
        predict(foreign)

    with pytest.raises(BackpropLabError, match=r"is a directory without checkpoints/last.ckpt"):
        predict(tmp_path)
    with pytest.raises(BackpropLabError, match=r"no checkpoint given: pass ckpt_path="):
        predict(None)
    with pytest.raises(BackpropLabError, match=r"ckpt_path=last: no run under"):
        predict("last", runs_dir=tmp_path / "nothing")

    with pytest.raises(BackpropLabError, match=r"inputs must be numbers: .*got 'four'"):
        predict(seed004, x="four")
    with pytest.raises(BackpropLabError, match=r"takes 1 input feature\(s\) per row.*\[1.0, 2.0\]"):
        predict(seed004, x=[[1.0, 2.0]])

    no_x = tmp_path / "no_x.csv"
    no_x.write_text("a,b\n1,2\n")
    with pytest.raises(BackpropLabError, match=r"has no column\(s\) \['x'\].*columns=\[\.\.\.\]"):
        predict(seed004, input_csv=no_x)
    # ... unless told which column is the input
    assert predict(seed004, input_csv=no_x, columns=["b"]).inputs == [[2.0]]

    bad_cell = tmp_path / "bad.csv"
    bad_cell.write_text("x\n1\nfour\n")
    with pytest.raises(BackpropLabError, match=r"row 3, column 'x': 'four' is not a number"):
        predict(seed004, input_csv=bad_cell)

    with pytest.raises(BackpropLabError, match=r"either as x=\[\.\.\.\] or as input_csv"):
        predict(seed004, x=[4.0], input_csv=bad_cell)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_asking_for_a_gpu_that_is_not_there(seed004):
    with pytest.raises(BackpropLabError, match=r"device=cuda, but torch sees no CUDA GPU"):
        predict(seed004, device="cuda")
