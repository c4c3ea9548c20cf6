"""Building a run's parts from its config: the data, the model, and any configured object.

Every ``_target_`` goes through :func:`make`, so a setting a user can fix ends as one line
naming its config section; models go through the allow-list of :mod:`backprop_lab.models`.
The data comes first, then (in a run) the Trainer, then the model under the Trainer's
``init_module()``: its parameters are made in the training dtype straight from the config's
values (float64 under trainer.precision=64, not float32 widened) and on the training device.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, cast

import lightning.pytorch as pl
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.fabric.utilities.exceptions import MisconfigurationException
from omegaconf import DictConfig, OmegaConf

from backprop_lab import models, schema
from backprop_lab.data import DataError, TensorDataModule
from backprop_lab.errors import BackpropLabError, ConfigError
from backprop_lab.models import SeedModel

log = logging.getLogger(__name__)

#: The optional extras (pyproject.toml) by the module a config's target needs: how to install one.
EXTRAS = {
    "mlflow": "uv sync --extra mlflow, or run with uv run --extra mlflow train.py logger=mlflow",
}


def make(section: str, node: DictConfig, **kwargs: Any) -> Any:
    """instantiate() whose failures a user can fix end as one line naming the config section.

    Plain lists and dicts are passed, not OmegaConf containers: checkpoints then hold only plain
    values and load with torch.load(weights_only=True).
    """
    try:
        return instantiate(node, _convert_="all", **kwargs)
    except InstantiationException as error:
        cause = error.__cause__
        if isinstance(cause, BackpropLabError):
            raise cause from None
        if isinstance(cause, ModuleNotFoundError) and (missing := _missing_extra(cause)):
            raise ConfigError(f"{section}: {missing}") from None
        if isinstance(cause, (ValueError, TypeError, ImportError, MisconfigurationException)):
            raise ConfigError(f"{section}: {' '.join(str(cause).split())}") from error
        if isinstance(cause, OSError) and cause.filename is not None:
            raise path_error(cause) from None
        raise


def _missing_extra(error: ModuleNotFoundError) -> str | None:
    """What to install for a module of an optional extra that is not installed (Lightning says
    so as a ModuleNotFoundError naming the module, with a pip command that is not this
    project's way), or None for any other module."""
    named = f"{error.name or ''} {error}"
    for module, how in EXTRAS.items():
        if re.search(rf"\b{module}\b", named):
            return f"the {module} package is not installed (an optional extra): {how}"
    return None


def build(cfg: DictConfig, trainer: pl.Trainer | None = None) -> tuple[TensorDataModule, SeedModel]:
    """The data and the model of a config, checked to fit each other (explain.py, tests); the
    model under ``trainer.init_module()`` when a Trainer is given, else in the training dtype."""
    datamodule = build_data(cfg)
    return datamodule, build_model(cfg, datamodule, trainer)


def build_data(cfg: DictConfig) -> TensorDataModule:
    """The schema-checked config's data, read in the dtype the model trains in: a value that
    dtype cannot hold is named as the file is read, not found as an inf loss at step 0."""
    schema.check(cfg)
    datamodule: TensorDataModule = make("data", cfg.data, dtype=_training_dtype(cfg))
    datamodule.setup("fit")
    return datamodule


def build_model(
    cfg: DictConfig, datamodule: TensorDataModule, trainer: pl.Trainer | None = None
) -> SeedModel:
    """The config's model for ``datamodule``, built under ``trainer.init_module()`` (in the
    training dtype, on the training device) or, without a Trainer, in the training dtype."""
    _check_plateau(cfg, datamodule)
    with trainer.init_module() if trainer is not None else _default_dtype(_training_dtype(cfg)):
        model = models.build_model(
            cast(dict[str, Any], OmegaConf.to_container(cfg.model, resolve=True)),
            objective=make("loss", cfg.loss),
            optimizer=make("optimizer", cfg.optimizer),
            scheduler=_scheduler(cfg),
            monitor=str(OmegaConf.select(cfg, "objective.metric", default="Loss/train")),
        )
    model.run_config = {
        key: OmegaConf.to_container(cfg[key], resolve=True)
        for key in ("model", "loss", "optimizer", "data", "predict_at")
        if cfg.get(key) is not None
    }
    if (datamodule.in_features, datamodule.out_features) != (model.in_features, model.out_features):
        raise DataError(
            f"the data has {datamodule.in_features} input and {datamodule.out_features} target "
            f"column(s); {type(model).__name__} takes {model.in_features} and gives "
            f"{model.out_features}. Set data.x_columns and data.y_columns to fit the model."
        )
    _warn_unreachable(datamodule, model)
    return model


def _scheduler(cfg: DictConfig) -> Any:
    """The learning-rate scheduler factory of ``scheduler=`` (a partial taking the optimizer), or
    None for ``scheduler=none``, which has no ``_target_``."""
    node = OmegaConf.select(cfg, "scheduler", default=None)
    if node is None or "_target_" not in node:
        return None
    return make("scheduler", node)


def _check_plateau(cfg: DictConfig, datamodule: TensorDataModule) -> None:
    """A plateau schedule on a validation metric needs validation data: said before training,
    not at the first epoch's end."""
    target = str(OmegaConf.select(cfg, "scheduler._target_", default=""))
    metric = str(OmegaConf.select(cfg, "objective.metric", default=""))
    on_val = metric.startswith(("Loss/val", "val/"))
    if target.endswith(".ReduceLROnPlateau") and on_val and datamodule.val_xy is None:
        raise ConfigError(
            f"scheduler=plateau watches {metric} (objective.metric), but this run has no "
            "validation data; e.g. data.val_fraction=0.2 (or data.val_csv=...), or "
            "objective.metric=Loss/train"
        )


def _training_dtype(cfg: DictConfig) -> torch.dtype:
    return getattr(torch, schema.training_dtype(cfg.trainer.get("precision")))


@contextmanager
def _default_dtype(dtype: torch.dtype) -> Iterator[None]:
    """Tensors made inside are of ``dtype``, as under ``trainer.init_module()`` (no Trainer yet)."""
    before = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(before)


def _warn_unreachable(datamodule: TensorDataModule, model: SeedModel) -> None:
    """Targets outside the model's output range: the loss can never reach 0 (not an error)."""
    if model.output_range is None:
        return
    low, high = model.output_range
    assert datamodule.train_xy is not None  # read by build_data
    y = datamodule.train_xy[1]
    outside = ((y <= low) | (y >= high)).nonzero().tolist()
    if outside:
        row, col = outside[0]
        log.warning(
            "%d target value(s) lie outside (%g, %g), where %s's outputs always lie, e.g. %g "
            "(data row %d, target column %d): the loss cannot reach 0",
            len(outside),
            low,
            high,
            type(model).__name__,
            y[row, col].item(),
            row + 1,
            col + 1,
        )


def path_error(error: OSError) -> BackpropLabError:
    """A path the run cannot create or write (a missing or read-only place, a file where a dir
    belongs), named in one line."""
    return BackpropLabError(
        f"cannot write {error.filename}: {error.strerror}; give the run a place it can write "
        "(paths.log_dir, hydra.run.dir, or the setting that names this path)"
    )
