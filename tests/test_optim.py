"""The default SGD: the seeds' hand update, bit for bit; torch's SGD, to rounding."""

from __future__ import annotations

import pytest
import torch

from backprop_lab.training.optim import SGD


def quadratic_grads(w: torch.Tensor, x: float, y: float) -> None:
    loss = (w[0] * x**2 + w[1] * x + w[2] - y) ** 2
    loss.backward()


def test_matches_the_seeds_hand_update_bit_for_bit():
    hand = torch.tensor([1.0, 1.0, 1.0], requires_grad=True)
    ours = torch.tensor([1.0, 1.0, 1.0], requires_grad=True)
    opt = SGD([ours], lr=0.01)
    for _ in range(20):
        for x, y in ((1.0, 2.0), (2.0, 4.0), (3.0, 6.0)):
            quadratic_grads(hand, x, y)
            hand.data = hand.data - 0.01 * hand.grad.data
            hand.grad.zero_()
            quadratic_grads(ours, x, y)
            opt.step()
            opt.zero_grad()
    assert torch.equal(hand, ours)


@pytest.mark.parametrize(
    "options",
    [{}, {"momentum": 0.9}, {"weight_decay": 0.1}, {"momentum": 0.5, "weight_decay": 0.01}],
)
def test_same_rule_as_torch_sgd(options):
    torch_w = torch.tensor([1.0, -1.0, 0.5], dtype=torch.float64, requires_grad=True)
    ours_w = torch_w.detach().clone().requires_grad_()
    torch_opt = torch.optim.SGD([torch_w], lr=0.01, **options)
    ours_opt = SGD([ours_w], lr=0.01, **options)
    for _ in range(10):
        for w, opt in ((torch_w, torch_opt), (ours_w, ours_opt)):
            quadratic_grads(w, 2.0, 3.0)
            opt.step()
            opt.zero_grad()
    assert torch.allclose(torch_w, ours_w, rtol=1e-12)


def test_rejects_non_positive_lr():
    with pytest.raises(ValueError, match="lr must be > 0"):
        SGD([torch.zeros(1, requires_grad=True)], lr=0.0)
