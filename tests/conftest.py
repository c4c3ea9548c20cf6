"""Shared fixtures: configs composed in-process with Hydra's compose API, outputs under tmp_path."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from backprop_lab.config import CONFIG_DIR, PROJECT_ROOT

ROOT = PROJECT_ROOT


def cli(script: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    """An entry point (train.py, eval.py, ...) run as a user runs it, Hydra's errors short."""
    return subprocess.run(
        [sys.executable, str(ROOT / script), *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
        env={**os.environ, "HYDRA_FULL_ERROR": "0"},
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``gpu`` are skipped, with the reason shown, where CUDA is not available."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def make_cfg(tmp_path: Path) -> Callable[..., DictConfig]:
    """Compose conf/train.yaml with overrides, as `train.py` would, writing under tmp_path."""

    def _make(*overrides: str, out: str = "run", config_name: str = "train") -> DictConfig:
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            cfg = compose(
                config_name=config_name,
                overrides=[
                    f"paths.output_dir={tmp_path / out}",
                    f"paths.log_dir={tmp_path / 'logs'}",
                    "trainer.enable_progress_bar=false",
                    *overrides,
                ],
                return_hydra_config=True,
            )
        HydraConfig.instance().set_config(cfg)
        return cfg

    yield _make
    GlobalHydra.instance().clear()


@pytest.fixture
def run(make_cfg) -> Callable[..., dict]:
    """Train with the given overrides and return the summary that train() wrote to summary.json."""
    from backprop_lab.training.run import train

    def _run(*overrides: str, out: str = "run") -> dict:
        cfg = make_cfg(*overrides, out=out)
        returned = train(cfg)
        written = json.loads((Path(cfg.paths.output_dir) / "summary.json").read_text())
        assert written == returned
        return written

    return _run
