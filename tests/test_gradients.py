"""Hand-derived gradients against autograd: gradcheck, random cases, training, the check."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from test_tensorboard import load_events
from torch.func import functional_call

from backprop_lab import models
from backprop_lab.errors import ConfigError, GradientCheckError
from backprop_lab.models import LinearRegression, QuadraticRegression, SigmoidNet
from backprop_lab.training.build import build
from backprop_lab.training.objective import Objective

LOSSES = {
    "mse": Objective({"mse": 1.0}),
    "mae": Objective({"mae": 1.0}),
    "weighted": Objective({"mse": 0.7, "mae": 1.3}),
    "mse+l2": Objective({"mse": 1.0}, l2=0.3),
    "weighted+l2": Objective({"mse": 1.0, "mae": 0.5}, l2=0.05),
}


def make_model(kind: str, bias: bool, values: list[float], objective: Objective):
    v = iter(values)
    if kind == "linear":
        model = LinearRegression(w=next(v), bias=bias, b=next(v), objective=objective)
    elif kind == "quadratic":
        model = QuadraticRegression([next(v), next(v), next(v)], objective=objective)
    else:
        model = SigmoidNet(
            [[next(v), next(v)], [next(v), next(v)]],
            [[next(v), next(v)], [next(v), next(v)]],
            hidden_bias=[next(v), next(v)] if bias else None,
            output_bias=[next(v), next(v)] if bias else None,
            objective=objective,
        )
    return model.double()


MODELS = [
    ("linear", False),
    ("linear", True),
    ("quadratic", False),
    ("sigmoid_net", False),
    ("sigmoid_net", True),
]
finite = st.floats(-2.0, 2.0, allow_nan=False, allow_infinity=False)


@pytest.mark.parametrize(("kind", "bias"), MODELS)
@pytest.mark.parametrize("loss", list(LOSSES))
@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_hand_derived_equals_autograd(kind, bias, loss, data):
    values = data.draw(st.lists(finite, min_size=12, max_size=12))
    rows = data.draw(st.integers(1, 5))
    model = make_model(kind, bias, values, LOSSES[loss])
    x = torch.tensor(
        data.draw(
            st.lists(
                st.lists(finite, min_size=model.in_features, max_size=model.in_features),
                min_size=rows,
                max_size=rows,
            )
        ),
        dtype=torch.float64,
    )
    y = torch.tensor(
        data.draw(
            st.lists(
                st.lists(finite, min_size=model.out_features, max_size=model.out_features),
                min_size=rows,
                max_size=rows,
            )
        ),
        dtype=torch.float64,
    )
    hand = model.hand_gradients((x, y))[3]
    auto = model.autograd_gradients((x, y))
    assert hand.keys() == auto.keys() == model.trainable().keys()
    for name in hand:
        torch.testing.assert_close(hand[name], auto[name], rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize(("kind", "bias"), MODELS)
def test_gradcheck_of_every_forward_pass(kind, bias):
    model = make_model(
        kind, bias, [0.3, -0.2, 0.5, 0.1, -0.4, 0.6, 0.2, -0.1, 0.3, 0.2, -0.5, 0.4], Objective()
    )
    x = torch.rand(
        4, model.in_features, dtype=torch.float64, generator=torch.Generator().manual_seed(0)
    )
    names = list(model.trainable())

    def forward(*params):
        return functional_call(model, dict(zip(names, params, strict=True)), (x,))

    params = tuple(p.detach().clone().requires_grad_() for p in model.trainable().values())
    assert torch.autograd.gradcheck(forward, params)
    assert torch.autograd.gradcheck(model, (x.clone().requires_grad_(),))


@pytest.mark.parametrize("loss", list(LOSSES))
def test_gradcheck_of_every_loss(loss):
    objective = LOSSES[loss]
    # Away from |y_hat - y| = 0, where MAE has its kink.
    y_hat = torch.tensor([[0.3, -1.2], [2.0, 0.7]], dtype=torch.float64, requires_grad=True)
    y = torch.tensor([[0.0, 0.1], [1.0, -0.5]], dtype=torch.float64)
    w = torch.tensor([0.5, -1.5], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: objective(a, y, [b])[0], (y_hat, w))
    # The objective's own derivative by y_hat is autograd's.
    (auto,) = torch.autograd.grad(objective(y_hat, y, [w])[0], y_hat)
    torch.testing.assert_close(objective.grad_output(y_hat.detach(), y), auto)


SEED_RUNS = ["model=quadratic", "model=linear", "model=sigmoid_net", "experiment=seed002"]


@pytest.mark.parametrize("seed_run", SEED_RUNS)
def test_manual_gradients_reproduce_every_seed(run, seed_run):
    auto = run(seed_run, out="autograd")
    manual = run(seed_run, "model.gradients=manual", out="manual")
    for name, value in auto["parameters"].items():
        assert manual["parameters"][name] == pytest.approx(value, rel=1e-6)
    assert manual["predictions_after"][0] == pytest.approx(auto["predictions_after"][0], rel=1e-6)
    assert manual["final_loss"] == pytest.approx(auto["final_loss"], rel=1e-6)


def test_manual_seed004_prints_the_seeds_numbers(run):
    summary = run("model=quadratic", "model.gradients=manual")
    assert summary["predictions_after"][0][0] == pytest.approx(8.544171333312988, rel=1e-6)
    assert summary["final_loss"] == pytest.approx(0.00631808303296566, rel=1e-6)


def test_unknown_gradient_mode(make_cfg):
    with pytest.raises(ConfigError, match=r"model\.gradients must be autograd or manual"):
        build(make_cfg("model.gradients=numeric"))


def test_gradient_check_logs_relative_differences(run):
    summary = run(
        "model=sigmoid_net", "trainer.max_epochs=30", "callbacks.gradient_check.every_n_steps=10"
    )
    events = load_events(summary["output_dir"])
    tags = set(events.Tags()["scalars"])
    assert {f"gradcheck/w{i}" for i in range(1, 9)} <= tags
    checks = events.Scalars("gradcheck/w1")
    assert [e.step for e in checks] == [0, 10, 20]
    assert all(0 <= e.value < 1e-4 for e in checks)


def test_gradient_check_is_off_with_one_override(run):
    summary = run("model=sigmoid_net", "trainer.max_epochs=3", "~callbacks.gradient_check")
    assert not any(
        t.startswith("gradcheck/") for t in load_events(summary["output_dir"]).Tags()["scalars"]
    )


class SeedZeroMistake(SigmoidNet):
    """A derivation with seed 000's slip: in_h where out_h belongs (the post never said which)."""

    def backward_by_hand(self, x, grad_output):
        in_h, out_h, _, out_o = self.layers(x)
        delta_o = grad_output * (1 - out_o) * out_o
        delta_h = (delta_o @ self.W2) * (1 - out_h) * out_h
        return {"W2": delta_o.T @ in_h, "W1": delta_h.T @ x}


@pytest.mark.parametrize("mode", ["autograd", "manual"])
def test_a_wrong_derivation_stops_the_run(run, mode, monkeypatch):
    # A config builds only the models models.MODELS lists: this one joins it for the test.
    monkeypatch.setitem(models.MODELS, f"{__name__}.SeedZeroMistake", SeedZeroMistake)
    with pytest.raises(GradientCheckError) as error:
        run(
            "model=sigmoid_net",
            f"model._target_={__name__}.SeedZeroMistake",
            f"model.gradients={mode}",
        )
    message = str(error.value)
    assert "step 0" in message
    assert "dL/dw5" in message  # w5..w8 feed from the hidden layer: those are wrong
    assert "by hand" in message and "by autograd" in message
    assert "backward_by_hand" in message


def test_a_deliberately_wrong_derivation_really_differs():
    right, wrong = SigmoidNet(), SeedZeroMistake()
    batch = (torch.tensor([[0.5, 0.3]]), torch.tensor([[0.23, -0.07]]))
    assert not torch.allclose(
        wrong.hand_gradients(batch)[3]["W2"], right.autograd_gradients(batch)["W2"]
    )
    torch.testing.assert_close(
        right.hand_gradients(batch)[3]["W2"], right.autograd_gradients(batch)["W2"]
    )
