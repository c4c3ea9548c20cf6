"""Train a seed model: `uv run train.py model=quadratic` (see conf/train.yaml for every option)."""

import sys

import hydra
from omegaconf import DictConfig

import backprop_lab.config  # noqa: F401  (registers the resolvers the configs use)
from backprop_lab.errors import BackpropLabError


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> None:
    from backprop_lab.training import train  # Lightning loads only when a run starts

    try:
        train(cfg)
    except BackpropLabError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
