"""trainer.precision=64 trains in float64 from the config's own decimals: a bias of 0.35 is the
float64 nearest 0.35, not a float32 widened (0.3499999940395355), and a run follows an
independent float64 recomputation of seed 000's SGD steps to 1e-12."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from backprop_lab.training.build import build

BIASES = ("model=sigmoid_net", "model.hidden_bias=[0.35,0.35]", "model.output_bias=[0.6,0.6]")
FLOAT64 = (*BIASES, "trainer.precision=64")
#: Only the training: 1,000 epochs of one step take a few seconds.
BARE = ("logger=none", "callbacks=none", "+trainer.enable_checkpointing=false")

# Seed 000, written out here rather than read from the project: its one sample, initial values
# and learning rate (test_the_recomputation_starts_where_the_run_does checks the config agrees).
X = np.array([0.5, 0.3])
Y = np.array([0.23, -0.07])
W1 = np.array([[0.2, 0.5], [-0.4, 0.6]])  # a row per hidden unit, a column per input
W2 = np.array([[0.1, -0.3], [-0.5, 0.8]])  # a row per output, a column per hidden unit
B1 = np.array([0.35, 0.35])
B2 = np.array([0.6, 0.6])
LR = 1.0


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def forward(w1, w2, b1, b2) -> tuple[np.ndarray, np.ndarray]:
    """(out_h, out_o) at seed 000's sample."""
    h = sigmoid(w1 @ X + b1)
    return h, sigmoid(w2 @ h + b2)


def sgd(steps: int) -> tuple[dict[str, float], float, np.ndarray]:
    """The parameters by seed name after ``steps`` SGD steps, the last step's loss, and the
    predictions after them, by the chain rule in float64 NumPy."""
    w1, w2, b1, b2 = W1.copy(), W2.copy(), B1.copy(), B2.copy()
    loss = float("nan")
    for _ in range(steps):
        h, o = forward(w1, w2, b1, b2)
        loss = float(np.mean((o - Y) ** 2))  # the seed's loss: MSE over its two outputs
        grad_o = 2 * (o - Y) / len(Y)  # dL/do
        delta_o = grad_o * o * (1 - o)  # dL/din_o
        delta_h = (w2.T @ delta_o) * h * (1 - h)  # dL/din_h: through both outputs
        w2 = w2 - LR * np.outer(delta_o, h)
        b2 = b2 - LR * delta_o
        w1 = w1 - LR * np.outer(delta_h, X)
        b1 = b1 - LR * delta_h
    # Seed 000's names: w1..w4 are W1 read column by column, w5..w8 likewise W2.
    weights = np.concatenate([w1.T.reshape(-1), w2.T.reshape(-1)])
    names = {f"w{i + 1}": float(w) for i, w in enumerate(weights)}
    names.update({f"b_h{i + 1}": float(b) for i, b in enumerate(b1)})
    names.update({f"b_o{i + 1}": float(b) for i, b in enumerate(b2)})
    return names, loss, forward(w1, w2, b1, b2)[1]


def test_the_recomputation_starts_where_the_run_does(make_cfg):
    cfg = make_cfg(*FLOAT64)
    assert cfg.model.hidden_weight == W1.tolist() and cfg.model.output_weight == W2.tolist()
    assert cfg.optimizer.lr == LR and dict(cfg.loss.terms) == {"mse": 1.0} and not cfg.loss.l2
    datamodule, _ = build(cfg)
    x, y = datamodule.train_xy
    assert x.tolist() == [X.tolist()] and y.tolist() == [Y.tolist()]


def test_a_bias_of_035_is_035_in_float64(make_cfg, run):
    _, model = build(make_cfg(*FLOAT64))
    assert {p.dtype for p in model.parameters()} == {torch.float64}
    assert model.b1.tolist() == [0.35, 0.35] and model.b2.tolist() == [0.6, 0.6]
    assert model.W1.tolist() == W1.tolist()

    fixed = run(*FLOAT64, "model.train_bias=false", "trainer.max_epochs=2", *BARE)
    assert [fixed["parameters"][k] for k in ("b_h1", "b_h2", "b_o1", "b_o2")] == [
        0.35,
        0.35,
        0.6,
        0.6,
    ]
    # Before training, at seed 000's input: the float64 model's outputs, where a float32 one's
    # would be ~1e-8 away.
    (before,) = fixed["predictions_before"]
    assert before == pytest.approx(forward(W1, W2, B1, B2)[1].tolist(), rel=0, abs=1e-15)


@pytest.mark.parametrize("steps", [1, 1000])
def test_a_float64_run_is_the_chain_rule_in_float64(run, steps):
    summary = run(*FLOAT64, f"trainer.max_epochs={steps}", *BARE)  # one row: a step an epoch
    assert summary["steps"] == steps
    parameters, loss, after = sgd(steps)
    assert summary["parameters"] == pytest.approx(parameters, rel=0, abs=1e-12)
    assert summary["final_loss"] == pytest.approx(loss, rel=0, abs=1e-12)
    (predictions,) = summary["predictions_after"]
    assert predictions == pytest.approx(after.tolist(), rel=0, abs=1e-12)
    # Trained, not left where it started: after 1,000 steps the parameters are far from it.
    moved = max(abs(parameters[k] - v) for k, v in sgd(0)[0].items())
    assert moved > (1e-3 if steps == 1 else 0.1)
