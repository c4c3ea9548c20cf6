"""One training run: a composed config in, a summary out.

instantiate data, objective, optimiser (partial), model, callbacks, loggers, Trainer
-> predictions at the configured inputs -> trainer.fit -> predictions again
-> summary.json in the run's output dir, and a short report on the console
"""

from __future__ import annotations

import json
import logging
import time
import warnings
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf

from backprop_lab.data import DataError, TensorDataModule
from backprop_lab.models import SeedModel

# Lightning 2.6 calls a torch.utils._pytree API that torch 2.15 deprecates: nothing to act on.
warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")


def _single_console() -> None:
    """`import lightning` adds a console handler of its own; under Hydra, whose root handler already
    prints (and writes train.log), that handler makes every Lightning message appear twice."""
    if logging.getLogger().handlers:
        logging.getLogger("lightning").handlers.clear()


def build(cfg: DictConfig) -> tuple[TensorDataModule, SeedModel]:
    """Instantiate the data and the model from a config, and check that they fit each other."""
    datamodule: TensorDataModule = instantiate(cfg.data)
    model: SeedModel = instantiate(
        cfg.model, objective=instantiate(cfg.loss), optimizer=instantiate(cfg.optimizer)
    )
    if (datamodule.in_features, datamodule.out_features) != (model.in_features, model.out_features):
        raise DataError(
            f"the data has {datamodule.in_features} input and {datamodule.out_features} target "
            f"column(s); {type(model).__name__} takes {model.in_features} and gives "
            f"{model.out_features}. Set data.x_columns and data.y_columns to fit the model."
        )
    return datamodule, model


def train(cfg: DictConfig) -> dict[str, Any]:
    """Train the configured model and return the run's summary (also written to summary.json)."""
    started = time.perf_counter()
    _single_console()
    if cfg.seed is not None:
        pl.seed_everything(cfg.seed, workers=True, verbose=False)
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)

    datamodule, model = build(cfg)
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c]
    loggers = [instantiate(lg) for lg in (cfg.get("logger") or {}).values() if lg]
    # Without validation data, tell the Trainer so rather than hand it an empty loader.
    no_val = {"limit_val_batches": 0} if datamodule.val_xy is None else {}
    trainer: pl.Trainer = instantiate(
        cfg.trainer, callbacks=callbacks, logger=loggers or False, **no_val
    )

    inputs = _as_rows(cfg.get("predict_at"))
    before = model.predict_at(inputs) if inputs is not None else None
    trainer.fit(model, datamodule=datamodule)
    after = model.predict_at(inputs) if inputs is not None else None

    summary = {
        "model": type(model).__name__,
        "status": "finished",
        "final_loss": float(model.last_loss) if model.last_loss is not None else None,
        "parameters": model.scalar_values(),
        "predict_at": inputs,
        "predictions_before": before,
        "predictions_after": after,
        "device": _device_name(trainer.strategy.root_device),
        "precision": str(trainer.precision),
        "epochs": trainer.current_epoch,
        "steps": trainer.global_step,
        "seed": cfg.seed,
        "output_dir": str(output_dir),
        "wall_time_s": round(time.perf_counter() - started, 3),
    }
    (output_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(report(summary))
    return summary


def report(summary: dict[str, Any]) -> str:
    """The console report: predictions before and after (as the seeds print), loss, device, logs."""
    lines = []
    inputs = summary["predict_at"]
    if inputs is not None:
        for when in ("before", "after"):
            preds = summary[f"predictions_{when}"]
            shown = ", ".join(
                f"x={_fmt(x)} -> {_fmt(p)}" for x, p in zip(inputs, preds, strict=True)
            )
            lines.append(f"predict ({when} training): {shown}")
    lines += [
        f"final loss: {summary['final_loss']!r}",
        "parameters: " + ", ".join(f"{k}={v:.6g}" for k, v in summary["parameters"].items()),
        f"device: {summary['device']}",
        f"epochs: {summary['epochs']}, steps: {summary['steps']}",
        f"logs: {summary['output_dir']}",
    ]
    return "\n".join(lines)


def _fmt(values: Any) -> str:
    if isinstance(values, list):
        return (
            values[0].__repr__() if len(values) == 1 else "(" + ", ".join(map(repr, values)) + ")"
        )
    return repr(values)


def _as_rows(inputs: Any) -> list[list[float]] | None:
    """``[4.0]`` -> ``[[4.0]]``; ``[[0.5, 0.3]]`` stays: one list of features per input row."""
    if inputs is None:
        return None
    rows = OmegaConf.to_container(inputs) if isinstance(inputs, ListConfig) else list(inputs)
    return [list(r) if isinstance(r, (list, tuple)) else [r] for r in rows]


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)
