"""Where the configs live, and the OmegaConf resolvers they use (registered on import)."""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

#: The project checkout: src/backprop_lab/config.py -> the repository root.
PROJECT_ROOT = Path(__file__).resolve().parents[2]
CONFIG_DIR = PROJECT_ROOT / "conf"


def short_overrides(overrides: list[str], exclude: list[str] = ()) -> str:  # type: ignore[assignment]
    """A sweep job's dir name from its overrides: each key by its last part where that is
    unambiguous (``optimizer.lr=0.1,max_epochs=50``), so run lists, image cards and HParams'
    Trial IDs show the values that set the jobs apart before they are cut."""
    pairs = [(k.lstrip("+~"), v) for k, v in (o.split("=", 1) for o in overrides if "=" in o)]
    pairs = [(k, v) for k, v in pairs if k not in set(exclude)]
    last = [k.rsplit(".", 1)[-1] for k, _ in pairs]
    return ",".join(
        f"{short if last.count(short) == 1 else key}={value}"
        for (key, value), short in zip(pairs, last, strict=True)
    )


def run_label(run_name: str) -> str:
    """A run's short name, which groups its figures and text in TensorBoard: ``run_name``, or in
    a sweep the job's dir name (its number and overrides)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        return Path(HydraConfig.get().runtime.output_dir).name
    return str(run_name)


for _name, _resolver in (
    ("project_root", lambda: str(PROJECT_ROOT)),
    ("short_overrides", short_overrides),
    ("run_label", run_label),
):
    if not OmegaConf.has_resolver(_name):
        OmegaConf.register_new_resolver(_name, _resolver)


def task_overrides() -> list[str]:
    """The command line's overrides of this run (or sweep job); none outside Hydra."""
    from hydra.core.hydra_config import HydraConfig

    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
