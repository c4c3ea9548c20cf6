"""Hyperparameter search with Optuna's own API: TPE, pruning, and a study that outlives a process.

Each trial is a training run (``training.train``) in ``<search dir>/trial_<n>/`` with the trial's
sampled values set on the composed config. The study lives in a database, SQLite in the search dir
by default, so an interrupted search resumes where it stopped and several workers, started with
the same study name and storage, share one study. Trials whose worker died are failed by their
missed heartbeat and tried again.

Several workers, one study. Optuna's advice for distributed optimisation is to share one storage
and let every worker run its own loop; its TPE's ``constant_liar`` (on by default) keeps them off
each other's running trials, and its ``study.optimize`` keeps the heartbeats. Two things are added:

- Randomness comes from the trial, not the process. A seeded sampler started in each process
  replays one stream, so workers (and a resumed search) would draw the same trials. Instead each
  trial gets a sampler of its own, seeded from (search seed, trial number); the storage hands out
  each trial number once, so no two trials share a stream, whichever worker runs them, and a search
  run alone is reproduced by the same command and seed (and resumed, it draws what it would have).
- ``search.n_trials`` counts across workers. Before a trial, a worker stops if the finished plus
  running trials reach it; a trial started at the same moment as another's that makes one too many
  (the one with the higher number) is not trained but recorded as failed, with no parameters.
"""

from __future__ import annotations

import copy
import csv
import hashlib
import inspect
import logging
import signal
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import lightning.pytorch as pl
import optuna
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, ListConfig, OmegaConf
from optuna.distributions import BaseDistribution
from optuna.exceptions import DuplicatedStudyError, ExperimentalWarning, StorageInternalError
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback, fail_stale_trials
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError

from backprop_lab import schema
from backprop_lab.errors import BackpropLabError, ConfigError, Interrupted, TrialPruned
from backprop_lab.training.run import train

DONE = (TrialState.COMPLETE, TrialState.PRUNED)
#: Trials some worker holds or will take: running, or waiting to be retried.
PENDING = (TrialState.RUNNING, TrialState.WAITING)


class _Surplus(BackpropLabError):
    """A trial asked for at the same moment as another worker's, one more than search.n_trials."""

    def __init__(self, number: int, n_trials: int) -> None:
        super().__init__(
            f"trial {number} not run: with other workers' trials the study already has "
            f"search.n_trials={n_trials}"
        )
        self.number = number


class _OneLineFailures(logging.Filter):
    """Optuna logs a failed trial with its traceback; for Ctrl-C and the errors a user acts on
    (divergence, a bad value) its one-line message is the whole story. A surplus trial, never
    run, is news rather than a failure: one line at INFO."""

    def __init__(self) -> None:
        super().__init__()
        self._surplus: str | None = None  # Optuna's second line about the surplus trial

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, (KeyboardInterrupt, BackpropLabError)):
            record.exc_info, record.exc_text = None, None
        if isinstance(error, _Surplus):
            record.msg, record.args = str(error), ()
            record.levelno, record.levelname = logging.INFO, "INFO"
            self._surplus = f"Trial {error.number} failed with value"
        elif self._surplus and str(record.msg).startswith(self._surplus):
            self._surplus = None
            return False
        return True


# Optuna logs a trial's end from a module logger below its library logger "optuna", whose own
# handler prints it (optuna.logging); a logger's filter sees only what is logged to that logger,
# not what its children pass up, so the filter goes on the handlers that print Optuna's records.
_ONE_LINE_FAILURES = _OneLineFailures()
for _handler in logging.getLogger("optuna").handlers:
    _handler.addFilter(_ONE_LINE_FAILURES)


class _StopSearch(KeyboardInterrupt):
    """Carries a Ctrl-C / SIGTERM out of ``study.optimize`` (whose ``catch`` would keep going),
    as a KeyboardInterrupt: Optuna then marks the trial failed and stops."""

    def __init__(self, interrupted: Interrupted) -> None:
        super().__init__(str(interrupted))
        self.interrupted = interrupted


class PruneUnpromising(pl.Callback):
    """Reports each epoch's objective to the trial and stops the run when Optuna's pruner says so.

    An epoch's metrics are final only after the module's own epoch-end hook, which runs after
    ordinary callbacks' hooks; so epoch e is reported as epoch e + 1 starts.
    """

    def __init__(self, trial: optuna.Trial, metric: str) -> None:
        self.trial, self.metric = trial, metric

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module) -> None:
        if not pl_module.history or self.metric not in pl_module.history[-1]:
            return
        row = pl_module.history[-1]
        epoch, value = int(row["epoch"]), row[self.metric]
        self.trial.report(value, step=epoch)
        if self.trial.should_prune():
            raise TrialPruned(
                f"trial {self.trial.number} pruned after epoch {epoch}: {self.metric}={value:.6g}"
            )


# ----------------------------------------------------------------------------- the sampler


def trial_seed(seed: int | None, number: int) -> int | None:
    """The sampler seed of trial ``number``: a hash of both (``seed + number`` would give worker
    seed 1's second trial the stream of seed 2's first). None stays None: fresh entropy."""
    if seed is None:
        return None
    digest = hashlib.sha256(f"{seed}/{number}".encode()).digest()
    return int.from_bytes(digest[:4], "little")  # numpy's RandomState takes seeds below 2**32


class PerTrialSampler(optuna.samplers.BaseSampler):
    """Samples each trial with a sampler of its own, made by ``make(trial_seed(seed, number))``.

    Samplers such as TPE keep no state between trials besides their random stream (what they
    learn, they read from the study), so a fresh one per trial changes nothing else.
    """

    def __init__(self, make: Callable[[int | None], optuna.samplers.BaseSampler], seed: int | None):
        self.make, self.seed = make, seed
        self._samplers: dict[int, optuna.samplers.BaseSampler] = {}

    def for_trial(self, trial: FrozenTrial) -> optuna.samplers.BaseSampler:
        if trial.number not in self._samplers:
            self._samplers[trial.number] = self.make(trial_seed(self.seed, trial.number))
        return self._samplers[trial.number]

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.for_trial(trial).before_trial(study, trial)

    def infer_relative_search_space(
        self, study: optuna.Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        return self.for_trial(trial).infer_relative_search_space(study, trial)

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        return self.for_trial(trial).sample_relative(study, trial, search_space)

    def sample_independent(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        sampler = self.for_trial(trial)
        return sampler.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        state: TrialState,
        values: Sequence[float] | None,
    ) -> None:
        self.for_trial(trial).after_trial(study, trial, state, values)
        del self._samplers[trial.number]


def _optuna_classes(module: ModuleType, base: type) -> dict[str, type]:
    """The concrete classes of an Optuna module (optuna.samplers, optuna.pruners) by name."""
    found = {}
    for name in module.__all__:
        cls = getattr(module, name)
        if isinstance(cls, type) and issubclass(cls, base) and not inspect.isabstract(cls):
            found[name] = cls
    return found


SAMPLERS = {
    name: cls
    for name, cls in _optuna_classes(optuna.samplers, optuna.samplers.BaseSampler).items()
    if "seed" in inspect.signature(cls).parameters  # not PartialFixedSampler, which wraps one
}
PRUNERS = _optuna_classes(optuna.pruners, optuna.pruners.BasePruner)


def _build(key: str, spec: Any, module: ModuleType, classes: dict[str, type], example: str):
    """``spec``, {_target_: optuna.<module>.<Class>, **kwargs}, made; its class is looked up in
    ``classes``, never imported from whatever ``_target_`` names. A kwarg that is itself such a
    mapping (PatientPruner's wrapped_pruner) is made the same way."""
    if not isinstance(spec, dict):
        raise ConfigError(f"{key} must be a mapping with a _target_, got {spec!r}; {example}")
    target = spec.get("_target_")
    name = target.removeprefix(f"{module.__name__}.") if isinstance(target, str) else None
    if name not in classes:
        raise ConfigError(
            f"{key}._target_ must be one of {module.__name__}.{{{', '.join(sorted(classes))}}}, "
            f"got {target!r}; {example}"
        )
    kwargs = {
        arg: _build(f"{key}.{arg}", value, module, classes, example)
        if isinstance(value, dict) and "_target_" in value
        else value
        for arg, value in spec.items()
        if arg != "_target_"
    }
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExperimentalWarning)
            return classes[name](**kwargs)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{key}: {name}({_kwargs(kwargs)}) fails: {error}; {example}") from None


def _kwargs(kwargs: dict[str, Any]) -> str:
    """The arguments from the config, for a message: not the per-trial seed put in for them."""
    return ", ".join(f"{k}={v!r}" for k, v in kwargs.items() if k != "seed")


def make_sampler(cfg: DictConfig) -> PerTrialSampler:
    """search.sampler, made afresh for every trial with that trial's own seed."""
    example = "e.g. search.sampler._target_=optuna.samplers.TPESampler"
    spec = _container(cfg.search.sampler)
    if not isinstance(spec, dict):
        _build("search.sampler", spec, optuna.samplers, SAMPLERS, example)  # says what is wrong
    seed = spec.get("seed")
    if seed is not None and not schema.is_whole(seed):
        raise ConfigError(f"search.sampler.seed must be a whole number or null, got {seed!r}")
    # A QMC sequence's position is kept in the study: all its trials share the one seed.
    per_trial = not str(spec.get("_target_")).endswith("QMCSampler")

    def make(seed_of_trial: int | None) -> optuna.samplers.BaseSampler:
        seeded = {**spec, "seed": seed_of_trial if per_trial else seed}
        return _build("search.sampler", seeded, optuna.samplers, SAMPLERS, example)

    make(trial_seed(seed, 0))  # a bad sampler config fails now, not in the first trial
    return PerTrialSampler(make, seed)


def make_pruner(cfg: DictConfig) -> optuna.pruners.BasePruner:
    example = "e.g. search.pruner._target_=optuna.pruners.MedianPruner"
    spec = _container(cfg.search.pruner)
    if spec is None:
        return optuna.pruners.NopPruner()
    return _build("search.pruner", spec, optuna.pruners, PRUNERS, example)


def _container(value: Any) -> Any:
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


# ----------------------------------------------------------------------------- the config


#: search key -> (test, what it must be, an example), in the style of schema.RULES.
RULES: dict[str, schema.Rule] = {
    "search.study_name": (
        lambda v: isinstance(v, str) and v.strip() != "",
        "a name",
        "search.study_name=my-study",
    ),
    "search.n_trials": (
        lambda v: schema.is_whole(v) and v >= 1,
        "a whole number >= 1",
        "search.n_trials=20",
    ),
    # Optuna's RDBStorage takes whole seconds.
    "search.heartbeat_interval": (
        lambda v: schema.is_whole(v) and v > 0,
        "a whole number of seconds > 0",
        "search.heartbeat_interval=30",
    ),
    "search.grace_period": (
        lambda v: schema.is_whole(v) and v > 0,
        "a whole number of seconds > 0",
        "search.grace_period=120",
    ),
    "search.max_retry": (
        lambda v: v is None or (schema.is_whole(v) and v >= 0),
        "a whole number >= 0, or null for no limit",
        "search.max_retry=1",
    ),
}

ENTRY = "{low, high, log?, step?} or {choices: [...]}"
SPACE_EXAMPLE = "e.g. search.space.optimizer.lr={low: 1e-4, high: 0.1, log: true}"


def check(cfg: DictConfig) -> None:
    """Raise ConfigError naming the first search option with a bad value, and how to set it.

    Everything a search reads is checked here, before the study is opened or a trial run: the
    rules above, every search-space entry, the storage URL, the sampler and the pruner."""
    schema.check_rules(cfg, RULES)
    if cfg.search.grace_period <= cfg.search.heartbeat_interval:
        raise ConfigError(
            f"search.grace_period ({cfg.search.grace_period}) must be longer than "
            f"search.heartbeat_interval ({cfg.search.heartbeat_interval}), or a live trial "
            "looks dead; e.g. search.heartbeat_interval=30 search.grace_period=120"
        )
    for name, spec in parameters(cfg.search.get("space")).items():
        check_entry(cfg, name, spec)
    database_url(cfg, Path("."))
    make_sampler(cfg)
    make_pruner(cfg)


def parameters(space: Any, prefix: str = "") -> dict[str, DictConfig]:
    """The search space, nested like the config, as {dotted config key: its entry}."""
    where = f"search.space.{prefix[:-1]}" if prefix else "search.space"
    if not prefix and (space is None or (isinstance(space, DictConfig) and not space)):
        raise ConfigError(f"search.space is empty: give at least one parameter; {SPACE_EXAMPLE}")
    if not isinstance(space, DictConfig):
        raise ConfigError(f"{where} must be {ENTRY}, got {space!r}; {SPACE_EXAMPLE}")
    found = {}
    for key, value in space.items():
        name = f"{prefix}{key!s}"
        if not isinstance(value, DictConfig) or not value:
            raise ConfigError(
                f"search.space.{name} must be {ENTRY}, got {value!r}; {SPACE_EXAMPLE}"
            )
        if {"low", "high", "choices"} & set(value):
            found[name] = value
        else:
            found.update(parameters(value, f"{name}."))
    return found


def check_entry(cfg: DictConfig, name: str, spec: DictConfig) -> None:
    """One search-space entry: its keys, its bounds, and that the config has the key it sets."""
    key = f"search.space.{name}"

    def bad(problem: str) -> ConfigError:
        return ConfigError(f"{key} {problem}; {SPACE_EXAMPLE}")

    unknown = set(spec) - {"low", "high", "log", "step", "choices"}
    if unknown:
        raise bad(f"has unknown keys {sorted(unknown)}: an entry is {ENTRY}")
    if OmegaConf.select(cfg, name, default=_MISSING) is _MISSING:
        raise bad(f"would set {name}, which is not a config key")
    if "choices" in spec:
        choices = spec.choices
        if set(spec) != {"choices"}:
            raise bad(f"has choices and {sorted(set(spec) - {'choices'})}: give one or the other")
        if not isinstance(choices, ListConfig) or len(choices) == 0:
            raise ConfigError(
                f"{key}.choices must be a non-empty list, got {choices!r}; "
                f"e.g. '+{key}={{choices: [1, 4, 16]}}'"
            )
        if not all(c is None or isinstance(c, (bool, int, float, str)) for c in choices):
            raise bad(f"choices must be numbers, strings, booleans or null, got {list(choices)}")
        values = list(choices)
    else:
        if "low" not in spec or "high" not in spec:
            raise bad(f"needs both low and high, got {dict(spec)}")
        low, high, log, step = spec.low, spec.high, spec.get("log", False), spec.get("step")
        for bound, value in (("low", low), ("high", high)):
            if not schema.is_number(value):
                raise bad(f"{bound} must be a number, got {value!r}")
        if low > high:
            raise bad(f"has low ({low}) above high ({high})")
        if not isinstance(log, bool):
            raise bad(f"log must be true or false, got {log!r}")
        if log and low <= 0:
            raise bad(f"has log: true, which needs low > 0, got low={low}")
        if step is not None and not (schema.is_number(step) and step > 0):
            raise bad(f"step must be a number > 0, got {step!r}")
        if step is not None and log:
            raise bad("has both step and log: true, which Optuna cannot sample; drop one")
        values = [low, high]
    # A value the config's own schema would refuse fails every trial that draws it: say so now.
    rule = schema.RULES.get(name)
    if rule is not None:
        test, must_be, _ = rule
        wrong = [v for v in values if not test(v)]
        if wrong:
            raise bad(f"can set {name}={wrong[0]!r}, but {name} must be {must_be}")


_MISSING = object()


def suggest(trial: optuna.Trial, name: str, spec: DictConfig) -> Any:
    """A value for ``name`` from its search-space entry: {choices}, or {low, high, log?, step?}."""
    if "choices" in spec:
        return trial.suggest_categorical(name, list(spec.choices))
    low, high, log, step = spec.low, spec.high, spec.get("log", False), spec.get("step")
    if (
        schema.is_whole(low)
        and schema.is_whole(high)
        and not log
        and (step is None or schema.is_whole(step))
    ):
        return trial.suggest_int(name, low, high, step=step or 1)
    return trial.suggest_float(name, low, high, log=log, step=step)


STORAGE_EXAMPLE = (
    "e.g. search.storage=sqlite:///study.db or search.storage=postgresql://user:pw@host/optuna"
)


def database_url(cfg: DictConfig, search_dir: Path) -> str:
    """search.storage, or SQLite in the search dir. A URL SQLAlchemy cannot use is refused here,
    before any study is opened."""
    url = cfg.search.storage
    if url is None:
        return f"sqlite:///{search_dir / 'study.db'}"
    if not isinstance(url, str) or not url.strip():
        raise ConfigError(
            f"search.storage must be a database URL or null, got {url!r}; {STORAGE_EXAMPLE}"
        )
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ConfigError(
            f"search.storage={url!r} is not a database URL; {STORAGE_EXAMPLE}"
        ) from None
    shown = parsed.render_as_string(hide_password=True)
    try:
        parsed.get_dialect().import_dbapi()
    except NoSuchModuleError:
        raise ConfigError(
            f"search.storage={shown!r}: SQLAlchemy knows no database {parsed.drivername!r}; "
            f"{STORAGE_EXAMPLE}"
        ) from None
    except ImportError as error:
        fallback = _installed_fallback(parsed)
        if fallback is None:
            raise ConfigError(
                f"search.storage={shown!r} needs the Python package {error.name!r}, which is not "
                "installed; for PostgreSQL: uv pip install psycopg2-binary"
            ) from None
        parsed, url = fallback, fallback.render_as_string(hide_password=False)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        folder = Path(parsed.database).parent
        if not folder.is_dir():
            raise ConfigError(
                f"search.storage={shown!r}: there is no folder {folder} for the database; "
                f"{STORAGE_EXAMPLE}"
            )
    return url


#: A bare backend name whose SQLAlchemy default driver may be missing -> the driver to try then.
#: SQLAlchemy 2.1 made psycopg (3) the default for postgresql://; the postgres extra installs
#: psycopg2-binary, which postgresql:// meant before.
FALLBACK_DRIVERS = {"postgresql": "postgresql+psycopg2"}


def _installed_fallback(parsed: URL) -> URL | None:
    """``parsed`` with FALLBACK_DRIVERS' driver for its bare backend name, if that one is
    installed; else None."""
    drivername = FALLBACK_DRIVERS.get(parsed.drivername)
    if drivername is None:
        return None
    fallback = parsed.set(drivername=drivername)
    try:
        fallback.get_dialect().import_dbapi()
    except ImportError:
        return None
    return fallback


# ----------------------------------------------------------------------------- the study


def open_study(cfg: DictConfig, search_dir: Path) -> optuna.Study:
    url = database_url(cfg, search_dir)
    for attempt in range(5):
        try:
            return optuna.create_study(
                study_name=cfg.search.study_name,
                storage=_storage(cfg, url),
                load_if_exists=True,
                direction="minimize" if cfg.objective.mode == "min" else "maximize",
                sampler=make_sampler(cfg),
                pruner=make_pruner(cfg),
            )
        except (DuplicatedStudyError, StorageInternalError, SQLAlchemyError) as error:
            # Workers started together race to create the tables and the study (SQLite: "database
            # is locked", which Optuna wraps as StorageInternalError); the loser loads them.
            if attempt == 4:
                shown = make_url(url).render_as_string(hide_password=True)
                first_line = (str(error.__cause__ or error).strip().splitlines() or [""])[0]
                raise BackpropLabError(
                    f"cannot open study {cfg.search.study_name!r} in {shown}: {first_line}"
                ) from None
            time.sleep(0.5 * (attempt + 1))
    raise AssertionError("unreachable")


def _storage(cfg: DictConfig, url: str) -> RDBStorage:
    with warnings.catch_warnings():  # heartbeats are what resuming after a killed worker rests on
        warnings.simplefilter("ignore", ExperimentalWarning)
        return RDBStorage(
            url,
            heartbeat_interval=cfg.search.heartbeat_interval,
            grace_period=cfg.search.grace_period,
            heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(cfg.search.max_retry),
        )


def enough(study: optuna.Study, n_trials: int) -> bool:
    """Whether the finished trials and those other workers are running make ``n_trials``.

    A trial whose worker died counts as running until its heartbeat is grace_period late; then it
    is failed here (and queued to be retried)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        fail_stale_trials(study)
    trials = study.get_trials(deepcopy=False, states=(*DONE, TrialState.RUNNING))
    return len(trials) >= n_trials


def surplus(trials: Sequence[FrozenTrial], number: int, n_trials: int) -> bool:
    """Whether trial ``number``, just started, is one too many: the finished trials and the
    pending ones numbered below it (started first) already make ``n_trials``."""
    ahead = sum(
        t.state in DONE or (t.state in PENDING and t.number < number)
        for t in trials
        if t.number != number
    )
    return ahead >= n_trials


def search(cfg: DictConfig, search_dir: Path | None = None) -> optuna.Study:
    """Run trials until the study holds ``search.n_trials`` finished (complete or pruned) ones,
    counting every worker's. ``search_dir`` defaults to Hydra's output dir."""
    check(cfg)
    search_dir = search_dir or Path(HydraConfig.get().runtime.output_dir)
    search_dir.mkdir(parents=True, exist_ok=True)
    space = parameters(cfg.search.space)
    n_trials, metric = cfg.search.n_trials, cfg.objective.metric
    study = open_study(cfg, search_dir)
    trained = 0

    def objective(trial: optuna.Trial) -> float:
        nonlocal trained
        if surplus(study.get_trials(deepcopy=False), trial.number, n_trials):
            raise _Surplus(trial.number, n_trials)
        trained += 1
        trial_cfg = copy.deepcopy(cfg)
        for name, spec in space.items():
            OmegaConf.update(trial_cfg, name, suggest(trial, name, spec))
        trial_cfg.paths.output_dir = str(search_dir / f"trial_{trial.number}")
        trial.set_user_attr("output_dir", trial_cfg.paths.output_dir)
        try:
            summary = train(trial_cfg, [PruneUnpromising(trial, metric)], quiet=True)
        except TrialPruned as pruned:
            raise optuna.TrialPruned(str(pruned)) from None
        except Interrupted as interrupted:
            raise _StopSearch(interrupted) from None
        if summary["best"] is None:
            raise BackpropLabError(
                f"trial {trial.number} logged no finite {metric}; "
                "set objective.metric to a metric the run logs"
            )
        return summary["best"]["value"]

    # This worker trains at most the trials the study lacks as it starts, failed ones included
    # (as study.optimize(n_trials=...) would); a surplus trial, never trained, does not count.
    budget = n_trials - len(study.get_trials(deepcopy=False, states=DONE))
    try:
        while trained < budget and not enough(study, n_trials):
            # One trial a call: Optuna's own loop keeps the trial's heartbeat and records its end.
            study.optimize(objective, n_trials=1, catch=(Exception,))
    except KeyboardInterrupt as stop:
        # Ctrl-C inside a trial's training arrives as _StopSearch; between trials, as itself.
        write_trials(study, search_dir / "trials.csv")
        error = getattr(stop, "interrupted", None)
        error = error or Interrupted("stopped by SIGINT", signal.SIGINT)
        error.args = (f"{error}; the search resumes with the same command",)
        raise error from None
    write_trials(study, search_dir / "trials.csv")
    print(report(study, metric, search_dir))
    return study


def write_trials(study: optuna.Study, path: Path) -> None:
    trials = study.get_trials(deepcopy=False)
    names = list(dict.fromkeys(k for t in trials for k in t.params))
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["number", "state", "value", *names, "output_dir"])
        for t in trials:
            writer.writerow(
                [
                    t.number,
                    t.state.name,
                    t.value,
                    *(t.params.get(n) for n in names),
                    t.user_attrs.get("output_dir"),
                ]
            )


def report(study: optuna.Study, metric: str, search_dir: Path) -> str:
    counts = {
        s.name.lower(): len(study.get_trials(deepcopy=False, states=(s,))) for s in TrialState
    }
    states = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    lines = [f"study '{study.study_name}': {states}"]
    if counts["complete"]:
        best = study.best_trial
        params = ", ".join(
            f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}" for k, v in best.params.items()
        )
        lines.append(f"best trial {best.number}: {metric}={best.value:.6g} with {params}")
        lines.append(f"best run: {best.user_attrs.get('output_dir')}")
    lines.append(f"trials: {search_dir / 'trials.csv'}")
    return "\n".join(lines)
