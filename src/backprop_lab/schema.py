"""The config's schema: types, ranges and shapes, checked as soon as the config is composed.

Hydra already rejects unknown config group options (listing the valid ones) and misspelled keys.
This adds what YAML cannot say, each failure one line that names the key and a valid value:

- ranges: optimizer.lr a number above 0, a batch size a whole number of at least 1, ... (RULES);
- the optimizer's arguments, against the signature of the class optimizer._target_ names;
- loss.terms: weights >= 0, not all of them 0;
- the model: one of the project's own (models.MODELS), its keys its constructor's arguments, and
  its initial values of the shapes its class declares (``config_values``, of :class:`Numbers` and
  ``bool``), within the range of the dtype that trainer.precision trains in;
- predict_at: rows as wide as the model's inputs.

This is the one check of a config's values: the model and data constructors repeat none of it,
and check only what a config cannot show (the data's own values, the number of processes). Classes
are looked up only among the project's models and torch's optimizers, so a check runs no code a
config names. The optimizer's arguments come first:
an Adam given momentum=2 is told that it takes no momentum, not that 2 is out of range.
"""

from __future__ import annotations

import importlib
import inspect
import math
from collections.abc import Callable
from itertools import cycle, islice
from typing import Any, NamedTuple

from omegaconf import DictConfig, ListConfig, OmegaConf

from backprop_lab.errors import ConfigError

SEED_MAX = 2**32 - 1  # Lightning's seed_everything takes seeds in [0, 2**32 - 1]


def is_number(v: Any) -> bool:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return False
    return isinstance(v, int) or math.isfinite(v)  # an int is finite (and may be too big to float)


def is_whole(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


#: key -> (test, what it must be, an example). A key missing from the config is not checked.
FLOAT32_MAX = 3.4028234663852886e38


def _numbers(v: Any, count: int | None = None) -> bool:
    """A list (or ListConfig) of finite numbers, of ``count`` of them when given."""
    return (
        isinstance(v, (list, tuple, ListConfig))
        and (count is None or len(v) == count)
        and all(is_number(x) for x in v)
    )


def _batches(v: Any) -> bool:
    """Lightning's limit_*_batches and overfit_batches: a fraction of the batches in [0.0, 1.0]
    or a whole number of them >= 0 (1 is one batch, 1.0 all of them)."""
    return (is_whole(v) and v >= 0) or (isinstance(v, float) and 0.0 <= v <= 1.0)


def _every(v: Any) -> bool:
    """A callback's interval (every_n_steps, every_n_epochs): a whole number >= 1, or null for
    the callback's own choice."""
    return v is None or (is_whole(v) and v >= 1)


BATCHES = "a fraction in [0.0, 1.0] (of each epoch's batches) or a whole number of batches >= 0"

#: A rule: (test, what the value must be, an example).
Rule = tuple[Callable[[Any], bool], str, str]

RULES: dict[str, Rule] = {
    "seed": (
        lambda v: v is None or (is_whole(v) and 0 <= v <= SEED_MAX),
        f"a whole number or null, from 0 to {SEED_MAX} (2**32 - 1)",
        "seed=0",
    ),
    "optimizer.lr": (lambda v: is_number(v) and v > 0, "a number > 0", "optimizer.lr=0.01"),
    "optimizer.momentum": (
        lambda v: is_number(v) and 0 <= v < 1,
        "a number in [0, 1)",
        "optimizer.momentum=0.9",
    ),
    "optimizer.weight_decay": (
        lambda v: is_number(v) and v >= 0,
        "a number >= 0",
        "optimizer.weight_decay=0.0001",
    ),
    "loss.l2": (lambda v: is_number(v) and v >= 0, "a number >= 0", "loss.l2=0.01"),
    "data.batch_size": (
        lambda v: is_whole(v) and v >= 1,
        "a whole number >= 1",
        "data.batch_size=1",
    ),
    "data.val_fraction": (
        lambda v: is_number(v) and 0 <= v < 1,
        "a number in [0, 1)",
        "data.val_fraction=0.2",
    ),
    "data.test_fraction": (
        lambda v: is_number(v) and 0 <= v < 1,
        "a number in [0, 1)",
        "data.test_fraction=0.2",
    ),
    "data.n": (lambda v: is_whole(v) and v >= 1, "a whole number >= 1", "data.n=1000"),
    # Synthetic data is drawn in float32 (backprop_lab.data.SyntheticDataModule).
    "data.noise_std": (
        lambda v: is_number(v) and 0 <= v <= FLOAT32_MAX,
        "a number >= 0 that float32 holds",
        "data.noise_std=0.1",
    ),
    "data.x_range": (
        lambda v: _numbers(v, 2) and max(map(abs, v)) <= FLOAT32_MAX and v[0] < v[1],
        "[low, high] with low < high, within float32",
        "data.x_range=[-1.0,1.0]",
    ),
    "data.coefficients": (
        lambda v: _numbers(v) and len(v) >= 1,
        "a list of numbers, highest power first",
        "data.coefficients=[2.0,0.0]",
    ),
    "data.shuffle": (lambda v: isinstance(v, bool), "true or false", "data.shuffle=true"),
    "trainer.max_epochs": (
        lambda v: is_whole(v) and v >= 1,
        "a whole number >= 1",
        "trainer.max_epochs=100",
    ),
    "trainer.log_every_n_steps": (
        lambda v: is_whole(v) and v >= 1,
        "a whole number >= 1",
        "trainer.log_every_n_steps=10",
    ),
    # The debug modes' settings (conf/debug/); Lightning's own message for `abc` would be
    # "'<=' not supported between instances of 'int' and 'str'".
    "trainer.fast_dev_run": (
        lambda v: isinstance(v, bool) or (is_whole(v) and v >= 0),
        "true, false or a whole number of batches >= 0",
        "trainer.fast_dev_run=true",
    ),
    "trainer.overfit_batches": (_batches, BATCHES, "trainer.overfit_batches=1"),
    **{
        f"trainer.limit_{split}_batches": (
            lambda v: v is None or _batches(v),
            BATCHES + ", or null (all)",
            f"trainer.limit_{split}_batches=0.5",
        )
        for split in ("train", "val", "test")
    },
    **{
        f"callbacks.{name}.every_n_epochs": (
            _every,
            "a whole number >= 1, or null (every epoch up to 100, then about 50 saves)",
            f"callbacks.{name}.every_n_epochs=1",
        )
        for name in ("model_checkpoint", "best_checkpoint")
    },
    **{
        f"callbacks.{name}.every_n_steps": (
            _every,
            "a whole number >= 1, or null (about 25 times a run)",
            f"callbacks.{name}.every_n_steps={example}",
        )
        for name, example in (("histograms", 50), ("gradient_check", 10))
    },
    "callbacks.gradient_check.rtol": (
        lambda v: is_number(v) and v > 0,
        "a number > 0",
        "callbacks.gradient_check.rtol=1e-4",
    ),
    "callbacks.gradient_check.atol": (
        lambda v: is_number(v) and v > 0,
        "a number > 0",
        "callbacks.gradient_check.atol=1e-7",
    ),
    "callbacks.early_stopping.patience": (
        lambda v: v is None or (is_whole(v) and v >= 0),
        "a whole number >= 0 (epochs without improvement), or null (no early stopping)",
        "callbacks.early_stopping.patience=10",
    ),
    "callbacks.early_stopping.min_delta": (
        lambda v: is_number(v) and v >= 0,
        "a number >= 0",
        "callbacks.early_stopping.min_delta=1e-4",
    ),
    "model.gradients": (
        lambda v: v in ("autograd", "manual"),
        "autograd or manual",
        "model.gradients=manual",
    ),
    "objective.mode": (lambda v: v in ("min", "max"), "min or max", "objective.mode=min"),
    "scheduler.step_size": (
        lambda v: is_whole(v) and v >= 1,
        "a whole number of epochs >= 1",
        "scheduler.step_size=30",
    ),
    "scheduler.gamma": (lambda v: is_number(v) and v > 0, "a number > 0", "scheduler.gamma=0.1"),
    "scheduler.factor": (
        lambda v: is_number(v) and 0 < v < 1,
        "a number in (0, 1)",
        "scheduler.factor=0.1",
    ),
    "scheduler.patience": (
        lambda v: is_whole(v) and v >= 0,
        "a whole number of epochs >= 0",
        "scheduler.patience=10",
    ),
    "scheduler.T_max": (
        lambda v: is_whole(v) and v >= 1,
        "a whole number of epochs >= 1",
        "scheduler.T_max=100",
    ),
    "scheduler.eta_min": (
        lambda v: is_number(v) and v >= 0,
        "a number >= 0",
        "scheduler.eta_min=0",
    ),
}


class Numbers(NamedTuple):
    """A model's config value of numbers, as the model class declares it in ``config_values``.

    ``shape`` is () for one number and (3,) for a list of three. A name stands for a size that
    several values share, set by the first value that has it: ("hidden", "input") is a matrix
    with a row per hidden unit and a column per input, and ("hidden",) then a list with one
    number per hidden unit. The sizes named "input" and "output" are the model's numbers of
    input and output features.
    """

    shape: tuple[int | str, ...]
    what: str = ""  # what the numbers are, for the message: "the 3 coefficients [w0, w1, w2]"
    nullable: bool = False  # null is valid too (no bias)


def check(cfg: DictConfig) -> None:
    """Raise ConfigError naming the first value that breaks its rule, and how to set it."""
    _check_optimizer(cfg)
    _check_scheduler(cfg)
    check_rules(cfg, RULES)
    _check_loss_terms(cfg)
    _check_columns(cfg)
    model = OmegaConf.select(cfg, "model", default=None)
    if model is None or "_target_" not in model:
        return
    from backprop_lab.models import model_class  # the project's models only

    cls = model_class(model._target_)
    sizes = _check_model_values(cfg, cls)
    predict_at = OmegaConf.select(cfg, "predict_at", default=None)
    _check_predict_at(_plain(predict_at), cls, sizes.get("input", cls.in_features))


_MISSING = object()


def check_rules(cfg: DictConfig, rules: dict[str, Rule]) -> None:
    """Raise ConfigError for the first key in ``rules`` whose value breaks its rule (a key the
    config does not have is not checked)."""
    for key, (test, must_be, example) in rules.items():
        value = OmegaConf.select(cfg, key, default=_MISSING)
        if value is _MISSING:
            continue
        if not test(value):
            raise ConfigError(f"{key} must be {must_be}, got {value!r}; e.g. {example}")


def _plain(value: Any) -> Any:
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def _override(value: Any) -> str:
    """A value as the command line writes it: [1.0,2.0], true, null."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(map(_override, value)) + "]"
    return repr(value)


# --- the optimizer ------------------------------------------------------------------------------

PROJECT_OPTIMIZER = "backprop_lab.training.optim.SGD"


def optimizer_class(target: str) -> type:
    """The optimizer class of ``optimizer._target_``: the project's SGD or a torch.optim optimizer.

    Only those are imported, and a torch.optim class only from torch.optim's own modules.
    """
    import torch

    if target == PROJECT_OPTIMIZER:
        from backprop_lab.training.optim import SGD

        return SGD
    module, _, name = target.rpartition(".")
    cls = None
    if target.startswith("torch.optim."):
        try:
            cls = getattr(importlib.import_module(module), name, None)
        except ImportError:
            cls = None
    if not (isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer)):
        raise ConfigError(
            f"optimizer._target_ must be {PROJECT_OPTIMIZER} or an optimizer of torch.optim, "
            f"got {target}; e.g. optimizer=adam (torch.optim.Adam) or optimizer=sgd"
        )
    return cls


def _check_optimizer(cfg: DictConfig) -> None:
    """Every optimizer.<key> must be an argument of the optimizer class: Adam has no momentum."""
    node = OmegaConf.select(cfg, "optimizer", default=None)
    if node is None or "_target_" not in node:
        return
    target = str(node._target_)
    parameters = inspect.signature(optimizer_class(target)).parameters.values()
    if any(p.kind is p.VAR_KEYWORD for p in parameters):
        return
    arguments = [p.name for p in parameters if p.name != "params" and p.kind != p.VAR_POSITIONAL]
    for key in node:
        if not str(key).startswith("_") and key not in arguments:
            raise ConfigError(
                f"optimizer.{key} is not an argument of {target}; its arguments are "
                f"{', '.join(arguments)}"
            )


# --- the learning-rate scheduler ----------------------------------------------------------------


def _check_scheduler(cfg: DictConfig) -> None:
    """scheduler._target_ a scheduler of torch.optim.lr_scheduler (imported from there only), and
    every scheduler.<key> one of its arguments: StepLR takes no T_max."""
    import torch

    node = OmegaConf.select(cfg, "scheduler", default=None)
    if node is None or "_target_" not in node:
        return
    target = str(node._target_)
    module, _, name = target.rpartition(".")
    cls = (
        getattr(torch.optim.lr_scheduler, name, None)
        if module == "torch.optim.lr_scheduler"
        else None
    )
    schedulers = (torch.optim.lr_scheduler.LRScheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
    if not (isinstance(cls, type) and issubclass(cls, schedulers)):
        raise ConfigError(
            f"scheduler._target_ must be a scheduler of torch.optim.lr_scheduler, got {target}; "
            "e.g. scheduler=step (StepLR), scheduler=cosine or scheduler=plateau"
        )
    parameters = inspect.signature(cls).parameters
    arguments = [p for p in parameters if p != "optimizer"]
    for key in node:
        if not str(key).startswith("_") and key not in arguments:
            raise ConfigError(
                f"scheduler.{key} is not an argument of {target}; its arguments are "
                f"{', '.join(arguments)}"
            )


# --- the loss -----------------------------------------------------------------------------------


def _check_columns(cfg: DictConfig) -> None:
    """data.x_columns and data.y_columns: names, each once, no column both input and target."""
    named = {
        k: OmegaConf.select(cfg, f"data.{k}", default=None) for k in ("x_columns", "y_columns")
    }
    for key, columns in named.items():
        if columns is None:
            continue
        example = "data.x_columns=[x]" if key == "x_columns" else "data.y_columns=[y]"
        if not OmegaConf.is_list(columns) or not columns:
            raise ConfigError(
                f"data.{key} must be a list of column names, got {columns!r}; e.g. {example}"
            )
        repeated = sorted({c for c in columns if list(columns).count(c) > 1})
        if repeated:
            raise ConfigError(f"data.{key} names {repeated} more than once; e.g. {example}")
    if named["x_columns"] is not None and named["y_columns"] is not None:
        both = sorted(set(named["x_columns"]) & set(named["y_columns"]))
        if both:
            raise ConfigError(
                f"data.x_columns and data.y_columns both name {both}: a column is an input or a "
                "target, not both; e.g. data.x_columns=[x] data.y_columns=[y]"
            )


def _check_loss_terms(cfg: DictConfig) -> None:
    """Weights >= 0, one of them > 0: a negative weight maximises its loss, all 0 trains nothing."""
    terms = OmegaConf.select(cfg, "loss.terms", default=_MISSING)
    if terms is _MISSING or terms is None:
        return
    for name, weight in terms.items():
        if not (is_number(weight) and weight >= 0):
            raise ConfigError(
                f"loss.terms.{name} must be a number >= 0, got {weight!r}; e.g. "
                f"loss.terms.{name}=1.0"
            )
    if not any(weight > 0 for weight in terms.values()):
        raise ConfigError(
            f"loss.terms needs a weight > 0 for at least one term, got {_plain(terms)}; e.g. "
            "loss.terms.mse=1.0"
        )


# --- the model ----------------------------------------------------------------------------------


def _check_model_values(cfg: DictConfig, cls: type) -> dict[str, int]:
    """Check each model.<key> against the class's ``config_values``; return the named sizes."""
    from backprop_lab.models import model_keys

    keys = model_keys(cls)
    node = cfg.model
    for key in node:
        if key != "_target_" and key not in keys:
            raise ConfigError(
                f"model.{key} is not an argument of {cls.__name__}; its arguments are "
                f"{', '.join(keys)}"
            )
    defaults = inspect.signature(cls).parameters
    dtype = training_dtype(OmegaConf.select(cfg, "trainer.precision", default=None))
    sizes: dict[str, int] = {}
    origin: dict[str, str] = {}  # the key that set each named size, in words, for the message
    for key, spec in getattr(cls, "config_values", {}).items():
        if key not in node:
            continue
        value = _plain(node[key])
        default = _listed(defaults[key].default) if key in defaults else None
        if spec is bool:
            if not isinstance(value, bool):
                example = _override(default if isinstance(default, bool) else True)
                raise ConfigError(
                    f"model: model.{key} must be true or false, got {value!r}; "
                    f"e.g. model.{key}={example}"
                )
        elif value is not None or not spec.nullable:
            _check_numbers(key, value, spec, sizes, origin, default)
            _check_fits(key, value, dtype, cfg)
    return sizes


def _listed(value: Any) -> Any:
    """Tuples (a constructor's defaults) as lists, as a config holds them."""
    return [_listed(v) for v in value] if isinstance(value, (list, tuple)) else value


def _shape(value: Any) -> tuple[int, ...] | None:
    """The shape of a number or nested list of numbers; None for a ragged one."""
    if not isinstance(value, list):
        return ()
    shapes = {_shape(v) for v in value}
    inner = next(iter(shapes), ())
    if inner is None or len(shapes) > 1:
        return None
    return (len(value), *inner)


def _leaves(value: Any) -> list[Any]:
    return [x for v in value for x in _leaves(v)] if isinstance(value, list) else [value]


def _sizes(spec: Numbers, sizes: dict[str, int]) -> list[int | None]:
    """The sizes a value of ``spec`` must have, None where no value has set a named one yet."""
    return [sizes.get(d) if isinstance(d, str) else d for d in spec.shape]


def _describe(spec: Numbers, sizes: dict[str, int]) -> str:
    """What a value must be, in words: "a list of 3 numbers, the 3 coefficients ..."."""
    shape = _sizes(spec, sizes)
    if not shape:
        text = "a number"
    elif len(shape) == 1:
        text = f"a list of {shape[0]} numbers" if shape[0] else "a list of numbers"
    elif None not in shape:
        rows, columns = shape
        text = f"a {rows} x {columns} matrix (a list of {rows} rows of {columns} numbers)"
    else:
        text = "a rectangular matrix of numbers (a list of rows of equal length)"
    text = "null or " + text if spec.nullable else text
    return f"{text}, {spec.what}" if spec.what else text


def _example(spec: Numbers, sizes: dict[str, int], default: Any) -> str:
    """The class's default where it has the sizes required, else numbers of the right shape."""
    shape = _sizes(spec, sizes)
    got = _shape(default) if default is not None else None
    if (
        got is not None
        and len(got) == len(shape)
        and all(want in (None, size) for want, size in zip(shape, got, strict=True))
    ):
        return _override(default)
    value: Any = 0.1
    for size in reversed(shape):
        value = [value] * (size or 2)
    return _override(value)


def _check_numbers(
    key: str,
    value: Any,
    spec: Numbers,
    sizes: dict[str, int],
    origin: dict[str, str],
    default: Any,
) -> None:
    """Numbers of the declared shape; a named size must match the value that set it first."""

    def fail(problem: str) -> ConfigError:
        example = _example(spec, sizes, default)
        return ConfigError(
            f"model: model.{key} {problem}, got {value!r}; e.g. model.{key}={example}"
        )

    if not all(is_number(v) for v in _leaves(value)):
        raise fail("must be numbers" if spec.shape else "must be a number")
    shape = _shape(value)
    if shape is None or len(shape) != len(spec.shape) or 0 in shape:
        raise fail(f"must be {_describe(spec, sizes)}")
    words = ("values",) if len(shape) == 1 else ("rows", "columns")[: len(shape)]
    for want, got, word in zip(spec.shape, shape, words, strict=True):
        if isinstance(want, int) and got != want:
            raise fail(f"must be {_describe(spec, sizes)}")
        if isinstance(want, str) and want in sizes and got != sizes[want]:
            one = word.removesuffix("s")
            raise fail(f"needs {sizes[want]} {word}, one {one} per {want} unit ({origin[want]})")
        if isinstance(want, str) and want not in sizes:
            sizes[want], origin[want] = got, f"model.{key} has {got} {word}"


def training_dtype(precision: Any) -> str:
    """The dtype the parameters train in: Lightning converts the model for these precisions."""
    text = str(precision)
    if text in ("64", "64-true"):
        return "float64"
    if text == "16-true":
        return "float16"
    if text == "bf16-true":
        return "bfloat16"
    return "float32"  # 32-true, and the mixed precisions, which keep float32 weights


def _check_fits(key: str, value: Any, dtype: str, cfg: DictConfig) -> None:
    """A value beyond the dtype's range would start training at inf: name it, and the fix."""
    import torch

    torch_dtype = getattr(torch, dtype)
    for v in _leaves(value):
        try:
            fits = bool(torch.tensor(float(v), dtype=torch.float64).to(torch_dtype).isfinite())
        except OverflowError:  # an int beyond float64
            fits = False
        if not fits:
            precision = OmegaConf.select(cfg, "trainer.precision", default="32-true")
            fix = (
                "use a smaller value"
                if dtype == "float64"
                else "train in float64 with trainer.precision=64, or use a smaller value"
            )
            raise ConfigError(
                f"model: model.{key} holds {v!r}, beyond {dtype} (largest "
                f"{torch.finfo(torch_dtype).max:.4g}), the dtype of trainer.precision={precision}; "
                f"{fix}"
            )


# --- predict_at ---------------------------------------------------------------------------------


def _check_predict_at(value: Any, cls: type, n_in: int) -> None:
    """null, or a list of rows: numbers for a one-input model, lists of n_in numbers otherwise."""
    if value is None:
        return
    if n_in == 1:
        each, example = f"a number each ({cls.__name__} takes 1 input feature)", "predict_at=[4.0]"
    else:
        each = f"a list of {n_in} numbers each ({cls.__name__} takes {n_in} input features)"
        example = f"predict_at=[[{','.join(islice(cycle(['0.5', '0.3']), n_in))}]]"
    must = f"predict_at must be null or a list of inputs, {each}"
    if not isinstance(value, list):
        raise ConfigError(f"{must}; got {value!r}; e.g. {example}")
    for row in value:
        cells = row if isinstance(row, list) else [row]
        if not all(is_number(c) for c in cells):
            problem = "is not all numbers" if isinstance(row, list) else "is not a number"
        elif len(cells) != n_in:
            problem = f"has {len(cells)} number(s)"
        else:
            continue
        raise ConfigError(f"{must}; its input {row!r} {problem}; e.g. {example}")
