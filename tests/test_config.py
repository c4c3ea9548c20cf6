"""Config composition: every option composes, a model config holds the model, and the seed setups
are experiments: the one of the chosen model and data by default, or one named by experiment=."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from backprop_lab.models import MODELS, SeedModel, model_keys
from backprop_lab.training.build import build, make

from conftest import ROOT

CONF = ROOT / "conf"
GROUPS = ["model", "data", "loss", "optimizer", "trainer", "logger", "callbacks", "experiment"]
#: conf/experiment/<model>/<data>.yaml: what `model=<model> data=<data>` runs by default.
SETUPS = sorted(p.relative_to(CONF / "experiment") for p in CONF.glob("experiment/*/*.yaml"))
#: The seeds a model alone reproduces, and the seed experiment that names each.
SEEDS = {"quadratic": "seed004", "linear": "seed003", "sigmoid_net": "seed000"}


@pytest.mark.parametrize("group", GROUPS)
def test_every_option_of_every_group_composes_and_instantiates(make_cfg, group):
    options = sorted(p.stem for p in (CONF / group).glob("*.yaml"))
    assert options, f"conf/{group}/ has no options"
    for option in options:
        fitting = ["model=sigmoid_net"] if option == "seed000_sigmoid" else []  # 2 in, 2 out
        cfg = make_cfg(f"{group}={option}", *fitting)
        datamodule, model = build(cfg)  # data, loss, optimizer and model, checked to fit
        assert isinstance(datamodule, pl.LightningDataModule) and isinstance(model, SeedModel)
        callbacks = [make("callbacks", c) for c in (cfg.get("callbacks") or {}).values() if c]
        callbacks = [c for c in callbacks if c is not None]  # early_stopping: off, no callback
        loggers = [make("logger", lg) for lg in (cfg.get("logger") or {}).values() if lg]
        assert all(isinstance(c, pl.Callback) for c in callbacks)
        trainer = make("trainer", cfg.trainer, callbacks=callbacks, logger=loggers or False)
        assert isinstance(trainer, pl.Trainer)
        assert all(c in trainer.callbacks for c in callbacks)
        assert len(trainer.loggers) == len(loggers)


def test_every_model_of_the_allow_list_has_a_config_that_holds_only_the_model():
    configs = {p.stem: OmegaConf.load(p) for p in (CONF / "model").glob("*.yaml")}
    assert {c._target_ for c in configs.values()} == set(MODELS)
    for name, config in configs.items():
        # A model's arguments only: no `# @package _global_` reaching into optimizer or trainer.
        arguments = {"_target_", *model_keys(MODELS[config._target_])}
        assert set(config) - {"defaults"} <= arguments, f"conf/model/{name}.yaml"


@pytest.mark.parametrize(
    ("model", "data_csv", "lr", "epochs", "predict_at"),
    [
        ("quadratic", "y_equals_2x.csv", 0.01, 100, [4.0]),
        ("linear", "y_equals_2x.csv", 0.01, 100, [4.0]),
        ("sigmoid_net", "seed000_sigmoid.csv", 1.0, 100, [[0.5, 0.3]]),
    ],
)
def test_model_alone_runs_its_seeds_experiment(make_cfg, model, data_csv, lr, epochs, predict_at):
    cfg = make_cfg(f"model={model}")
    assert cfg.data.train_csv.endswith(data_csv)
    assert (cfg.data.batch_size, cfg.data.shuffle) == (1, False)
    assert (cfg.optimizer.lr, cfg.trainer.max_epochs) == (lr, epochs)
    assert cfg.trainer.log_every_n_steps == 1  # every step, as the seed prints
    assert OmegaConf.to_object(cfg.predict_at) == predict_at
    assert cfg.run_name == model


@pytest.mark.parametrize("setup", SETUPS, ids=str)
def test_every_setup_is_what_its_model_runs_on_its_data(make_cfg, setup: Path):
    model, data = setup.parent.name, setup.stem
    cfg = make_cfg(f"model={model}", f"data={data}")
    assert cfg.hydra.runtime.choices.experiment == f"{model}/{data}"
    setup_values = OmegaConf.load(CONF / "experiment" / setup)
    for key, values in setup_values.items():
        composed = OmegaConf.to_object(cfg[key])
        assert OmegaConf.to_object(OmegaConf.merge(composed, values)) == composed, key
    build(cfg)  # and the model fits the data


@pytest.mark.parametrize("model", sorted(SEEDS))
def test_the_named_seed_experiment_pins_what_the_model_alone_runs(make_cfg, model):
    alone, named = make_cfg(f"model={model}"), make_cfg(f"experiment={SEEDS[model]}")
    for key in ("model", "data", "loss", "optimizer", "trainer", "predict_at"):
        assert OmegaConf.to_object(named[key]) == OmegaConf.to_object(alone[key]), key
    assert named.run_name == SEEDS[model]


@pytest.mark.parametrize("model", ["linear", "quadratic", "sigmoid_net", "cubic"])
def test_other_data_trains_the_model_with_the_groups_defaults(make_cfg, model):
    cfg = make_cfg(f"model={model}", "data=synthetic")
    assert cfg.data._target_ == "backprop_lab.data.SyntheticDataModule"
    assert cfg.trainer.log_every_n_steps == 10  # the trainer's default: no seed ran on this data
    assert (cfg.optimizer.lr, cfg.trainer.max_epochs) == (0.01, 100)
    assert cfg.predict_at is None  # a seed's inputs mean nothing on other data
    assert cfg.run_name == model


def test_the_command_line_data_wins_over_an_experiments_data(make_cfg):
    cfg = make_cfg("experiment=seed002", "data=y_equals_2x")
    assert cfg.data.train_csv.endswith("y_equals_2x.csv")
    assert cfg.model.bias is True and cfg.trainer.max_epochs == 1  # the rest of seed 002 stays


def test_command_line_values_win_over_the_seed_setup(make_cfg):
    cfg = make_cfg(
        "model=quadratic",
        "optimizer=adam",
        "optimizer.lr=0.1",
        "optimizer.weight_decay=0.01",
        "trainer.max_epochs=5",
        "trainer.log_every_n_steps=3",
    )
    assert cfg.optimizer._target_ == "torch.optim.Adam"
    assert (cfg.optimizer.lr, cfg.optimizer.weight_decay) == (0.1, 0.01)
    assert (cfg.trainer.max_epochs, cfg.trainer.log_every_n_steps) == (5, 3)


def test_the_cubic_alone_trains_with_a_learning_rate_it_is_stable_at(make_cfg):
    cfg = make_cfg("model=cubic")
    assert cfg.data.train_csv.endswith("y_equals_2x.csv")
    # Per-sample SGD on a row x is stable for lr < 1 / |(x^3, x^2, x, 1)|^2: 1/820 at x = 3.
    assert cfg.optimizer.lr < 1 / (3**6 + 3**4 + 3**2 + 1)


def test_sgd_momentum_and_weight_decay_are_overridable(make_cfg):
    factory = instantiate(
        make_cfg("optimizer.momentum=0.9", "optimizer.weight_decay=0.01").optimizer
    )
    group = factory([torch.zeros(1, requires_grad=True)]).param_groups[0]
    assert (group["lr"], group["momentum"], group["weight_decay"]) == (0.01, 0.9, 0.01)


def test_accelerator_auto_by_default_and_cpu_on_request(make_cfg):
    assert make_cfg().trainer.accelerator == "auto"
    assert make_cfg("trainer=cpu").trainer.accelerator == "cpu"


def test_experiment_seed002_pins_its_model_batch_and_run_name(make_cfg):
    cfg = make_cfg("experiment=seed002")
    assert cfg.model._target_ == "backprop_lab.models.LinearRegression"
    assert cfg.model.bias is True and cfg.model.w == -0.2505 and cfg.model.b == 0.9166
    assert cfg.data.batch_size == 3 and cfg.trainer.max_epochs == 1
    assert cfg.run_name == "seed002"


def test_a_sweep_job_is_named_by_what_the_sweep_varies(tmp_path, monkeypatch):
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import OmegaConf

    from backprop_lab.config import short_overrides

    (tmp_path / "multirun.yaml").write_text(
        "hydra:\n  overrides:\n    task: [model=quadratic, 'optimizer.lr=0.01,0.1', seed=range(2),"
        " trainer.max_epochs=5, paths.log_dir=/x]\n"
    )
    hydra = OmegaConf.create({"mode": RunMode.MULTIRUN, "sweep": {"dir": str(tmp_path)}})
    monkeypatch.setattr(HydraConfig, "initialized", staticmethod(lambda: True))
    monkeypatch.setattr(HydraConfig, "get", staticmethod(lambda: hydra))
    job = [
        "model=quadratic",
        "optimizer.lr=0.1",
        "seed=1",
        "trainer.max_epochs=5",
        "paths.log_dir=/x",
    ]
    assert short_overrides(job, ["paths.log_dir"]) == "lr=0.1,seed=1"
    (tmp_path / "multirun.yaml").unlink()  # no sweep to read: every override, keys shortened
    assert short_overrides(job, ["paths.log_dir"]) == "model=quadratic,lr=0.1,seed=1,max_epochs=5"
    # a last part two keys share keeps its whole key
    assert short_overrides(["data.seed=1", "seed=2"]) == "data.seed=1,seed=2"
