"""The models' math and parameter naming."""

from __future__ import annotations

import pytest
import torch
from torchmetrics import MeanAbsoluteError, MeanSquaredError, R2Score

from backprop_lab.errors import ConfigError
from backprop_lab.models import LinearRegression, QuadraticRegression, SigmoidNet
from backprop_lab.training.build import build
from backprop_lab.training.metrics import HOLD_ROWS, EpochMetrics

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
    ("override", "words"),
    [
        (
            "output_weight=[[1.0,2.0,3.0],[1.0,2.0,3.0]]",
            "model.output_weight needs 2 columns, one column per hidden unit",
        ),
        ("hidden_weight=[[1.0,2.0],[3.0]]", "model.hidden_weight must be a rectangular matrix"),
        ("hidden_bias=[0.1]", "model.hidden_bias needs 2 values, one value per hidden unit"),
    ],
)
def test_sigmoid_net_shape_errors(make_cfg, override, words):
    # One layer of messages: the schema's, naming the key, before the constructor runs.
    with pytest.raises(ConfigError) as refused:
        build(make_cfg("model=sigmoid_net", f"model.{override}"))
    assert str(refused.value).startswith(f"model: {words}")


def test_linear_with_and_without_bias():
    assert LinearRegression(w=2.0)(torch.tensor([[3.0]])).item() == 6.0
    with_bias = LinearRegression(w=2.0, bias=True, b=0.5)
    assert with_bias(torch.tensor([[3.0]])).item() == 6.5
    assert list(with_bias.scalar_values()) == ["w", "b"]
    assert [p.shape for p in with_bias.penalised_weights()] == [torch.Size([1])]


def test_quadratic_needs_three_coefficients(make_cfg):
    assert QuadraticRegression([1.0, 2.0, 3.0])(torch.tensor([[2.0]])).item() == 4 + 4 + 3
    with pytest.raises(ConfigError, match=r"model\.w must be a list of 3 numbers, the 3 coeff"):
        build(make_cfg("model=quadratic", "model.w=[1.0,2.0]"))


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


# --- the epoch metrics ----------------------------------------------------------------------------

Step = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # (loss, y_hat, y)


def steps(sizes: list[int], columns: int) -> list[Step]:
    generator = torch.Generator().manual_seed(len(sizes) * columns)
    batches = []
    for n in sizes:
        y = torch.randn(n, columns, generator=generator) * 3 + 1
        y_hat = y + 0.5 * torch.randn(n, columns, generator=generator)
        batches.append((((y_hat - y) ** 2).mean(), y_hat, y))
    return batches


def torchmetrics_values(batches: list[Step]) -> dict[str, float]:
    columns = batches[0][2].shape[1]
    mse, mae, r2 = MeanSquaredError(), MeanAbsoluteError(), R2Score(multioutput="uniform_average")
    loss_sum = rows = 0.0
    for loss, y_hat, y in batches:
        mse.update(y_hat, y)
        mae.update(y_hat, y)
        r2.update(y_hat if columns > 1 else y_hat[:, 0], y if columns > 1 else y[:, 0])
        loss_sum += float(loss) * len(y)
        rows += len(y)
    out = {"Loss/s": loss_sum / rows, "s/mse": float(mse.compute())}
    out["s/mae"] = float(mae.compute())
    if rows >= 2:
        out["s/r2"] = float(r2.compute())
    return out


@pytest.mark.parametrize("columns", [1, 2])
@pytest.mark.parametrize(
    "sizes",
    # held and summed at compute; held, summed once HOLD_ROWS have come, and a step summed at once
    [[1], [1, 1, 1], [5, 3], [64, 64, 7], [HOLD_ROWS - 1, 2, HOLD_ROWS, 3]],
)
def test_the_epoch_metrics_are_torchmetrics_values(columns, sizes):
    batches = steps(sizes, columns)
    metrics = EpochMetrics("s", outputs=columns)
    for epoch in range(2):  # reset between epochs leaves nothing behind
        for loss, y_hat, y in batches:
            metrics.update(loss, y_hat, y)
        got = {k: float(v) for k, v in metrics.compute().items()}
        metrics.reset()
        assert got == pytest.approx(torchmetrics_values(batches), rel=1e-5, abs=1e-6), epoch


def test_r2_of_near_constant_targets_as_torchmetrics():
    y = torch.full((4, 1), 2.0)
    for y_hat in (y.clone(), y + 1.0):  # a perfect fit of a constant: 1; a miss: 0
        metrics = EpochMetrics("s")
        metrics.update(torch.tensor(0.0), y_hat, y)
        assert float(metrics.compute()["s/r2"]) == float(R2Score()(y_hat[:, 0], y[:, 0]))


def test_an_epoch_without_rows_has_no_metrics():
    with pytest.warns(UserWarning, match="before the ``update``"):  # torchmetrics' own note
        assert EpochMetrics("s").compute() == {}


@pytest.mark.parametrize(
    ("cut", "summed", "held"),
    # The rows before the cut: 1 and 129 held; 257 summed; 257 and a full batch summed, 3 held.
    [(1, 0, 1), (2, 0, HOLD_ROWS // 2 + 1), (3, HOLD_ROWS + 1, 0), (5, 2 * HOLD_ROWS + 1, 3)],
)
def test_a_mid_epoch_state_dict_carries_the_epoch_so_far_bit_for_bit(cut, summed, held):
    """What a checkpoint from the middle of an epoch holds: every step before it, the held ones
    as they were, so that the resumed epoch sums them as the uninterrupted one does."""
    batches = steps([1, HOLD_ROWS // 2, HOLD_ROWS // 2, 3, HOLD_ROWS, 1, 2], columns=2)
    whole, cut_short, resumed = SigmoidNet(), SigmoidNet(), SigmoidNet()
    for step in batches:
        whole.train_metrics.update(*step)
    for step in batches[:cut]:
        cut_short.train_metrics.update(*step)
    state = cut_short.state_dict()
    assert state["train_metrics.rows"].item() == summed
    assert state["train_metrics.held_rows"].item() == held
    resumed.load_state_dict(state)
    for step in batches[cut:]:
        resumed.train_metrics.update(*step)
    want, got = whole.train_metrics.compute(), resumed.train_metrics.compute()
    # a plain MSE objective: train/mse would repeat Loss/train, and is left out
    assert list(got) == ["Loss/train", "train/mae", "train/r2"]
    assert all(torch.equal(got[name], want[name]) for name in want)


def test_held_steps_are_summed_before_the_states_are_gathered_from_other_processes():
    metrics = EpochMetrics("s")
    for step in steps([1, 1, 1], columns=1):
        metrics.update(*step)
    # Two processes that saw the same three rows, as torchmetrics' sync gathers them.
    metrics.sync(dist_sync_fn=lambda t, group=None: [t, t], distributed_available=lambda: True)
    assert metrics.rows.item() == 6
    metrics.unsync()
    assert metrics.rows.item() == 3


def test_each_parameter_tensor_holds_the_seeds_names_in_order():
    net = SigmoidNet(hidden_bias=[0.35, 0.35], output_bias=[0.6, 0.6])
    assert net.seed_groups() == {
        "W1": ["w1", "w2", "w3", "w4"],
        "W2": ["w5", "w6", "w7", "w8"],
        "b1": ["b_h1", "b_h2"],
        "b2": ["b_o1", "b_o2"],
    }
    assert QuadraticRegression().seed_groups() == {"w": ["w0", "w1", "w2"]}
