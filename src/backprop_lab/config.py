"""Where the configs live, and the one OmegaConf resolver they use (registered on import)."""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

#: The project checkout: src/backprop_lab/config.py -> the repository root.
PROJECT_ROOT = Path(__file__).resolve().parents[2]
CONFIG_DIR = PROJECT_ROOT / "conf"

if not OmegaConf.has_resolver("project_root"):
    OmegaConf.register_new_resolver("project_root", lambda: str(PROJECT_ROOT))


def task_overrides() -> list[str]:
    """The command line's overrides of this run (or sweep job); none outside Hydra."""
    from hydra.core.hydra_config import HydraConfig

    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
