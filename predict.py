"""Predict with a trained model: `uv run predict.py ckpt_path=<ckpt or run dir> x=[4.0]`.

`ckpt_path=last` takes the newest run's; `input_csv=inputs.csv output_csv=predictions.csv` reads
and writes CSV. See conf/predict.yaml for every option.
"""

from backprop_lab import cli  # first: from here on a Ctrl-C ends in one line, exit 130

# isort: split
import hydra
from omegaconf import DictConfig

import backprop_lab.config  # noqa: F401  (registers the resolvers the configs use)


def task(cfg: DictConfig) -> None:
    from backprop_lab.tools.predict import main  # torch loads only when a prediction starts

    cli.imports_done()
    main(cfg)


@hydra.main(version_base="1.3", config_path="conf", config_name="predict")
def main(cfg: DictConfig) -> None:
    cli.run(task, cfg)


if __name__ == "__main__":
    cli.check_choices()  # an unknown group option: one line, before Hydra composes
    main()
