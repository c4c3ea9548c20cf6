"""The seeds' published numbers, reproduced by `model=X` alone and by `experiment=seed002`
(float32, relative tolerance 1e-5). Figures the seeds print to four decimals are compared at four.
"""

from __future__ import annotations

import pytest
import torch

from backprop_lab.training.build import build

REL = 1e-5


def test_model_quadratic_reproduces_seed004(run):
    summary = run("model=quadratic")
    assert summary["predict_at"] == [[4.0]]
    assert summary["predictions_before"] == [[21.0]]
    assert summary["predictions_after"][0][0] == pytest.approx(8.544171333312988, rel=REL)
    # The loss of the last sample of epoch 99.
    assert summary["final_loss"] == pytest.approx(0.00631808303296566, rel=REL)
    assert (summary["epochs"], summary["steps"]) == (100, 300)


def test_model_linear_reproduces_seed003(run):
    summary = run("model=linear")
    assert summary["predictions_before"] == [[12.0]]
    assert summary["predictions_after"][0][0] == pytest.approx(8.00000286102295, rel=REL)
    assert list(summary["parameters"]) == ["w"]


SEED000_WEIGHTS_AFTER = [0.9865, -0.2037, 0.9719, 0.7178, -0.8628, -2.8459, -1.0866, -1.1112]


def test_model_sigmoid_net_reproduces_seed000_after_100_rounds(run):
    summary = run("model=sigmoid_net")
    params = summary["parameters"]
    assert list(params) == [f"w{i}" for i in range(1, 9)]
    assert [round(params[f"w{i}"], 4) for i in range(1, 9)] == SEED000_WEIGHTS_AFTER
    o1, o2 = summary["predictions_after"][0]
    assert o1 == pytest.approx(0.237477, rel=REL)
    assert o2 == pytest.approx(0.073007, rel=REL)
    # Round 100's loss, computed before its update.
    assert round(summary["final_loss"], 4) == 0.0103


def test_seed000_round_100_outputs_are_those_after_99_updates(run):
    # After 99 updates the network's outputs are those round 100 computes before updating.
    summary = run("model=sigmoid_net", "trainer.max_epochs=99")
    o1, o2 = summary["predictions_after"][0]
    assert (round(o1, 4), round(o2, 4)) == (0.2378, 0.0736)


def test_experiment_seed002_first_gradients_are_the_seeds(make_cfg):
    datamodule, model = build(make_cfg("experiment=seed002"))
    x, y = datamodule.train_xy
    assert len(x) == datamodule.batch_size == 3  # one full batch
    loss, _ = model.objective(model(x), y)
    loss.backward()
    assert round(model.w.grad.item(), 4) == -10.0049
    assert round(model.b.grad.item(), 4) == -4.1688
    outputs = [row[0] for row in model.predict_at([1.0, 2.0, 3.0])]
    assert [round(o, 4) for o in outputs] == [0.6661, 0.4156, 0.1651]


def test_experiment_seed002_one_step_gives_the_seeds_parameters(run):
    summary = run("experiment=seed002")
    assert summary["steps"] == 1
    assert summary["parameters"]["w"] == pytest.approx(-0.150451, rel=REL)
    assert summary["parameters"]["b"] == pytest.approx(0.958288, rel=REL)


def test_float64_training_matches_float32_to_float32_precision(run):
    summary = run("model=quadratic", "trainer.precision=64", out="f64")
    assert summary["precision"] == "64-true"
    assert summary["predictions_after"][0][0] == pytest.approx(8.544171333312988, rel=1e-5)
    assert summary["predictions_after"][0][0] != 8.544171333312988  # really computed in float64


def test_accelerator_auto_trains_on_the_gpu_when_there_is_one_else_the_cpu(run):
    summary = run("model=linear", "trainer.max_epochs=1")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert summary["device"].startswith(expected)
