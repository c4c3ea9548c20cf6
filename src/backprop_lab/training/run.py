"""One training run: a composed config in, a summary out.

    instantiate data, objective, optimiser (partial), model, callbacks, loggers, Trainer
    -> predictions at the configured inputs -> trainer.fit -> predictions again
    -> summary.json and metrics.csv in the run's output dir, HParams in TensorBoard, a report

The summary is written whatever happens: a run that fails or is interrupted records its status
and error beside what it had.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import signal
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.types import RunMode
from hydra.utils import instantiate
from lightning.fabric.utilities.exceptions import MisconfigurationException
from omegaconf import DictConfig, ListConfig, OmegaConf

from backprop_lab import files, schema
from backprop_lab.callbacks import HParamsSummary, StopOnSignal, best_epoch
from backprop_lab.dashboard import render
from backprop_lab.data import DataError, TensorDataModule
from backprop_lab.errors import BackpropLabError, ConfigError, Interrupted
from backprop_lab.models import SeedModel, build_model
from backprop_lab.ranks import is_rank_zero
from backprop_lab.training import allocator, checkpoints

log = logging.getLogger(__name__)

# Lightning 2.6 calls a torch.utils._pytree API that torch 2.15 deprecates: nothing to act on.
warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
# A resumed run writes into a run dir of its own, leaving the interrupted one as it was; the
# checkpoint callback's note that its directory changed is expected there.
warnings.filterwarnings("ignore", message="The dirpath has changed from")
# Lightning warns when an epoch has fewer batches than log_every_n_steps, for its own self.log
# step logging; this project logs a step every log_every_n_steps steps counted across epochs.
warnings.filterwarnings("ignore", message="The number of training batches .* logging interval")

#: Hyperparameters shown in TensorBoard's HParams tab for every run (besides its overrides).
HPARAM_KEYS = (
    "optimizer.lr",
    "optimizer.momentum",
    "optimizer.weight_decay",
    "data.batch_size",
    "trainer.max_epochs",
    "loss.l2",
    "model.gradients",
    "seed",
)


def _single_console() -> None:
    """`import lightning` adds a console handler of its own; under Hydra, whose root handler already
    prints (and writes train.log), that handler makes every Lightning message appear twice."""
    if logging.getLogger().handlers:
        logging.getLogger("lightning").handlers.clear()


def make(section: str, node: DictConfig, **kwargs: Any) -> Any:
    """instantiate() whose failures a user can fix end as one line naming the config section.

    Plain lists and dicts are passed, not OmegaConf containers: checkpoints then hold only plain
    values and load with torch.load(weights_only=True).
    """
    try:
        return instantiate(node, _convert_="all", **kwargs)
    except InstantiationException as error:
        cause = error.__cause__
        if isinstance(cause, BackpropLabError):
            raise cause from None
        if isinstance(cause, (ValueError, TypeError, ImportError, MisconfigurationException)):
            raise ConfigError(f"{section}: {' '.join(str(cause).split())}") from error
        if isinstance(cause, OSError) and cause.filename is not None:
            raise _path_error(cause) from None
        raise


def build(cfg: DictConfig) -> tuple[TensorDataModule, SeedModel]:
    """Instantiate the data and the model from a config, and check that they fit each other."""
    schema.check(cfg)
    # The data in the dtype the model trains in: a value that dtype cannot hold is named as the
    # file is read, not found as an inf loss at step 0.
    dtype = getattr(torch, schema.training_dtype(cfg.trainer.get("precision")))
    datamodule: TensorDataModule = make("data", cfg.data, dtype=dtype)
    model = build_model(
        OmegaConf.to_container(cfg.model, resolve=True),
        objective=make("loss", cfg.loss),
        optimizer=make("optimizer", cfg.optimizer),
    )
    model.run_config = {
        key: OmegaConf.to_container(cfg[key], resolve=True)
        for key in ("model", "loss", "optimizer", "data", "predict_at")
        if cfg.get(key) is not None
    }
    if (datamodule.in_features, datamodule.out_features) != (model.in_features, model.out_features):
        raise DataError(
            f"the data has {datamodule.in_features} input and {datamodule.out_features} target "
            f"column(s); {type(model).__name__} takes {model.in_features} and gives "
            f"{model.out_features}. Set data.x_columns and data.y_columns to fit the model."
        )
    _warn_unreachable(datamodule, model)
    return datamodule, model


def _warn_unreachable(datamodule: TensorDataModule, model: SeedModel) -> None:
    """Targets outside the model's output range: the loss can never reach 0 (not an error)."""
    if model.output_range is None:
        return
    low, high = model.output_range
    y = datamodule.train_xy[1]
    outside = ((y <= low) | (y >= high)).nonzero().tolist()
    if outside:
        row, col = outside[0]
        log.warning(
            "%d target value(s) lie outside (%g, %g), where %s's outputs always lie, e.g. %g "
            "(data row %d, target column %d): the loss cannot reach 0",
            len(outside),
            low,
            high,
            type(model).__name__,
            y[row, col].item(),
            row + 1,
            col + 1,
        )


def train(
    cfg: DictConfig, extra_callbacks: list[pl.Callback] = (), quiet: bool = False
) -> dict[str, Any]:
    """Train the configured model and return the run's summary (also written to summary.json).

    ``extra_callbacks`` join the configured ones (a search adds its pruning callback there);
    ``quiet`` leaves out the console report.
    """
    started = time.perf_counter()
    _single_console()
    output_dir = Path(cfg.paths.output_dir)
    if is_rank_zero():  # the process that writes the run's files; the others join its dir
        files.check_run_dir(output_dir, key="paths.output_dir")  # before anything is written
    output_dir.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {"status": "running", "error": None, "overrides": _task_overrides()}
    model: SeedModel | None = None
    trainer: pl.Trainer | None = None
    stop = StopOnSignal(output_dir / "checkpoints" / "last.ckpt")
    with files.background_writers_report_full_disks(output_dir):
        try:
            _refuse_ddp_in_multirun(cfg)
            if cfg.seed is not None:
                pl.seed_everything(cfg.seed, workers=True, verbose=False)
            resume, saved = _checkpoint_to_resume(cfg, output_dir)
            datamodule, model = build(cfg)
            if resume is not None:
                checkpoints.check_fits(saved, resume, cfg, model, datamodule)
            summary["resumed_from"] = str(resume) if resume else None
            allocator.keep_freed_memory(cfg.get("keep_freed_memory_mb", 0))
            callbacks = [make("callbacks", c) for c in (cfg.get("callbacks") or {}).values() if c]
            callbacks += [*extra_callbacks, HParamsSummary(_hparams(cfg), **cfg.objective), stop]
            loggers = [make("logger", lg) for lg in (cfg.get("logger") or {}).values() if lg]
            # Without validation data, tell the Trainer so rather than hand it an empty loader.
            no_val = {"limit_val_batches": 0} if datamodule.val_xy is None else {}
            trainer = make(
                "trainer", cfg.trainer, callbacks=callbacks, logger=loggers or False, **no_val
            )
            summary["predict_at"] = inputs = _as_rows(cfg.get("predict_at"))
            model.predictions_before = _predictions_before(model, inputs, saved)
            summary["predictions_before"] = model.predictions_before["predictions"]
            trainer.fit(model, datamodule=datamodule, ckpt_path=resume, weights_only=True)
            if stop.received is not None:  # a signal at an epoch's last batch: stopped at its end
                raise stop.interrupted(trainer)
            summary["predictions_after"] = model.predict_at(inputs) if inputs else None
            summary["status"] = "finished"
        except BaseException as caught:
            error = _as_user_error(caught, stop, output_dir)
            summary["status"] = getattr(error, "status", "failed")
            summary["error"] = _one_line(error)
            if trainer is not None:  # training began: say where what it had is
                if isinstance(error, BackpropLabError):
                    error.detail = _kept(output_dir)
                else:
                    print(_kept(output_dir), file=sys.stderr)
            if trainer is None or trainer.is_global_zero:
                not_written = _write_run_files(cfg, summary, model, trainer, output_dir, started)
                if not_written:
                    if isinstance(error, BackpropLabError):
                        error.detail = f"{error.detail or ''}; {not_written}".lstrip("; ")
                    else:
                        print(not_written, file=sys.stderr)
            if error is caught:
                raise
            raise error from None
    if trainer.is_global_zero:
        _finish_run_files(cfg, summary, model, trainer, output_dir, started)
    try:
        if not _sweep_draws_later():
            render.wait()  # the run's figures: the report names only files that exist
    except KeyboardInterrupt:
        summary["figures"] = (
            "not all drawn: stopped by SIGINT; each .figures-*.pkl file in the run dir keeps the "
            "numbers of its figures, and python -m backprop_lab.dashboard.render <file> draws them"
        )
        _write_run_files(cfg, summary, model, trainer, output_dir, started)
        raise Interrupted(
            f"stopped by SIGINT while drawing the figures; the training itself finished, and "
            f"{output_dir / 'summary.json'} says which figures are missing",
            signal.SIGINT,
        ) from None
    if trainer.is_global_zero and not quiet:
        print(report(summary))
    return summary


def _as_user_error(error: BaseException, stop: StopOnSignal, output_dir: Path) -> BaseException:
    """A signal or a full disk as the one-line error a user can act on; other errors as they are."""
    if isinstance(error, BackpropLabError):
        return error
    signum = stop.received or (signal.SIGINT if isinstance(error, KeyboardInterrupt) else None)
    if signum is not None:
        # The signal reached Lightning, or Python, before this run's handler: report it as
        # the signal, not as Lightning's exit status.
        resume = f"resume with ckpt_path={stop.checkpoint}" if stop.saved else "nothing saved"
        return Interrupted(f"stopped by {signal.Signals(signum).name}; {resume}", signum)
    if isinstance(error, MisconfigurationException):  # Lightning's word on a setting, at fit
        return ConfigError(f"trainer: {' '.join(str(error).split())}")
    if isinstance(error, OSError) and error.filename is not None and not files.is_disk_full(error):
        return _path_error(error)
    if files.is_disk_full(error):
        return files.DiskFull(
            f"no space left on the device of {output_dir}: free some space, then run again "
            "(with ckpt_path=<this run dir> to continue from its last checkpoint)"
        )
    return error


def _path_error(error: OSError) -> BackpropLabError:
    """A path the run cannot create or write (a missing or read-only place, a file where a dir
    belongs), named in one line."""
    return BackpropLabError(
        f"cannot write {error.filename}: {error.strerror}; give the run a place it can write "
        "(paths.log_dir, hydra.run.dir, or the setting that names this path)"
    )


def _write_run_files(cfg, summary, model, trainer, output_dir: Path, started) -> str | None:
    """metrics.csv, then summary.json, each written whole (files.write_atomic), so a crash or a
    full disk never leaves a summary that says ``finished`` beside a metrics.csv cut short.

    Returns None, or what could not be written and why (the caller decides whether that is the
    run's error or a note beside it)."""
    summary.update(_results(cfg, model, trainer, output_dir, started))
    try:
        if model is not None and model.history:
            files.write_atomic(output_dir / "metrics.csv", _history_csv(model.history))
        files.write_atomic(output_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    except OSError as error:
        reason = "no space left on the device" if files.is_disk_full(error) else error.strerror
        return f"summary.json and metrics.csv were not written ({reason})"
    return None


def _finish_run_files(cfg, summary, model, trainer, output_dir: Path, started) -> None:
    """:func:`_write_run_files` for a run that has not failed: a file not written fails it."""
    not_written = _write_run_files(cfg, summary, model, trainer, output_dir, started)
    if not_written:
        raise files.DiskFull(f"{output_dir}: {not_written}; free some space and run again")


def _checkpoint_to_resume(cfg: DictConfig, output_dir: Path) -> tuple[Path | None, dict | None]:
    """The checkpoint cfg.ckpt_path names and its contents; (None, None) for a new run.

    A run with ``data.seed=null`` continues with the seed the checkpoint's data was drawn with."""
    if not cfg.get("ckpt_path"):
        return None, None
    runs_dir = Path(cfg.paths.log_dir) / "runs" / str(cfg.run_name)
    path = checkpoints.resolve(str(cfg.ckpt_path), runs_dir, exclude=output_dir)
    checkpoint = checkpoints.load(path)
    data = (checkpoint.get("run_state") or {}).get("data") or {}
    if OmegaConf.select(cfg, "data.seed", default=0) is None and data.get("seed") is not None:
        cfg.data.seed = data["seed"]
    return path, checkpoint


def _predictions_before(model: SeedModel, inputs, saved: dict | None) -> dict[str, Any]:
    """The predictions at ``inputs`` of the untrained model, or of the run a checkpoint resumes."""
    before = (saved or {}).get("run_state", {}).get("predictions_before")
    if saved is not None and before and before.get("predict_at") == inputs:
        return before
    fresh = saved is None  # a resumed model's initial values are the checkpointed run's
    predictions = model.predict_at(inputs) if inputs and fresh else None
    return {"predict_at": inputs, "predictions": predictions}


def _sweep_draws_later() -> bool:
    """In a multirun whose jobs run in the sweep's own process (Hydra's basic launcher), a job's
    figures are drawn while the next job trains; the sweep waits for them all at its end."""
    if not HydraConfig.initialized():
        return False
    hydra = HydraConfig.get()
    launcher = str(OmegaConf.select(hydra, "launcher._target_", default=""))
    return hydra.mode == RunMode.MULTIRUN and launcher.endswith(".BasicLauncher")


def _kept(output_dir: Path) -> str:
    """Where a stopped run's files are (the second line of its error)."""
    last = output_dir / "checkpoints" / "last.ckpt"
    kept = f"; its last checkpoint: {last}" if last.is_file() else "; no checkpoint was saved yet"
    return f"the run's files (summary.json, logs) are in {output_dir}{kept}"


def _results(cfg, model, trainer, output_dir: Path, started: float) -> dict[str, Any]:
    results: dict[str, Any] = {"output_dir": str(output_dir), "seed": cfg.seed}
    if model is not None:
        results["model"] = type(model).__name__
        results["final_loss"] = float(model.last_loss) if model.last_loss is not None else None
        results["parameters"] = model.scalar_values()
        results["final_metrics"] = model.history[-1] if model.history else {}
        results["best"] = best_epoch(model.history, cfg.objective.metric, cfg.objective.mode)
    if trainer is not None:
        results["device"] = _device_name(trainer.strategy.root_device)
        results["precision"] = str(trainer.precision)
        results["epochs"] = trainer.current_epoch
        results["steps"] = trainer.global_step
    results["wall_time_s"] = round(time.perf_counter() - started, 3)
    return results


def report(summary: dict[str, Any]) -> str:
    """The console report: predictions before and after (as the seeds print), the final results,
    then where to look: the loss curve, the checkpoint, TensorBoard, and last the run's dir."""
    lines = []
    inputs = summary.get("predict_at")
    if inputs and summary.get("predictions_after") is not None:
        for when in ("before", "after"):
            preds = summary[f"predictions_{when}"]
            if preds is None:  # resumed with other predict_at inputs: none from before training
                continue
            shown = ", ".join(
                f"x={_fmt(x)} -> {_fmt(p)}" for x, p in zip(inputs, preds, strict=True)
            )
            lines.append(f"predict ({when} training): {shown}")
    lines.append(f"final loss: {summary['final_loss']!r}")
    final = {k: v for k, v in (summary.get("final_metrics") or {}).items() if "/" in k}
    if final:
        lines.append("final metrics: " + ", ".join(f"{k}={v:.6g}" for k, v in final.items()))
    best = summary.get("best")
    if best:
        lines.append(f"best epoch: {best['epoch']} ({best['metric']}={best['value']:.6g})")
    lines += [
        "parameters: " + ", ".join(f"{k}={v:.6g}" for k, v in summary["parameters"].items()),
        f"device: {summary['device']}",
        f"epochs: {summary['epochs']}, steps: {summary['steps']}"
        + (f", {summary['wall_time_s']:.2f} s" if summary.get("wall_time_s") is not None else ""),
    ]
    out = Path(summary["output_dir"])
    for label, path in (
        ("loss curve", out / "loss_curve.png"),
        ("checkpoint", out / "checkpoints" / "last.ckpt"),
    ):
        if path.is_file() or render.pending(path):
            lines.append(f"{label}: {path}")
    if any(out.glob("events.out.tfevents.*")):
        lines.append(f"tensorboard: uv run tensorboard --logdir {out}")
    lines.append(f"logs: {out}")
    return "\n".join(lines)


def _history_csv(history: list[dict[str, float]]) -> str:
    columns = list(dict.fromkeys(k for row in history for k in row))
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=columns)
    writer.writeheader()
    writer.writerows(history)
    return text.getvalue()


def _hparams(cfg: DictConfig) -> dict[str, Any]:
    """The run's hyperparameters for the HParams tab: group choices, key values, overrides."""
    hparams: dict[str, Any] = {}
    if HydraConfig.initialized():
        choices = HydraConfig.get().runtime.choices
        hparams.update({g: choices.get(g) for g in ("model", "data", "loss", "optimizer")})
    for key in HPARAM_KEYS:
        value = OmegaConf.select(cfg, key, default=None)
        if value is not None:
            hparams[key] = value
    hparams.update(dict(o.split("=", 1) for o in _task_overrides() if "=" in o))
    return hparams


def _task_overrides() -> list[str]:
    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def _refuse_ddp_in_multirun(cfg: DictConfig) -> None:
    strategy = str(cfg.trainer.get("strategy", "auto"))
    in_multirun = HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
    if in_multirun and strategy.startswith("ddp") and "spawn" not in strategy:
        raise BackpropLabError(
            f"trainer.strategy={strategy} cannot run inside a multirun (-m): Lightning's DDP "
            "launcher re-runs the whole sweep in every child process (Lightning issue 11300). "
            "Run the DDP job on its own, or use trainer.strategy=ddp_spawn in a sweep."
        )


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return f"{type(error).__name__}: {text}"


def _fmt(values: Any) -> str:
    if isinstance(values, list):
        return repr(values[0]) if len(values) == 1 else "(" + ", ".join(map(repr, values)) + ")"
    return repr(values)


def _as_rows(inputs: Any) -> list[list[float]] | None:
    """``[4.0]`` -> ``[[4.0]]``; ``[[0.5, 0.3]]`` stays: one list of features per input row."""
    if inputs is None:
        return None
    rows = OmegaConf.to_container(inputs) if isinstance(inputs, ListConfig) else inputs
    rows = rows if isinstance(rows, (list, tuple)) else [rows]  # predict_at=4.0: one input
    return [list(r) if isinstance(r, (list, tuple)) else [r] for r in rows]


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)
