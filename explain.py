"""Explain one step: `uv run explain.py model=sigmoid_net [step=K] [format=markdown|json]
[graph=graph.png]`."""

from backprop_lab import cli  # first: from here on a Ctrl-C ends in one line, exit 130

# isort: split
import hydra
from omegaconf import DictConfig

import backprop_lab.config  # noqa: F401  (registers the resolvers the configs use)
from backprop_lab import schema


def task(cfg: DictConfig) -> None:
    schema.check(cfg)
    from backprop_lab.tools.explain import explain, write, write_graph

    cli.imports_done()
    derivation = explain(cfg)
    write(derivation, cfg.format, cfg.output)
    if cfg.graph is not None:
        write_graph(derivation, str(cfg.graph))


@hydra.main(version_base="1.3", config_path="conf", config_name="explain")
def main(cfg: DictConfig) -> None:
    cli.run(task, cfg)


if __name__ == "__main__":
    cli.check_choices()  # an unknown group option: one line, before Hydra composes
    main()
