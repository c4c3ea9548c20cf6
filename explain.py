"""Explain one step: `uv run explain.py model=sigmoid_net [step=K] [format=markdown|json]`."""

import sys

import hydra
from omegaconf import DictConfig

import backprop_lab.config  # noqa: F401  (registers the resolvers the configs use)
from backprop_lab.errors import BackpropLabError


@hydra.main(version_base="1.3", config_path="conf", config_name="explain")
def main(cfg: DictConfig) -> None:
    from backprop_lab.explain import explain, write

    try:
        write(explain(cfg), cfg.format, cfg.output)
    except BackpropLabError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
