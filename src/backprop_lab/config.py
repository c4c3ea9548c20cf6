"""Where the configs live, and the OmegaConf resolvers they use (registered on import)."""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

#: The project checkout: src/backprop_lab/config.py -> the repository root.
PROJECT_ROOT = Path(__file__).resolve().parents[2]
CONFIG_DIR = PROJECT_ROOT / "conf"


def short_overrides(overrides: list[str], exclude: list[str] = ()) -> str:  # type: ignore[assignment]
    """A sweep job's dir name from its overrides: the swept ones only, where the sweep varies
    some (:func:`swept_keys`), each key by its last part where that is unambiguous
    (``lr=0.1,max_epochs=50``), so run lists, image cards and HParams' Trial IDs show the values
    that set the jobs apart before they are cut."""
    pairs = [(k.lstrip("+~"), v) for k, v in (o.split("=", 1) for o in overrides if "=" in o)]
    pairs = [(k, v) for k, v in pairs if k not in set(exclude)]
    swept = swept_keys()
    if swept and any(k in swept for k, _ in pairs):
        pairs = [(k, v) for k, v in pairs if k in swept]
    last = [k.rsplit(".", 1)[-1] for k, _ in pairs]
    return ",".join(
        f"{short if last.count(short) == 1 else key}={value}"
        for (key, value), short in zip(pairs, last, strict=True)
    )


def swept_keys() -> set[str] | None:
    """In a multirun, the keys its sweep varies (``optimizer.lr=0.01,0.1``, ``seed=range(3)``, or
    ``hydra.sweeper.params``), as the sweep's ``multirun.yaml`` holds them (Hydra's sweeper writes
    it before the first job); None outside a multirun or where that file says nothing."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return None
    path = Path(HydraConfig.get().sweep.dir) / "multirun.yaml"
    if not path.is_file():
        return None
    saved = OmegaConf.load(path)
    overrides = [str(o) for o in OmegaConf.select(saved, "hydra.overrides.task", default=[]) or []]
    params = OmegaConf.select(saved, "hydra.sweeper.params", default=None) or {}
    overrides += [f"{key}={value}" for key, value in params.items()]
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except HydraException:
        return None
    return {o.key_or_group.lstrip("+~") for o in parsed if o.is_sweep_override()}


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
