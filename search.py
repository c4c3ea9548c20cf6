"""Search hyperparameters with Optuna: `uv run search.py model=quadratic search.n_trials=30`.

Run the same command again to resume; run it in several shells at once for several workers.
"""

from backprop_lab import cli  # first: from here on a Ctrl-C ends in one line, exit 130

# isort: split
import hydra
from omegaconf import DictConfig

import backprop_lab.config  # noqa: F401  (registers the resolvers the configs use)
from backprop_lab import schema


def task(cfg: DictConfig) -> None:
    schema.check(cfg)
    from backprop_lab.tools.search import search  # Optuna and Lightning load only here

    cli.imports_done()
    search(cfg)


@hydra.main(version_base="1.3", config_path="conf", config_name="search")
def main(cfg: DictConfig) -> None:
    cli.run(task, cfg)


if __name__ == "__main__":
    cli.check_choices()  # an unknown group option: one line, before Hydra composes
    main()
