"""The test split: evaluated once after training (Lightning's ``trainer.test``), on the best
checkpoint when the run wrote one, and by eval.py on any checkpoint and CSV.

After fit, the test runs on a second instance of the model holding the best checkpoint's weights
(else the trained ones): ``trainer.test(ckpt_path=...)`` would restore that checkpoint into the
trained model itself, and with it the history and callback states of an earlier epoch, which
summary.json and the report read afterwards.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import ModelCheckpoint

from backprop_lab import models
from backprop_lab.data import TensorDataModule
from backprop_lab.models import SeedModel
from backprop_lab.training import checkpoints


def best_checkpoint(trainer: pl.Trainer) -> Path | None:
    """The checkpoint of the best epoch by a monitored metric (checkpoints/best.ckpt), if this
    fit wrote one."""
    for callback in trainer.checkpoint_callbacks:
        if isinstance(callback, ModelCheckpoint) and callback.monitor is not None:
            path = Path(callback.best_model_path) if callback.best_model_path else None
            if path is not None and path.is_file():
                return path
    return None


def test_after_fit(
    trainer: pl.Trainer, model: SeedModel, datamodule: TensorDataModule
) -> dict[str, Any] | None:
    """Evaluate the test split, if the data has one: ``{"checkpoint", "epoch", "rows",
    "metrics"}`` with the metrics ``Loss/test``, ``test/mse``, ``test/mae``, ``test/r2`` (also
    logged, at the last training step). ``checkpoint`` is the best checkpoint's path, or None
    where the trained weights were tested; ``epoch`` the epoch those weights are from."""
    if datamodule.test_xy is None:
        return None
    best = best_checkpoint(trainer)
    if best is not None:
        saved = checkpoints.load(best)
        state, epoch = saved["state_dict"], saved.get("epoch")
    else:
        state, epoch = model.state_dict(), trainer.current_epoch - 1
    assert model.run_config is not None  # set by build_model
    with trainer.init_module():
        tested = models.build_model(model.run_config["model"], objective=model.objective)
    tested.load_state_dict(state)
    trainer.test(tested, datamodule=datamodule, verbose=False)
    return {
        "checkpoint": str(best) if best is not None else None,
        "epoch": epoch,
        "rows": rows_tested(trainer, datamodule),
        "metrics": tested.test_results,
    }


def rows_tested(trainer: pl.Trainer, datamodule: TensorDataModule) -> int:
    """The rows the last trainer.test saw: the whole split, or the batches that
    trainer.limit_test_batches (a debug mode) leaves of it."""
    assert datamodule.test_xy is not None
    batches = sum(int(n) for n in trainer.num_test_batches)  # (inf only for a loader without len)
    return min(len(datamodule.test_xy[0]), batches * datamodule.batch_size)


def test_lines(test: dict[str, Any]) -> list[str]:
    """The report's lines for a test: the rows and weights tested, then a line per metric."""
    if test["checkpoint"]:
        weights = f"{Path(test['checkpoint']).name} of epoch {test['epoch']}"
    else:
        weights = f"the weights after epoch {test['epoch']}"
    lines = [f"test ({test['rows']} rows, {weights}):"]
    lines += [f"  {name}: {value:.6g}" for name, value in (test["metrics"] or {}).items()]
    return lines
