"""The models' math and parameter naming."""

from __future__ import annotations

import pytest
import torch

from backprop_lab.models import LinearRegression, QuadraticRegression, SigmoidNet
from backprop_lab.training.build import build

from conftest import ROOT


def test_sigmoid_net_follows_seed000s_equations():
    w = dict(w1=0.2, w2=-0.4, w3=0.5, w4=0.6, w5=0.1, w6=-0.5, w7=-0.3, w8=0.8)
    net = SigmoidNet(
        [[w["w1"], w["w3"]], [w["w2"], w["w4"]]], [[w["w5"], w["w7"]], [w["w6"], w["w8"]]]
    )
    assert {k: round(v, 6) for k, v in net.scalar_values().items()} == w
    x1, x2 = 0.5, 0.3
    s = torch.sigmoid
    h1 = s(torch.tensor(w["w1"] * x1 + w["w3"] * x2))
    h2 = s(torch.tensor(w["w2"] * x1 + w["w4"] * x2))
    o1 = s(w["w5"] * h1 + w["w7"] * h2)
    o2 = s(w["w6"] * h1 + w["w8"] * h2)
    out = net(torch.tensor([[x1, x2]]))
    assert out[0].tolist() == pytest.approx([o1.item(), o2.item()], rel=1e-6)


def test_sigmoid_net_biases_train_or_stay_fixed():
    kwargs = dict(hidden_bias=[0.35, 0.35], output_bias=[0.6, 0.6])
    trained, fixed = SigmoidNet(**kwargs), SigmoidNet(**kwargs, train_bias=False)
    assert "b_h1" in trained.scalar_values() and "b_o2" in fixed.scalar_values()
    for net in (trained, fixed):
        opt = net.configure_optimizers()
        loss, _ = net.objective(net(torch.tensor([[0.5, 0.3]])), torch.tensor([[0.23, 0.07]]))
        loss.backward()
        opt.step()
    assert trained.b1.tolist() != [0.35, 0.35]
    assert fixed.b1.tolist() == pytest.approx([0.35, 0.35]) and fixed.b2.tolist() == pytest.approx(
        [0.6, 0.6]
    )
    assert fixed.W1.tolist() != SigmoidNet().W1.tolist()


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"output_weight": [[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]]}, "one column per hidden unit"),
        ({"hidden_weight": [[1.0, 2.0], [3.0]]}, "rectangular"),
        ({"hidden_bias": [0.1]}, "needs 2 value"),
    ],
)
def test_sigmoid_net_shape_errors(kwargs, words):
    with pytest.raises(ValueError, match=words):
        SigmoidNet(**kwargs)


def test_linear_with_and_without_bias():
    assert LinearRegression(w=2.0)(torch.tensor([[3.0]])).item() == 6.0
    with_bias = LinearRegression(w=2.0, bias=True, b=0.5)
    assert with_bias(torch.tensor([[3.0]])).item() == 6.5
    assert list(with_bias.scalar_values()) == ["w", "b"]
    assert [p.shape for p in with_bias.penalised_weights()] == [torch.Size([1])]


def test_quadratic_needs_three_coefficients():
    assert QuadraticRegression([1.0, 2.0, 3.0])(torch.tensor([[2.0]])).item() == 4 + 4 + 3
    with pytest.raises(ValueError, match="3 coefficients"):
        QuadraticRegression([1.0, 2.0])


def test_any_model_trains_on_any_csv_whose_columns_fit(run):
    csv = ROOT / "data" / "seed000_sigmoid.csv"
    summary = run(
        "model=linear",
        f"data.train_csv={csv}",
        "data.x_columns=[x2]",
        "data.y_columns=[y1]",
        "trainer.max_epochs=2",
        "predict_at=[0.3]",
    )
    assert summary["steps"] == 2


def test_columns_that_do_not_fit_the_model(make_cfg):
    with pytest.raises(ValueError, match=r"1 input and 1 target.*takes 2 and gives 2"):
        build(make_cfg("model=sigmoid_net", "data=y_equals_2x"))


def test_predict_inputs_must_fit():
    with pytest.raises(ValueError, match="2 feature"):
        SigmoidNet().predict_at([[1.0, 2.0, 3.0]])
