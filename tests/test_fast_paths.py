"""What the hot path does for speed gives what the long way gives: the epoch metrics from a few
sums per step (as torchmetrics computes them), the gradient check on part of a large batch or on
the step's own gradients, the epoch metrics where Lightning's callbacks look for them."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from test_tensorboard import load_events
from torchmetrics import MeanAbsoluteError, MeanSquaredError, R2Score

from backprop_lab.losses import Objective
from backprop_lab.models.base import _SplitMetrics


def reference(batches: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]) -> dict[str, float]:
    columns = batches[0][2].shape[1]
    mse, mae, r2 = MeanSquaredError(), MeanAbsoluteError(), R2Score(multioutput="uniform_average")
    loss_sum = rows = 0.0
    for loss, y_hat, y in batches:
        mse.update(y_hat, y)
        mae.update(y_hat, y)
        r2.update(y_hat if columns > 1 else y_hat[:, 0], y if columns > 1 else y[:, 0])
        loss_sum += float(loss) * len(y)
        rows += len(y)
    out = {"s/loss_epoch": loss_sum / rows, "s/mse": float(mse.compute())}
    out["s/mae"] = float(mae.compute())
    if rows >= 2:
        out["s/r2"] = float(r2.compute())
    return out


@pytest.mark.parametrize("hold_rows", [1, 4, 1024])  # every batch at once, some held, all held
@pytest.mark.parametrize("known", [(), ("mse",), ("mae",), ("mse", "mae")])
@pytest.mark.parametrize("columns", [1, 2])
@pytest.mark.parametrize("sizes", [[1], [1, 1, 1], [5, 3], [64, 64, 7]])
def test_the_sums_give_torchmetrics_values(hold_rows, known, columns, sizes):
    # known: loss terms the step computed, which the metrics reuse.
    generator = torch.Generator().manual_seed(len(sizes) * columns)
    batches = []
    for n in sizes:
        y = torch.randn(n, columns, generator=generator) * 3 + 1
        y_hat = y + 0.5 * torch.randn(n, columns, generator=generator)
        batches.append((((y_hat - y) ** 2).mean(), y_hat, y))
    metrics = _SplitMetrics(hold_rows)
    for epoch in range(2):  # reset between epochs leaves nothing behind
        for loss, y_hat, y in batches:
            terms = {"mse": ((y_hat - y) ** 2).mean(), "mae": (y_hat - y).abs().mean()}
            metrics.update(loss, y_hat, y, {k: terms[k] for k in known})
        got = {k: float(v) for k, v in metrics.compute("s").items()}
        metrics.reset()
        assert got == pytest.approx(reference(batches), rel=1e-5, abs=1e-6), epoch


def test_r2_of_near_constant_targets_as_torchmetrics():
    y = torch.full((4, 1), 2.0)
    for y_hat in (y.clone(), y + 1.0):  # a perfect fit of a constant: 1; a miss: 0
        metrics = _SplitMetrics()
        metrics.update(torch.tensor(0.0), y_hat, y)
        assert float(metrics.compute("s")["s/r2"]) == float(R2Score()(y_hat[:, 0], y[:, 0]))


def test_an_epoch_without_rows_has_no_metrics():
    assert _SplitMetrics().compute("s") == {}


def test_epoch_metrics_reach_lightning_callbacks(run):
    # EarlyStopping reads trainer.callback_metrics; the epoch metrics must be there.
    summary = run(
        "model=linear",
        "+callbacks.early_stopping._target_=lightning.pytorch.callbacks.EarlyStopping",
        "+callbacks.early_stopping.monitor=train/loss_epoch",
        "+callbacks.early_stopping.stopping_threshold=1e-3",
    )
    assert summary["status"] == "finished"
    assert summary["epochs"] < 100
    assert summary["final_metrics"]["train/loss_epoch"] < 1e-3


@pytest.mark.parametrize(
    ("terms", "l2"),
    [({"mse": 1.0}, 0.0), ({"mae": 1.0}, 0.1), ({"mse": 0.7, "mae": 1.3}, 0.0), ({"mse": 1}, 0.05)],
)
def test_the_loss_terms_the_metrics_reuse(terms, l2):
    y_hat, y = torch.randn(5, 1), torch.randn(5, 1)
    objective = Objective(terms, l2=l2)
    loss, parts = objective(y_hat, y, [torch.ones(3)])
    got = {k: float(v) for k, v in objective.data_terms(loss, parts).items()}
    want = {"mse": float(F.mse_loss(y_hat, y)), "mae": float(F.l1_loss(y_hat, y))}
    assert got == pytest.approx({k: want[k] for k in terms}, rel=1e-6)


def test_the_gradient_check_on_the_first_rows_of_a_large_batch(run):
    summary = run(
        "model=linear",
        "data=synthetic",
        "data.n=640",
        "data.batch_size=64",
        "trainer.max_epochs=1",
        "callbacks.gradient_check.max_rows=8",
        "callbacks.gradient_check.every_n_steps=2",
    )
    checks = load_events(summary["output_dir"]).Scalars("gradcheck/w")
    assert [e.step for e in checks] == [0, 2, 4, 6]
    assert all(0 <= e.value < 1e-4 for e in checks)
