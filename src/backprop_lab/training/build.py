"""Building a run's parts from its config: the data, the model, and any configured object.

Every ``_target_`` goes through :func:`make`, so a setting a user can fix ends as one line
naming its config section; models go through the allow-list of :mod:`backprop_lab.models`.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.fabric.utilities.exceptions import MisconfigurationException
from omegaconf import DictConfig, OmegaConf

from backprop_lab import schema
from backprop_lab.data import DataError, TensorDataModule
from backprop_lab.errors import BackpropLabError, ConfigError
from backprop_lab.models import SeedModel, build_model

log = logging.getLogger(__name__)


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
        if isinstance(cause, (ValueError, TypeError, ImportError, MisconfigurationException)):
            raise ConfigError(f"{section}: {' '.join(str(cause).split())}") from error
        if isinstance(cause, OSError) and cause.filename is not None:
            raise path_error(cause) from None
        raise


def build(cfg: DictConfig) -> tuple[TensorDataModule, SeedModel]:
    """Instantiate the data and the model from a config, and check that they fit each other."""
    schema.check(cfg)
    # The data in the dtype the model trains in: a value that dtype cannot hold is named as the
    # file is read, not found as an inf loss at step 0.
    dtype = getattr(torch, schema.training_dtype(cfg.trainer.get("precision")))
    datamodule: TensorDataModule = make("data", cfg.data, dtype=dtype)
    model = build_model(
        OmegaConf.to_container(cfg.model, resolve=True),
        objective=make("loss", cfg.loss),
        optimizer=make("optimizer", cfg.optimizer),
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
    return datamodule, model


def _warn_unreachable(datamodule: TensorDataModule, model: SeedModel) -> None:
    """Targets outside the model's output range: the loss can never reach 0 (not an error)."""
    if model.output_range is None:
        return
    low, high = model.output_range
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
