"""The run's hyperparameters for TensorBoard's HParams tab."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from backprop_lab.config import run_label, swept_keys, task_overrides

#: Hyperparameters shown in TensorBoard's HParams tab for every run (besides its overrides).
HPARAM_KEYS = (
    "optimizer.lr",
    "optimizer.momentum",
    "optimizer.weight_decay",
    "data.batch_size",
    "trainer.max_epochs",
    "loss.l2",
    "model.gradients",
    "seed",
)
GROUPS = ("model", "data", "loss", "optimizer")


def hparams(cfg: DictConfig) -> tuple[dict[str, Any], list[str]]:
    """The run's hyperparameters (group choices, key values, the overrides) and the keys the
    HParams tab lists first: those a sweep varies, or those the command line set.

    Values keep their type (``optimizer.lr=0.01`` is the float 0.01, as the run used it); a value
    TensorBoard cannot show as a number, bool or string (a list) is shown as its text. Keys kept
    out of sweep dir names (paths, the progress bar) are kept out here too."""
    values: dict[str, Any] = {}
    if HydraConfig.initialized():
        choices = HydraConfig.get().runtime.choices
        values.update({g: choices.get(g) for g in GROUPS if choices.get(g) is not None})
    for key in HPARAM_KEYS:
        value = OmegaConf.select(cfg, key, default=None)
        if value is not None:
            values[key] = value
    excluded = set(_excluded_keys())
    chosen = []
    for override in task_overrides():
        key, _, text = override.lstrip("+~").partition("=")
        if not text or key in excluded or key.startswith("hydra."):
            continue
        value = values.get(key) if key in GROUPS else OmegaConf.select(cfg, key, default=None)
        values[key] = _shown(value, text)
        chosen.append(key)
    swept = swept_keys()
    if swept and swept & set(chosen):  # a sweep: the keys it varies, not those every job shares
        chosen = [k for k in chosen if k in swept]
    return {k: _shown(v, str(v)) for k, v in values.items()}, chosen


def trial_id(cfg: DictConfig) -> str:
    """The run's name in the HParams table: a sweep job's dir name (its number and overrides,
    short enough to read there), or the run's name and start time."""
    label = run_label(str(cfg.run_name))
    if label != str(cfg.run_name):
        return label
    return f"{label}/{Path(cfg.paths.output_dir).name}"


def _shown(value: Any, text: str) -> bool | int | float | str:
    if isinstance(value, bool | int | float | str):
        return value
    return text


def _excluded_keys() -> list[str]:
    if not HydraConfig.initialized():
        return []
    dirname = HydraConfig.get().job.config.override_dirname
    return list(dirname.exclude_keys or [])
