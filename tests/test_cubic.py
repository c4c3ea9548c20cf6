"""The cubic, the README's worked example of adding a model: its chain rule worked by hand, its
derivation in explain, and `model=cubic` training as a plain PyTorch loop over the same rows.

The checks every model gets (hand against autograd, gradcheck, the gradient check, explain's
chain sums, manual against autograd training) pick it up from models.MODELS and conf/model/.
"""

from __future__ import annotations

import pytest
import torch

from backprop_lab.models import CubicRegression
from backprop_lab.tools.explain import explain, render

Y_EQUALS_2X = ((1.0, 2.0), (2.0, 4.0), (3.0, 6.0))


def test_the_chain_rule_worked_by_hand_at_one_row():
    model = CubicRegression([1.0, 1.0, 1.0, 1.0])
    x, y = torch.tensor([[2.0]]), torch.tensor([[4.0]])
    # y_hat = 8 + 4 + 2 + 1 = 15, dL/dy_hat = 2 * (15 - 4) = 22 under MSE, and
    # dy_hat/dw = (x^3, x^2, x, 1) = (8, 4, 2, 1).
    assert model.hand_gradients((x, y))[3]["w"].tolist() == [176.0, 88.0, 44.0, 22.0]


def test_explain_writes_each_coefficients_power_of_x(make_cfg):
    derivation = explain(make_cfg("model=cubic", config_name="explain"))
    assert [p.name for p in derivation.parameters] == ["w0", "w1", "w2", "w3"]
    text = render(derivation)
    for i, power in enumerate(["x^3", "x^2", "x", "1"]):
        assert f"dy_hat/dw{i} = {power}" in text
    # Step 0's batch is the row x = 1 -> y = 2: y_hat = 4, dL/dy_hat = 4, and every x^k is 1.
    assert derivation.nodes["y_hat"] == [4.0]
    assert [p.by_hand for p in derivation.parameters] == [4.0, 4.0, 4.0, 4.0]


def plain_loop(lr: float, epochs: int) -> tuple[list[float], float]:
    """Per-sample SGD on y = 2x written out in PyTorch: the coefficients, and y_hat at x = 4."""
    w = torch.tensor([1.0, 1.0, 1.0, 1.0])
    for _ in range(epochs):
        for x, y in Y_EQUALS_2X:
            w.requires_grad_()
            ((w[0] * x**3 + w[1] * x**2 + w[2] * x + w[3] - y) ** 2).backward()
            with torch.no_grad():
                w = w - lr * w.grad
    return w.tolist(), (w @ torch.tensor([64.0, 16.0, 4.0, 1.0])).item()


def test_model_cubic_alone_trains_as_a_plain_pytorch_loop(run):
    summary = run("model=cubic")
    w, at_4 = plain_loop(lr=0.001, epochs=100)  # conf/experiment/cubic/y_equals_2x.yaml
    assert list(summary["parameters"]) == ["w0", "w1", "w2", "w3"]
    assert list(summary["parameters"].values()) == pytest.approx(w, rel=1e-5)
    assert summary["predictions_before"] == [[85.0]]  # 64 + 16 + 4 + 1
    assert summary["predictions_after"][0][0] == pytest.approx(at_4, rel=1e-5)
    assert (summary["epochs"], summary["steps"]) == (100, 300)
