"""Evaluate a trained model: `uv run eval.py ckpt_path=last data.test_csv=test.csv`.

Prints the test metrics Loss/test, test/mse, test/mae and test/r2 of any checkpoint train.py
wrote, on any CSV with the run's columns. See conf/eval.yaml for every option.
"""

from backprop_lab import cli  # first: from here on a Ctrl-C ends in one line, exit 130

# isort: split
import hydra
from omegaconf import DictConfig

import backprop_lab.config  # noqa: F401  (registers the resolvers the configs use)


def task(cfg: DictConfig) -> None:
    from backprop_lab.tools.evaluate import main  # torch loads only when an evaluation starts

    cli.imports_done()
    main(cfg)


@hydra.main(version_base="1.3", config_path="conf", config_name="eval")
def main(cfg: DictConfig) -> None:
    cli.run(task, cfg)


if __name__ == "__main__":
    cli.check_choices()  # an unknown group option: one line, before Hydra composes
    main()
