"""What the hot path does for speed gives what the long way gives: the epoch metrics from a few
sums per step (as torchmetrics computes them), the gradient check on part of a large batch or on
the step's own gradients, the epoch metrics where Lightning's callbacks look for them, checkpoints
written in the background, rows gathered as vectors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from test_tensorboard import load_events
from torchmetrics import MeanAbsoluteError, MeanSquaredError, R2Score

from backprop_lab.data import take_rows
from backprop_lab.models.base import _SplitMetrics
from backprop_lab.training.checkpoint_io import BackgroundCheckpointIO
from backprop_lab.training.objective import Objective


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


def test_background_checkpoints_leave_the_newest_on_disk(tmp_path):
    io = BackgroundCheckpointIO()
    path = tmp_path / "checkpoints" / "last.ckpt"
    weights = torch.zeros(3)
    for epoch in range(50):
        weights += 1  # the saved tensor is a copy taken when the checkpoint was handed over
        io.save_checkpoint({"epoch": epoch, "w": weights}, path)
    io.teardown()
    saved = torch.load(path, weights_only=True)
    assert saved["epoch"] == 49
    assert saved["w"].tolist() == [50.0, 50.0, 50.0]
    assert io.load_checkpoint(path)["epoch"] == 49


def test_a_background_checkpoint_that_cannot_be_written_fails_the_run(tmp_path):
    (tmp_path / "file").write_text("not a directory")
    io = BackgroundCheckpointIO()
    io.save_checkpoint({"epoch": 0}, tmp_path / "file" / "last.ckpt")
    with pytest.raises(OSError):
        io.teardown()


@pytest.mark.parametrize("columns", [1, 2])
def test_take_rows_is_indexing(columns):
    t = torch.randn(50, columns)
    index = torch.randperm(50)[:20]
    assert torch.equal(take_rows(t, index), t[index])
    assert torch.equal(take_rows(t, index[::3]), t[index[::3]])  # a strided index (DDP shards)


def test_one_event_per_log_call_reads_back_as_lightnings_logger_writes(tmp_path):
    from lightning.pytorch.loggers import TensorBoardLogger as LightningTensorBoardLogger

    from backprop_lab.training.loggers import TensorBoardLogger

    read = {}
    for name, cls in (("ours", TensorBoardLogger), ("lightning", LightningTensorBoardLogger)):
        logger = cls(tmp_path / name, name="", version="")
        logger.log_metrics({"train/loss": 0.25, "grad/norm": torch.tensor(3.5)}, step=0)
        logger.log_metrics({"train/loss": torch.tensor(0.125, dtype=torch.float64)}, step=7)
        logger.finalize("success")
        events = load_events(str(tmp_path / name))
        read[name] = {
            tag: [(e.step, e.value) for e in events.Scalars(tag)]
            for tag in events.Tags()["scalars"]
        }
    assert read["ours"] == read["lightning"]
    assert read["ours"] == {"train/loss": [(0, 0.25), (7, 0.125)], "grad/norm": [(0, 3.5)]}


def test_a_value_tensorboard_cannot_take_is_named(tmp_path):
    from backprop_lab.training.loggers import TensorBoardLogger

    logger = TensorBoardLogger(tmp_path, name="", version="")
    with pytest.raises(ValueError, match="cannot log train/loss="):
        logger.log_metrics({"train/loss": torch.ones(3)}, step=0)


def test_lightning_calls_only_the_per_batch_hooks_a_callback_defines(make_cfg):
    from backprop_lab.callbacks import PER_BATCH_HOOKS, Callback, GradientCheck
    from backprop_lab.training.run import train

    assert GradientCheck.on_train_batch_end is None
    assert callable(GradientCheck.on_before_optimizer_step)
    assert callable(GradientCheck.on_train_batch_start)
    assert callable(GradientCheck.on_train_end)  # hooks outside a batch are kept

    calls = []

    class Counts(Callback):
        def on_train_batch_end(self, trainer, *args):
            calls.append(trainer.global_step)

    class Inherits(Counts):
        pass

    others = [hook for hook in PER_BATCH_HOOKS if hook != "on_train_batch_end"]
    assert all(getattr(Counts, hook) is None for hook in others)
    assert Inherits.on_train_batch_end is Counts.on_train_batch_end
    train(make_cfg("model=quadratic", "trainer.max_epochs=2"), extra_callbacks=[Inherits()])
    assert calls == [1, 2, 3, 4, 5, 6]


def test_a_checkpoint_snapshot_copies_tensors_and_keeps_container_types():
    from collections import OrderedDict

    from lightning.fabric.utilities.data import AttributeDict

    from backprop_lab.training.checkpoint_io import _snapshot

    state = torch.nn.Linear(2, 1).state_dict()
    checkpoint = {
        "state_dict": state,
        "hyper_parameters": AttributeDict(w=[1.0, 2.0]),
        "loops": {"fit_loop": {"epoch_progress": {"total": {"ready": 3}}}},
        "optimizer_states": [{"state": {}, "param_groups": [{"lr": 0.01, "params": [0, 1]}]}],
        "pair": (torch.ones(2), 7),
    }
    copied = _snapshot(checkpoint)
    assert copied == {**checkpoint, "state_dict": copied["state_dict"], "pair": copied["pair"]}
    assert type(copied["state_dict"]) is OrderedDict
    assert copied["state_dict"]._metadata == state._metadata  # torch's state_dict versions
    assert type(copied["hyper_parameters"]) is AttributeDict
    state["weight"].add_(1.0)
    checkpoint["pair"][0].add_(1.0)
    assert not torch.equal(copied["state_dict"]["weight"], state["weight"])  # as it was
    assert copied["pair"][0].tolist() == [1.0, 1.0]


def test_epoch_end_checkpoints_skip_the_per_step_hooks_and_the_metric_copy(run, monkeypatch):
    import copy

    from backprop_lab.callbacks import PER_BATCH_HOOKS, EpochEndCheckpoint

    plain = EpochEndCheckpoint(dirpath="x", filename="last")
    assert all(getattr(plain, hook) is None for hook in PER_BATCH_HOOKS)  # none is called a step
    assert callable(EpochEndCheckpoint(every_n_train_steps=5).on_train_batch_end)
    copies = []
    deepcopy = copy.deepcopy
    monkeypatch.setattr(
        "lightning.pytorch.callbacks.model_checkpoint.deepcopy",
        lambda value: copies.append(value) or deepcopy(value),
    )
    summary = run("model=quadratic", "trainer.max_epochs=3")
    saved = torch.load(
        f"{summary['output_dir']}/checkpoints/last.ckpt", weights_only=True, map_location="cpu"
    )
    assert saved["epoch"] == 2 and saved["global_step"] == 9  # the last epoch end
    assert copies == []
