"""Train a seed model: `uv run train.py model=quadratic` (see conf/train.yaml for every option).

`-m` sweeps: `uv run train.py -m model=linear,quadratic optimizer.lr=0.001,0.01,0.1`.
"""

from backprop_lab import cli  # first: from here on a Ctrl-C ends in one line, exit 130

# isort: split
import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

import backprop_lab.config  # noqa: F401  (registers the resolvers the configs use)
from backprop_lab import schema


def task(cfg: DictConfig) -> None:
    if not in_sweep():
        schema.check(cfg)  # before Lightning loads: a typo fails at once
    from backprop_lab.training.run import train

    cli.imports_done()
    train(cfg)  # checks the schema too, and records a failure in the job's summary.json


def in_sweep() -> bool:
    return HydraConfig.get().mode == RunMode.MULTIRUN


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> None:
    cli.run(task, cfg, in_sweep=in_sweep())


if __name__ == "__main__":
    cli.check_choices()  # an unknown group option: one line, before Hydra composes
    main()
