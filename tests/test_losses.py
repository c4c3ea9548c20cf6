"""The objective J = L + s: data losses, weighted sums, the L2 penalty."""

from __future__ import annotations

import pytest
import torch

from backprop_lab.training.objective import Objective


def test_mse_is_seed000s_half_sum_over_two_outputs():
    o, y = torch.tensor([[0.7, 0.2]]), torch.tensor([[0.23, -0.07]])
    loss, parts = Objective()(o, y)
    assert loss.item() == pytest.approx((0.5 * ((o - y) ** 2).sum()).item())
    assert parts == {}


def test_mae_and_weighted_sum():
    y_hat, y = torch.tensor([[1.0], [2.0]]), torch.tensor([[0.0], [4.0]])
    mse, mae = (1 + 4) / 2, (1 + 2) / 2
    assert Objective({"mae": 1.0})(y_hat, y)[0].item() == pytest.approx(mae)
    loss, parts = Objective({"mse": 1.0, "mae": 0.5})(y_hat, y)
    assert loss.item() == pytest.approx(mse + 0.5 * mae)
    assert parts["mse"].item() == pytest.approx(mse) and parts["mae"].item() == pytest.approx(mae)


def test_l2_penalty_is_half_lambda_squared_norm_logged_apart():
    w1, w2 = torch.tensor([1.0, 2.0]), torch.tensor([[3.0]])
    y_hat, y = torch.tensor([[1.0]]), torch.tensor([[0.0]])
    loss, parts = Objective(l2=0.1)(y_hat, y, [w1, w2])
    assert parts["s"].item() == pytest.approx(0.1 / 2 * (1 + 4 + 9))
    assert parts["L"].item() == pytest.approx(1.0)
    assert loss.item() == pytest.approx(1.0 + 0.7)


def test_l2_gradient_is_lambda_w():
    w = torch.tensor([1.5, -2.0], requires_grad=True)
    loss, _ = Objective(l2=0.2)(torch.zeros(1, 1), torch.zeros(1, 1), [w])
    loss.backward()
    assert torch.allclose(w.grad, 0.2 * w.detach())


def test_unknown_term_lists_the_choices():
    with pytest.raises(ValueError, match=r"huber.*\['mae', 'mse'\]"):
        Objective({"huber": 1.0})
