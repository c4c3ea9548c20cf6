"""The config's schema: types and ranges checked as soon as the config is composed.

Hydra already rejects unknown config group options (listing the valid ones) and misspelled keys.
This adds what YAML cannot say: that optimizer.lr is a number above 0, a batch size a whole number
of at least 1, and so on. Model-specific shapes (the quadratic model's three coefficients, the
sigmoid net's matrices) are checked by the models' own constructors, also before training.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from omegaconf import DictConfig, OmegaConf

from backprop_lab.errors import ConfigError


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _whole(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


#: key -> (test, what it must be, an example). A key missing from the config is not checked.
RULES: dict[str, tuple[Callable[[Any], bool], str, str]] = {
    "seed": (lambda v: v is None or _whole(v), "a whole number or null", "seed=0"),
    "keep_freed_memory_mb": (
        lambda v: _whole(v) and v >= 0,
        "a whole number >= 0",
        "keep_freed_memory_mb=256",
    ),
    "optimizer.lr": (lambda v: _number(v) and v > 0, "a number > 0", "optimizer.lr=0.01"),
    "optimizer.momentum": (
        lambda v: _number(v) and 0 <= v < 1,
        "a number in [0, 1)",
        "optimizer.momentum=0.9",
    ),
    "optimizer.weight_decay": (
        lambda v: _number(v) and v >= 0,
        "a number >= 0",
        "optimizer.weight_decay=0.0001",
    ),
    "loss.l2": (lambda v: _number(v) and v >= 0, "a number >= 0", "loss.l2=0.01"),
    "data.batch_size": (lambda v: _whole(v) and v >= 1, "a whole number >= 1", "data.batch_size=1"),
    "data.val_fraction": (
        lambda v: _number(v) and 0 <= v < 1,
        "a number in [0, 1)",
        "data.val_fraction=0.2",
    ),
    "data.n": (lambda v: _whole(v) and v >= 1, "a whole number >= 1", "data.n=1000"),
    "data.noise_std": (lambda v: _number(v) and v >= 0, "a number >= 0", "data.noise_std=0.1"),
    "data.shuffle": (lambda v: isinstance(v, bool), "true or false", "data.shuffle=true"),
    "trainer.max_epochs": (
        lambda v: _whole(v) and v >= 1,
        "a whole number >= 1",
        "trainer.max_epochs=100",
    ),
    "trainer.log_every_n_steps": (
        lambda v: _whole(v) and v >= 1,
        "a whole number >= 1",
        "trainer.log_every_n_steps=10",
    ),
    "callbacks.histograms.every_n_steps": (
        lambda v: _whole(v) and v >= 1,
        "a whole number >= 1",
        "callbacks.histograms.every_n_steps=50",
    ),
    "callbacks.gradient_check.every_n_steps": (
        lambda v: _whole(v) and v >= 1,
        "a whole number >= 1",
        "callbacks.gradient_check.every_n_steps=10",
    ),
    "callbacks.gradient_check.rtol": (
        lambda v: _number(v) and v > 0,
        "a number > 0",
        "callbacks.gradient_check.rtol=1e-4",
    ),
    "callbacks.gradient_check.atol": (
        lambda v: _number(v) and v > 0,
        "a number > 0",
        "callbacks.gradient_check.atol=1e-7",
    ),
    "model.gradients": (
        lambda v: v in ("autograd", "manual"),
        "autograd or manual",
        "model.gradients=manual",
    ),
    "objective.mode": (lambda v: v in ("min", "max"), "min or max", "objective.mode=min"),
}


def check(cfg: DictConfig) -> None:
    """Raise ConfigError naming the first value that breaks its rule, and how to set it."""
    for key, (test, must_be, example) in RULES.items():
        value = OmegaConf.select(cfg, key, default=_MISSING)
        if value is _MISSING:
            continue
        if not test(value):
            raise ConfigError(f"{key} must be {must_be}, got {value!r}; e.g. {example}")
    terms = OmegaConf.select(cfg, "loss.terms", default=None)
    if terms is not None:
        bad = {k: v for k, v in terms.items() if not _number(v)}
        if bad:
            raise ConfigError(
                f"loss.terms weights must be numbers, got {dict(bad)}; e.g. loss.terms.mse=1.0"
            )


_MISSING = object()
