"""Every bad value a user can type is one line naming the key and a valid example, found when the
config is composed (schema.check), before anything is built or trained."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import DictConfig, OmegaConf

from backprop_lab import schema
from backprop_lab.errors import ConfigError
from backprop_lab.models import MODELS, model_keys
from backprop_lab.models.base import as_parameter
from backprop_lab.tools.explain import check_options
from backprop_lab.tools.predict import as_list, choose_device
from backprop_lab.tools.predict import main as predict_main
from backprop_lab.training.build import build

from conftest import ROOT

GOOD = [
    [],
    ["model=linear"],
    ["model=sigmoid_net"],
    ["experiment=seed002"],
    ["seed=null"],
    ["seed=0"],
    ["seed=4294967295"],
    ["optimizer=adam", "optimizer.lr=0.1"],
    ["optimizer=torch_sgd", "optimizer.momentum=0.9"],
    ["model=linear", "trainer.precision=64", "model.w=1e39"],
    ["model=linear", "model.w=3.4028234663852886e38"],  # float32's largest value
    ["model=linear", "trainer.precision=16-mixed", "model.w=70000"],  # float32 weights
    ["model=sigmoid_net", "model.hidden_bias=[0.35,0.35]", "model.output_bias=[0.6,0.6]"],
    ["model=sigmoid_net", "model.train_bias=false"],
    ["model=sigmoid_net", "predict_at=[[0.5,0.3],[0.1,0.9]]"],
    ["predict_at=null"],
    ["predict_at=[1,[2.0],3]"],
    ["loss=weighted", "loss.terms.mse=0"],
    ["loss=mae", "loss.l2=0.01"],
]

#: (overrides, words the message must hold). Each message names the key and shows a valid value.
BAD = [
    (["seed=-1"], ["seed must be a whole number or null", "4294967295", "got -1", "seed=0"]),
    (["seed=4294967296"], ["seed must be a whole number", "got 4294967296"]),
    (["seed=1.5"], ["seed must be a whole number", "got 1.5"]),
    (["model=linear", "model.w=[1,2]"], ["model.w must be a number", "[1, 2]", "model.w=3.0"]),
    (["model=linear", "model.b=[1,2]"], ["model.b must be a number", "model.b=0.0"]),
    (["model=linear", "model.w=abc"], ["model.w must be a number", "'abc'"]),
    (["model=linear", "model.w=true"], ["model.w must be a number", "True"]),
    (["model=linear", "model.bias=abc"], ["model.bias must be true or false", "model.bias=false"]),
    (
        ["model.w=[1,2]"],
        [
            "model.w must be a list of 3 numbers",
            "3 coefficients",
            "[1, 2]",
            "model.w=[1.0,1.0,1.0]",
        ],
    ),
    (["model.w=5"], ["model.w must be a list of 3 numbers", "got 5"]),
    (["model.w=[[1,2,3]]"], ["model.w must be a list of 3 numbers"]),
    (["model.w=[a,b,c]"], ["model.w must be numbers", "['a', 'b', 'c']"]),
    (
        ["model=sigmoid_net", "model.hidden_weight=[[1,2],[3]]"],
        ["model.hidden_weight must be a rectangular matrix", "[[1, 2], [3]]", "[[0.2,0.5],"],
    ),
    (["model=sigmoid_net", "model.hidden_weight=5"], ["model.hidden_weight must be a rectangular"]),
    (
        ["model=sigmoid_net", "model.output_weight=[[1,2,3],[1,2,3]]"],
        ["model.output_weight needs 2 columns", "one column per hidden unit", "has 2 rows"],
    ),
    (
        ["model=sigmoid_net", "model.hidden_bias=[0.1]"],
        ["model.hidden_bias needs 2 values", "one value per hidden unit", "[0.1]"],
    ),
    (["model=sigmoid_net", "model.output_bias=abc"], ["model.output_bias must be numbers"]),
    (["model=sigmoid_net", "model.train_bias=abc"], ["model.train_bias must be true or false"]),
    (
        ["model=linear", "+model.foo=1"],
        ["model.foo is not an argument of LinearRegression", "w, bias, b, gradients"],
    ),
    (["model._target_=os.system"], ["model._target_", "LinearRegression", "SigmoidNet"]),
    (
        ["model=linear", "model.w=1e39"],
        ["model.w holds 1e+39", "beyond float32", "trainer.precision=64"],
    ),
    (["model=linear", "model.w=3.5e38"], ["model.w holds 3.5e+38", "beyond float32"]),
    (["model.w=[1,1e39,1]"], ["model.w holds 1e+39", "trainer.precision=64"]),
    (
        ["model=linear", "trainer.precision=16-true", "model.w=70000"],
        ["model.w holds 70000", "beyond float16", "trainer.precision=16-true"],
    ),
    (
        ["model=linear", "trainer.precision=64", "model.w=1e400"],
        ["model.w must be a number", "inf"],
    ),
    (
        ["predict_at=[[1,2]]"],
        ["predict_at", "1 input feature", "[1, 2] has 2", "predict_at=[4.0]"],
    ),
    (["predict_at=abc"], ["predict_at must be null or a list", "got 'abc'", "predict_at=[4.0]"]),
    (["predict_at=[a]"], ["predict_at", "'a' is not a number", "predict_at=[4.0]"]),
    (["predict_at=4.0"], ["predict_at must be null or a list", "got 4.0"]),
    (
        ["model=sigmoid_net", "predict_at=[0.5,0.3]"],
        ["predict_at", "2 input features", "predict_at=[[0.5,0.3]]"],
    ),
    (
        ["optimizer=adam", "+optimizer.momentum=0.9"],
        [
            "optimizer.momentum is not an argument of torch.optim.Adam",
            "lr, betas, eps, weight_decay",
        ],
    ),
    # not "momentum must be in [0, 1)": Adam takes no momentum at all
    (["optimizer=adam", "+optimizer.momentum=2"], ["optimizer.momentum is not an argument"]),
    (
        ["+optimizer.betas=[0.9,0.99]"],
        ["optimizer.betas is not an argument of", "backprop_lab.training.optim"],
    ),
    (
        ["optimizer._target_=torch.optim.Adamm"],
        [
            "optimizer._target_ must be backprop_lab.training.optim.SGD or an optimizer of "
            "torch.optim"
        ],
    ),
    (["optimizer._target_=os.system"], ["optimizer._target_ must be", "got os.system"]),
    (["optimizer._target_=torch.optim.lr_scheduler.StepLR"], ["optimizer._target_ must be"]),
    (["loss.terms.mse=-1"], ["loss.terms.mse must be a number >= 0", "got -1"]),
    (["loss.terms.mse=abc"], ["loss.terms.mse must be a number >= 0", "'abc'"]),
    (["loss.terms.mse=0"], ["loss.terms needs a weight > 0", "loss.terms.mse=1.0"]),
    (["loss=weighted", "loss.terms.mse=0", "loss.terms.mae=0"], ["loss.terms needs a weight > 0"]),
    (["loss.l2=-1"], ["loss.l2 must be a number >= 0", "loss.l2=0.01"]),
    (
        ["callbacks.model_checkpoint.every_n_epochs=0"],
        ["callbacks.model_checkpoint.every_n_epochs must be a whole number >= 1, or null"],
    ),
    (["callbacks.best_checkpoint.every_n_epochs=abc"], ["best_checkpoint.every_n_epochs"]),
]


@pytest.mark.parametrize("overrides", GOOD, ids=[" ".join(o) or "defaults" for o in GOOD])
def test_good_configs_pass(make_cfg, overrides):
    schema.check(make_cfg(*overrides))


@pytest.mark.parametrize(("overrides", "words"), BAD, ids=[" ".join(o) for o, _ in BAD])
def test_bad_values_are_one_line_naming_the_key(make_cfg, overrides, words):
    with pytest.raises(ConfigError) as error:
        schema.check(make_cfg(*overrides))
    message = str(error.value)
    for word in words:
        assert word in message, (word, message)
    assert "\n" not in message


def test_building_checks_the_schema_before_the_constructor(make_cfg):
    """One layer of messages: build() reports schema's, not the constructor's ValueError."""
    with pytest.raises(ConfigError, match=r"^model: model\.w must be a list of 3 numbers"):
        build(make_cfg("model.w=[1,2]"))


def test_float64_runs_start_from_values_beyond_float32(make_cfg):
    _, model = build(make_cfg("model=linear", "trainer.precision=64", "model.w=1e39"))
    assert model.w.dtype == torch.float64 and model.w.item() == 1e39
    assert as_parameter([1.0, 2.0]).dtype == torch.float32  # everything else stays float32


def test_the_float32_limit_is_torchs(make_cfg):
    """schema's "beyond float32" is exactly where torch rounds a value to inf."""
    largest = torch.finfo(torch.float32).max
    for value in (largest, math.nextafter(largest, math.inf), 3.4028235677973366e38):
        rounds_to_inf = bool(torch.tensor(value, dtype=torch.float64).float().isinf())
        cfg = make_cfg("model=linear", f"model.w={value!r}")
        if rounds_to_inf:
            with pytest.raises(ConfigError, match="beyond float32"):
                schema.check(cfg)
        else:
            schema.check(cfg)


@pytest.mark.parametrize("cls", MODELS.values(), ids=list(MODELS))
def test_every_model_declares_each_of_its_config_values(cls):
    assert set(cls.config_values) == set(model_keys(cls)) - {"gradients"}


def test_targets_outside_the_allow_lists_are_never_imported(make_cfg, tmp_path, monkeypatch):
    """A config names code; the schema looks up only the project's models and torch.optim."""
    marker = tmp_path / "imported"
    (tmp_path / "trap.py").write_text(
        f"open({str(marker)!r}, 'w').close()\nclass Model: pass\nclass Adam: pass\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    for override in ("model._target_=trap.Model", "optimizer._target_=trap.Adam"):
        with pytest.raises(ConfigError, match="_target_"):
            schema.check(make_cfg(override))
    assert not marker.exists() and "trap" not in sys.modules


# --- predict.py's and explain.py's own options ------------------------------------------------


@pytest.mark.parametrize(
    ("device", "words"),
    [
        ("cuda:abc", "device=cuda:abc is not a device; use auto, cpu, cuda, cuda:<n> or mps"),
        ("meta", "device=meta is not a device"),
        ("gpu", "device=gpu is not a device"),
        ("cuda:99", "device=cuda:99, but torch sees"),
        pytest.param(
            "mps",
            "device=mps, but torch sees no Apple MPS device here; use device=auto or device=cpu",
            marks=pytest.mark.skipif(
                torch.backends.mps.is_available(), reason="this machine has MPS"
            ),
        ),
    ],
)
def test_devices_that_are_not_there(device, words):
    with pytest.raises(ConfigError, match=words.replace("(", r"\(").replace(")", r"\)")):
        choose_device(device)


def test_devices_that_are_there():
    assert choose_device("cpu") == torch.device("cpu")
    assert choose_device("auto").type in ("cpu", "cuda", "mps")


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"show": "abc"}, "show must be a whole number >= 0 (the rows printed) or -1 (all"),
        ({"show": -5}, "show must be a whole number >= 0"),
        ({"show": 1.5}, "got 1.5; e.g. show=20"),
        ({"x": "abc"}, "x must be numbers: a number per row, e.g. x=[4.0,5.0]"),
        ({"x": [[0.5, "a"]]}, "x must be numbers"),
        ({"x": [[[1.0]]]}, "x must be numbers"),
        ({"device": "mps:abc"}, "device=mps:abc is not a device"),
    ],
)
def test_predict_options(options, words):
    cfg = OmegaConf.create({"ckpt_path": "missing.ckpt", "device": "cpu", **options})
    with pytest.raises(ConfigError) as error:
        predict_main(cfg)
    assert words in str(error.value)


@pytest.mark.parametrize("options", [{"show": -1}, {"show": 0, "x": [4.0]}, {"x": [[0.5, 0.3]]}])
def test_good_predict_options_go_on_to_the_checkpoint(options):
    cfg = OmegaConf.create({"ckpt_path": None, "device": "cpu", **options})
    with pytest.raises(Exception, match="no checkpoint given") as error:
        predict_main(cfg)
    assert not isinstance(error.value, ConfigError)


def test_columns_may_name_one_column_alone():
    assert as_list("x2") == ["x2"] and as_list(5) == ["5"]
    assert as_list(OmegaConf.create(["a", "b"])) == ["a", "b"] and as_list(None) is None


def explain_cfg(**options) -> DictConfig:
    return OmegaConf.create({"step": 0, "format": "text", "output": None, **options})


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"step": -1}, "step must be a whole number >= 0"),
        (
            {"step": "abc"},
            "step must be a whole number >= 0 (the updates before the one explained)",
        ),
        ({"step": 1.5}, "got 1.5; e.g. step=99"),
        ({"format": "foo"}, "format must be one of text, markdown, json, got 'foo'"),
        ({"output": "{file}/x.md"}, "cannot be written: {file} is a file, not a directory"),
        ({"output": "{file}/a/x.md"}, "{file} is a file, not a directory"),
        ({"output": "{dir}/missing/x.md"}, "the directory {dir}/missing does not exist"),
        ({"output": "{dir}"}, "output={dir} cannot be written: it is a directory"),
    ],
)
def test_explain_options(tmp_path, options, words):
    file = tmp_path / "file"
    file.write_text("")
    names = {"file": str(file), "dir": str(tmp_path)}
    options = {k: v.format(**names) if isinstance(v, str) else v for k, v in options.items()}
    with pytest.raises(ConfigError) as error:
        check_options(explain_cfg(**options))
    assert words.format(**names) in str(error.value)


def test_good_explain_options(tmp_path):
    check_options(explain_cfg())
    check_options(explain_cfg(step=99, format="json", output=str(tmp_path / "derivation.json")))


# --- through the entry points: exit status 1, one `error:` line, no traceback ------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    ("script", "args", "words"),
    [
        ("predict.py", ["show=abc"], "error: show must be a whole number >= 0"),
        ("explain.py", ["step=abc"], "error: step must be a whole number >= 0"),
    ],
)
def test_entry_points_end_in_one_line(tmp_path: Path, script, args, words):
    result = subprocess.run(
        [sys.executable, str(ROOT / script), *args],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert result.returncode == 1, result.stderr
    assert result.stderr.startswith(words), result.stderr
    assert [ln for ln in result.stderr.splitlines() if ln.strip()] == [result.stderr.strip()]
    assert "Traceback" not in result.stderr
