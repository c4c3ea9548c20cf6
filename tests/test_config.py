"""Config composition: every group option composes, `model=X` selects its seed's setup."""

from __future__ import annotations

import lightning.pytorch as pl
import pytest
import torch
from hydra.utils import instantiate

from backprop_lab.models import SeedModel
from backprop_lab.training.build import build, make

from conftest import ROOT

GROUPS = ["model", "data", "loss", "optimizer", "trainer", "logger", "callbacks", "experiment"]


@pytest.mark.parametrize("group", GROUPS)
def test_every_option_of_every_group_composes_and_instantiates(make_cfg, group):
    options = sorted(p.stem for p in (ROOT / "conf" / group).glob("*.yaml"))
    assert options, f"conf/{group}/ has no options"
    for option in options:
        fitting = ["model=sigmoid_net"] if option == "seed000_sigmoid" else []  # 2 in, 2 out
        cfg = make_cfg(f"{group}={option}", *fitting)
        datamodule, model = build(cfg)  # data, loss, optimizer and model, checked to fit
        assert isinstance(datamodule, pl.LightningDataModule) and isinstance(model, SeedModel)
        callbacks = [make("callbacks", c) for c in (cfg.get("callbacks") or {}).values() if c]
        loggers = [make("logger", lg) for lg in (cfg.get("logger") or {}).values() if lg]
        assert all(isinstance(c, pl.Callback) for c in callbacks)
        trainer = make("trainer", cfg.trainer, callbacks=callbacks, logger=loggers or False)
        assert isinstance(trainer, pl.Trainer)
        assert all(c in trainer.callbacks for c in callbacks)
        assert len(trainer.loggers) == len(loggers)


@pytest.mark.parametrize(
    ("model", "data_csv", "lr", "batch_size", "epochs"),
    [
        ("quadratic", "y_equals_2x.csv", 0.01, 1, 100),
        ("linear", "y_equals_2x.csv", 0.01, 1, 100),
        ("sigmoid_net", "seed000_sigmoid.csv", 1.0, 1, 100),
    ],
)
def test_model_alone_selects_its_seed_setup(make_cfg, model, data_csv, lr, batch_size, epochs):
    cfg = make_cfg(f"model={model}")
    assert cfg.data.train_csv.endswith(data_csv)
    assert (cfg.optimizer.lr, cfg.data.batch_size, cfg.trainer.max_epochs) == (
        lr,
        batch_size,
        epochs,
    )
    assert cfg.data.shuffle is False


def test_command_line_wins_over_the_seed_setup(make_cfg):
    cfg = make_cfg(
        "model=quadratic",
        "optimizer=adam",
        "optimizer.lr=0.1",
        "optimizer.weight_decay=0.01",
        "trainer.max_epochs=5",
    )
    assert cfg.optimizer._target_ == "torch.optim.Adam"
    assert (cfg.optimizer.lr, cfg.optimizer.weight_decay, cfg.trainer.max_epochs) == (0.1, 0.01, 5)


def test_sgd_momentum_and_weight_decay_are_overridable(make_cfg):
    factory = instantiate(
        make_cfg("optimizer.momentum=0.9", "optimizer.weight_decay=0.01").optimizer
    )
    group = factory([torch.zeros(1, requires_grad=True)]).param_groups[0]
    assert (group["lr"], group["momentum"], group["weight_decay"]) == (0.01, 0.9, 0.01)


def test_accelerator_auto_by_default_and_cpu_on_request(make_cfg):
    assert make_cfg().trainer.accelerator == "auto"
    assert make_cfg("trainer=cpu").trainer.accelerator == "cpu"


def test_experiment_seed002(make_cfg):
    cfg = make_cfg("experiment=seed002")
    assert cfg.model.bias is True and cfg.model.w == -0.2505 and cfg.model.b == 0.9166
    assert cfg.data.batch_size == 3 and cfg.trainer.max_epochs == 1
