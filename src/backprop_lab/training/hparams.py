"""The run's hyperparameters for TensorBoard's HParams tab."""

from __future__ import annotations

from typing import Any

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from backprop_lab.config import task_overrides

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


def hparams(cfg: DictConfig) -> dict[str, Any]:
    """The run's hyperparameters for the HParams tab: group choices, key values, overrides."""
    hparams: dict[str, Any] = {}
    if HydraConfig.initialized():
        choices = HydraConfig.get().runtime.choices
        hparams.update({g: choices.get(g) for g in ("model", "data", "loss", "optimizer")})
    for key in HPARAM_KEYS:
        value = OmegaConf.select(cfg, key, default=None)
        if value is not None:
            hparams[key] = value
    hparams.update(dict(o.split("=", 1) for o in task_overrides() if "=" in o))
    return hparams
