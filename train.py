"""Train a seed model: `uv run train.py model=quadratic` (see conf/train.yaml for every option)."""

import hydra
from omegaconf import DictConfig

import backprop_lab.config  # noqa: F401  (registers the resolvers the configs use)


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> None:
    from backprop_lab.training import train  # Lightning loads only when a run starts

    train(cfg)


if __name__ == "__main__":
    main()
