"""The seed models, one LightningModule each, all built on :class:`SeedModel`.

A config (``model._target_``) or a checkpoint's saved config names its model by import path, and
only the paths in :data:`MODELS` are ever built: a checkpoint is data, and nothing read from it
chooses code. A new model is added here.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from backprop_lab.errors import ConfigError
from backprop_lab.models.base import SeedModel
from backprop_lab.models.cubic import CubicRegression
from backprop_lab.models.linear import LinearRegression
from backprop_lab.models.quadratic import QuadraticRegression
from backprop_lab.models.sigmoid_net import SigmoidNet

#: ``_target_`` -> model class: the only classes a config or a checkpoint can build.
MODELS: dict[str, type[SeedModel]] = {
    f"backprop_lab.models.{cls.__name__}": cls
    for cls in (LinearRegression, QuadraticRegression, SigmoidNet, CubicRegression)
}


def model_class(target: Any) -> type[SeedModel]:
    """The model class a ``_target_`` names, if it is one of :data:`MODELS`."""
    cls = MODELS.get(target) if isinstance(target, str) else None
    if cls is None:
        raise ConfigError(
            f"model._target_={target!r} is not one of this project's models; "
            f"choose one of {', '.join(MODELS)}"
        )
    return cls


def model_keys(cls: type[SeedModel]) -> list[str]:
    """The settings a model config may give: its constructor's own arguments and ``gradients``."""
    own = [
        name
        for name, p in inspect.signature(cls.__init__).parameters.items()
        if name != "self" and p.kind is p.POSITIONAL_OR_KEYWORD
    ]
    return [*own, "gradients"]


def check_model_config(config: Any) -> type[SeedModel]:
    """The class a model config names, once its target and its keys are this project's."""
    if not isinstance(config, Mapping):
        raise ConfigError(f"model: the model config is a {type(config).__name__}, not a mapping")
    cls = model_class(config.get("_target_"))
    unknown = sorted(set(config) - {"_target_", *model_keys(cls)})
    if unknown:
        raise ConfigError(
            f"model: {cls.__name__} has no setting(s) {unknown}; its settings are "
            f"{', '.join(model_keys(cls))}"
        )
    return cls


def build_model(config: Mapping[str, Any], **components: Any) -> SeedModel:
    """The model a plain-dict model config describes (``_target_`` and its arguments), with
    ``components`` (the objective, the optimiser factory) passed on to its constructor."""
    cls = check_model_config(config)
    arguments = {k: v for k, v in config.items() if k != "_target_"}
    try:
        return cls(**arguments, **components)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"model: {' '.join(str(error).split())}") from None


__all__ = ["CubicRegression", "LinearRegression", "QuadraticRegression", "SeedModel", "SigmoidNet"]
