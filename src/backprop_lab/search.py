"""Hyperparameter search with Optuna's own API: TPE, pruning, and a study that outlives a process.

Each trial is a training run (``training.train``) in ``<search dir>/trial_<n>/`` with the trial's
sampled values set on the composed config. The study lives in a database, SQLite in the search dir
by default, so an interrupted search resumes where it stopped and several workers, started with
the same study name and storage, share one study. Trials whose worker died are failed by their
missed heartbeat and tried again.
"""

from __future__ import annotations

import copy
import csv
import logging
import signal
import time
import warnings
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import optuna
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from optuna.exceptions import DuplicatedStudyError, ExperimentalWarning
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState
from sqlalchemy.exc import SQLAlchemyError

from backprop_lab.callbacks import Callback
from backprop_lab.errors import BackpropLabError, Interrupted, TrialPruned
from backprop_lab.training import train

DONE = (TrialState.COMPLETE, TrialState.PRUNED)


class _OneLineFailures(logging.Filter):
    """Optuna logs a failed trial with its traceback; for Ctrl-C and the errors a user acts on
    (divergence, a bad value) its one-line message is the whole story."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, (KeyboardInterrupt, BackpropLabError)):
            record.exc_info, record.exc_text = None, None
        return True


logging.getLogger("optuna.study._optimize").addFilter(_OneLineFailures())


class _StopSearch(KeyboardInterrupt):
    """Carries a Ctrl-C / SIGTERM out of ``study.optimize`` (whose ``catch`` would keep going),
    as a KeyboardInterrupt: Optuna then marks the trial failed and stops."""

    def __init__(self, interrupted: Interrupted) -> None:
        super().__init__(str(interrupted))
        self.interrupted = interrupted


class PruneUnpromising(Callback):
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


def suggest(trial: optuna.Trial, name: str, spec: DictConfig) -> Any:
    """A value for ``name`` from its search-space entry: {choices}, or {low, high, log?, step?}."""
    if "choices" in spec:
        return trial.suggest_categorical(name, list(spec.choices))
    if "low" not in spec or "high" not in spec:
        raise BackpropLabError(
            f"search.space.{name} needs 'choices' or 'low' and 'high', got {dict(spec)}"
        )
    if isinstance(spec.low, int) and isinstance(spec.high, int) and not spec.get("log", False):
        return trial.suggest_int(name, spec.low, spec.high, step=spec.get("step", 1))
    return trial.suggest_float(
        name, spec.low, spec.high, log=spec.get("log", False), step=spec.get("step")
    )


def parameters(space: DictConfig, prefix: str = "") -> dict[str, DictConfig]:
    """The search space, nested like the config, as {dotted config key: its entry}."""
    found = {}
    for key, value in space.items():
        name = f"{prefix}{key}"
        if not isinstance(value, DictConfig):
            raise BackpropLabError(f"search.space.{name} must be {{low, high}} or {{choices}}")
        if "low" in value or "high" in value or "choices" in value:
            found[name] = value
        else:
            found.update(parameters(value, f"{name}."))
    return found


def open_study(cfg: DictConfig, search_dir: Path) -> optuna.Study:
    url = cfg.search.storage or f"sqlite:///{search_dir / 'study.db'}"
    for attempt in range(5):
        try:
            study = optuna.create_study(
                study_name=cfg.search.study_name,
                storage=_storage(cfg, url),
                load_if_exists=True,
                direction="minimize" if cfg.objective.mode == "min" else "maximize",
                pruner=instantiate(cfg.search.pruner),
            )
            break
        except (DuplicatedStudyError, SQLAlchemyError):
            # Workers started together race to create the tables and the study; the loser
            # finds them made and loads them.
            if attempt == 4:
                raise
            time.sleep(0.5 * (attempt + 1))
    # A seeded sampler restarts its random stream in every process: offset the seed by the trials
    # the study already holds, so a resumed search does not draw its first trials again.
    seed = cfg.search.sampler.get("seed")
    offset = {"seed": seed + len(study.trials)} if seed is not None else {}
    study.sampler = instantiate(cfg.search.sampler, **offset)
    return study


def _storage(cfg: DictConfig, url: str) -> RDBStorage:
    with warnings.catch_warnings():  # heartbeats are what resuming after a killed worker rests on
        warnings.simplefilter("ignore", ExperimentalWarning)
        return RDBStorage(
            url,
            heartbeat_interval=cfg.search.heartbeat_interval,
            grace_period=cfg.search.grace_period,
            heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(cfg.search.max_retry),
        )


def search(cfg: DictConfig) -> optuna.Study:
    """Run trials until the study holds ``search.n_trials`` finished (complete or pruned) ones."""
    search_dir = Path(HydraConfig.get().runtime.output_dir)
    space = parameters(cfg.search.space or DictConfig({}))
    if not space:
        raise BackpropLabError("search.space is empty: give at least one parameter to search")
    study = open_study(cfg, search_dir)
    metric = cfg.objective.metric

    def objective(trial: optuna.Trial) -> float:
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

    done = len(study.get_trials(deepcopy=False, states=DONE))
    remaining = cfg.search.n_trials - done
    try:
        if remaining > 0:
            study.optimize(
                objective,
                n_trials=remaining,
                callbacks=[optuna.study.MaxTrialsCallback(cfg.search.n_trials, states=DONE)],
                catch=(Exception,),  # a failed trial is recorded as FAIL; the search goes on
            )
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
