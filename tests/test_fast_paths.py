"""What the short ways give is what the long way gives: the gradient check on part of a large
batch, the epoch metrics where Lightning's callbacks look for them, checkpoints written by
Lightning's AsyncCheckpointIO thread and every nth epoch of a long run, rows gathered as vectors,
the objective's terms, the seed-named values read from one flat copy, a call's scalars written
as one TensorBoard event. (The epoch
metrics against torchmetrics: tests/test_models.py.)"""

from __future__ import annotations

import threading
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from test_tensorboard import load_events

from backprop_lab.data import take_rows
from backprop_lab.models import MODELS
from backprop_lab.training.checkpoint_io import AtomicCheckpointIO
from backprop_lab.training.objective import Objective


def test_epoch_metrics_reach_lightning_callbacks(run):
    # EarlyStopping reads trainer.callback_metrics; the epoch metrics must be there.
    summary = run(
        "model=linear",
        "callbacks.early_stopping.patience=1000",  # Lightning's EarlyStopping on Loss/train
        "+callbacks.early_stopping.stopping_threshold=1e-3",
    )
    assert summary["status"] == "finished"
    assert summary["epochs"] < 100
    assert summary["final_metrics"]["Loss/train"] < 1e-3


@pytest.mark.parametrize(
    ("terms", "l2"),
    [({"mse": 1.0}, 0.0), ({"mae": 1.0}, 0.1), ({"mse": 0.7, "mae": 1.3}, 0.0), ({"mse": 1}, 0.05)],
)
def test_the_objective_is_its_weighted_terms_plus_the_l2_penalty(terms, l2):
    y_hat, y = torch.randn(5, 1), torch.randn(5, 1)
    objective = Objective(terms, l2=l2)
    loss, _ = objective(y_hat, y, [torch.ones(3)])
    want = {"mse": float(F.mse_loss(y_hat, y)), "mae": float(F.l1_loss(y_hat, y))}
    expected = sum(weight * want[name] for name, weight in terms.items()) + l2 / 2 * 3
    assert float(loss) == pytest.approx(expected, rel=1e-6)


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
    checks = load_events(summary["output_dir"]).Scalars("gradcheck/linear")
    assert [e.step for e in checks] == [0, 2, 4, 6]
    assert all(0 <= e.value < 1e-4 for e in checks)


class HeldIO(AtomicCheckpointIO):
    """Writes only once the test lets it: a write the thread has not done yet, on demand."""

    def __init__(self) -> None:
        super().__init__()
        self.go = threading.Event()

    def save_checkpoint(self, *args, **kwargs) -> None:
        self.go.wait(timeout=60)
        super().save_checkpoint(*args, **kwargs)


def configured_checkpoint_io(make_cfg, **kwargs):
    """The trainer's checkpoint plugin as conf/trainer/default.yaml configures it."""
    (plugin,) = make_cfg().trainer.plugins
    return instantiate(plugin, **kwargs)


def test_a_checkpoint_holds_the_state_it_was_handed_over_with(make_cfg, tmp_path):
    # Written later by a thread, a checkpoint must still hold the values of its save: the
    # optimiser changes the parameters in place right after an epoch-end save.
    held = HeldIO()
    io = configured_checkpoint_io(make_cfg, checkpoint_io=held)
    path = tmp_path / "checkpoints" / "last.ckpt"
    weights = torch.zeros(3)
    for epoch in range(20):
        weights += 1
        io.save_checkpoint({"epoch": epoch, "w": weights, "nested": [{"w": weights}]}, path)
    weights += 100  # after the last save, before any write
    held.go.set()
    io.teardown()  # Lightning's end of fit: every pending write is done
    saved = torch.load(path, weights_only=True)
    assert saved["epoch"] == 19
    assert saved["w"].tolist() == saved["nested"][0]["w"].tolist() == [20.0, 20.0, 20.0]
    assert not list(path.parent.glob("*.partial"))  # each one written whole, then renamed


def test_a_checkpoint_that_cannot_be_written_fails_the_run(make_cfg, tmp_path):
    (tmp_path / "file").write_text("not a directory")
    io = configured_checkpoint_io(make_cfg)
    with pytest.raises(OSError):  # at the next save if the write failed already, else at the end
        io.save_checkpoint({"epoch": 0}, tmp_path / "file" / "last.ckpt")
        io.teardown()


@pytest.mark.parametrize("columns", [1, 2])
def test_take_rows_is_indexing(columns):
    t = torch.randn(50, columns)
    index = torch.randperm(50)[:20]
    assert torch.equal(take_rows(t, index), t[index])
    assert torch.equal(take_rows(t, index[::3]), t[index[::3]])  # a strided index (DDP shards)


def test_the_checkpoint_is_the_last_epoch_ends(run):
    summary = run("model=quadratic", "trainer.max_epochs=3")
    checkpoints = Path(summary["output_dir"]) / "checkpoints"
    # rewritten, not versioned
    assert sorted(p.name for p in checkpoints.iterdir()) == ["best.ckpt", "last.ckpt"]
    saved = torch.load(checkpoints / "last.ckpt", weights_only=True, map_location="cpu")
    assert saved["epoch"] == 2 and saved["global_step"] == 9  # the last epoch end


class Saves(pl.Callback):
    """The epoch of every checkpoint saved, by the file it went to."""

    def __init__(self) -> None:
        self.epochs: list[int] = []

    def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        self.epochs.append(trainer.current_epoch)


@pytest.mark.parametrize(
    ("overrides", "every"),
    [
        (["trainer.max_epochs=100"], 1),  # every epoch of a run of up to 100
        (["trainer.max_epochs=250"], 5),  # about 50 saves: every 5th epoch, and the last
        (["trainer.max_epochs=251"], 6),
        (["trainer.max_epochs=20", "callbacks.model_checkpoint.every_n_epochs=6"], 6),
    ],
)
def test_a_long_run_saves_every_nth_epoch_and_its_last(make_cfg, overrides, every):
    from backprop_lab.training.run import train

    saves = Saves()
    cfg = make_cfg("model=quadratic", *overrides)
    train(cfg, extra_callbacks=[saves])
    epochs = cfg.trainer.max_epochs
    due = [e for e in range(epochs) if (e + 1) % every == 0 or e == epochs - 1]
    # last.ckpt at each of them, best.ckpt at those that beat it, at no other epoch
    assert sorted(set(saves.epochs)) == due
    assert len(due) < len(saves.epochs) <= 2 * len(due)
    checkpoints = Path(cfg.paths.output_dir) / "checkpoints"
    for name in ("last", "best"):
        saved = torch.load(checkpoints / f"{name}.ckpt", weights_only=True, map_location="cpu")
        assert saved["epoch"] == epochs - 1


def test_seed_values_read_each_parameter_where_the_seed_names_it():
    for name, cls in MODELS.items():
        model = cls()
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(torch.randn_like(p))
                p.grad = torch.randn_like(p)
        for tensors in (
            dict(model.named_parameters()),
            {n: p.grad for n, p in model.named_parameters()},
        ):
            by_name = {k: float(v.detach()) for k, v in model.seed_names(tensors).items()}
            values = model.seed_values(tensors)
            assert values == by_name and list(values) == list(by_name), name


def scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    events = load_events(str(run_dir))
    return {t: [(e.step, e.value) for e in events.Scalars(t)] for t in events.Tags()["scalars"]}


@pytest.mark.parametrize("prefix", ["", "run"])
def test_the_logger_writes_what_lightnings_own_writes(tmp_path, prefix):
    from lightning.pytorch.loggers import TensorBoardLogger as LightningLogger

    from backprop_lab.callbacks.tensorboard import TensorBoardLogger

    calls = [
        ({"Loss/train": 1.5, "params/m/w0": torch.tensor(2.25), "n": 3}, 0),
        ({"Loss/train": -1.0, "params/m/w0": torch.tensor(0.5, dtype=torch.float64)}, 7),
    ]
    written = {}
    for cls in (LightningLogger, TensorBoardLogger):
        logger = cls(tmp_path / cls.__module__, name="", version="", prefix=prefix)
        for metrics, step in calls:
            logger.log_metrics(metrics, step)
        logger.finalize("success")  # as at the end of fit: the writer is closed
        logger.log_metrics({"Loss/test": 0.25}, 9)  # and reopened, as for trainer.test
        logger.finalize("success")
        written[cls] = scalars(tmp_path / cls.__module__)
    assert written[TensorBoardLogger] == written[LightningLogger]
    join = f"{prefix}-" if prefix else ""
    assert written[TensorBoardLogger][f"{join}params/m/w0"] == [(0, 2.25), (7, 0.5)]
