"""Hand-derived gradients against autograd: gradcheck, random cases, training, the check."""

from __future__ import annotations

from collections.abc import Iterable
from itertools import cycle

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from test_tensorboard import load_events
from torch.func import functional_call

from backprop_lab import models
from backprop_lab.errors import ConfigError, GradientCheckError
from backprop_lab.models import LinearRegression, SeedModel, SigmoidNet
from backprop_lab.training.build import build
from backprop_lab.training.objective import Objective

from conftest import ROOT

DTYPE = torch.float64

LOSSES = {
    "mse": Objective({"mse": 1.0}),
    "mae": Objective({"mae": 1.0}),
    "weighted": Objective({"mse": 0.7, "mae": 1.3}),
    "mse+l2": Objective({"mse": 1.0}, l2=0.3),
    "weighted+l2": Objective({"mse": 1.0, "mae": 0.5}, l2=0.05),
}


#: Every model of the allow-list as it builds by default, and those with optional parts with
#: them: a model added to models.MODELS is checked here with no edit.
VARIANTS: dict[str, tuple[type[SeedModel], dict]] = {
    **{cls.__name__: (cls, {}) for cls in models.MODELS.values()},
    "LinearRegression(bias)": (LinearRegression, {"bias": True}),
    "SigmoidNet(biases)": (SigmoidNet, {"hidden_bias": [0.0, 0.0], "output_bias": [0.0, 0.0]}),
}
#: conf/model/*.yaml: `model=<name>` alone runs each (a seed's setup where it has one).
MODEL_CONFIGS = sorted(p.stem for p in (ROOT / "conf" / "model").glob("*.yaml"))
finite = st.floats(-2.0, 2.0, allow_nan=False, allow_infinity=False)


def make_model(variant: str, objective: Objective) -> SeedModel:
    cls, kwargs = VARIANTS[variant]
    return cls(**kwargs, objective=objective).double()


def set_parameters(model: SeedModel, values: Iterable[float]) -> SeedModel:
    """The model's trainable parameters, in order, filled from ``values``."""
    v = iter(values)
    with torch.no_grad():
        for p in model.trainable().values():
            p.copy_(torch.tensor([next(v) for _ in range(p.numel())], dtype=p.dtype).view(p.shape))
    return model


def size(model: SeedModel) -> int:
    return sum(p.numel() for p in model.trainable().values())


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("loss", list(LOSSES))
@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_hand_derived_equals_autograd(variant, loss, data):
    model = make_model(variant, LOSSES[loss])
    set_parameters(model, data.draw(st.lists(finite, min_size=size(model), max_size=size(model))))
    rows = data.draw(st.integers(1, 5))

    def table(width: int) -> torch.Tensor:
        row = st.lists(finite, min_size=width, max_size=width)
        return torch.tensor(data.draw(st.lists(row, min_size=rows, max_size=rows)), dtype=DTYPE)

    x, y = table(model.in_features), table(model.out_features)
    hand = model.hand_gradients((x, y))[3]
    auto = model.autograd_gradients((x, y))
    assert hand.keys() == auto.keys() == model.trainable().keys()
    for name in hand:
        torch.testing.assert_close(hand[name], auto[name], rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_gradcheck_of_every_forward_pass(variant):
    model = make_model(variant, Objective())
    set_parameters(model, cycle([0.3, -0.2, 0.5, 0.1, -0.4, 0.6, 0.2, -0.1, 0.3, 0.2, -0.5, 0.4]))
    x = torch.rand(4, model.in_features, dtype=DTYPE, generator=torch.Generator().manual_seed(0))
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


@pytest.mark.slow
@pytest.mark.parametrize("seed_run", [*(f"model={m}" for m in MODEL_CONFIGS), "experiment=seed002"])
def test_manual_gradients_train_as_autograd_does_for_every_model(run, seed_run):
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


def test_an_unknown_gradient_mode_is_refused(make_cfg):
    with pytest.raises(ConfigError, match=r"model\.gradients must be autograd or manual"):
        build(make_cfg("model.gradients=numeric"))


@pytest.mark.parametrize("model", MODEL_CONFIGS)
def test_gradient_check_logs_one_signal_per_model_from_step_0(run, model):
    summary = run(
        f"model={model}", "+trainer.max_steps=30", "callbacks.gradient_check.every_n_steps=10"
    )
    events = load_events(summary["output_dir"])
    checks = [t for t in events.Tags()["scalars"] if t.startswith("gradcheck/")]
    assert checks == [f"gradcheck/{model}"]  # one chart; the per-parameter detail only on failure
    assert [e.step for e in events.Scalars(f"gradcheck/{model}")] == [0, 10, 20]
    assert all(0 <= e.value < 1e-4 for e in events.Scalars(f"gradcheck/{model}"))


def test_gradient_check_samples_about_25_times_a_run_by_default(run):
    summary = run("model=sigmoid_net")  # seed 000: 100 rounds
    steps = [e.step for e in load_events(summary["output_dir"]).Scalars("gradcheck/sigmoid_net")]
    assert steps == list(range(0, 100, 4))


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
def test_a_wrong_derivation_stops_the_run(run, mode, monkeypatch, tmp_path):
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
    # the failing step's detail, parameter by parameter, beside the one signal
    events = load_events(str(tmp_path / "run"))
    detail = {t for t in events.Tags()["scalars"] if t.startswith("gradcheck/sigmoid_net/")}
    assert detail == {f"gradcheck/sigmoid_net/w{i}" for i in range(1, 9)}
    assert events.Scalars("gradcheck/sigmoid_net/w5")[0].value > 1e-4
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
