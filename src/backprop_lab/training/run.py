"""One training run: a composed config in, a summary out.

    instantiate data, objective, optimiser (partial), model, callbacks, loggers, Trainer
    -> predictions at the configured inputs -> trainer.fit -> predictions again
    -> trainer.test on the test split, if the data has one (best checkpoint's weights)
    -> summary.json and metrics.csv in the run's output dir, HParams in TensorBoard, a report

The summary is written whatever happens: a run that fails or is interrupted records its status
and error beside what it had.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import EarlyStopping
from omegaconf import DictConfig, OmegaConf

from backprop_lab import console, files
from backprop_lab.callbacks import HParamsSummary, StopOnSignal
from backprop_lab.config import task_overrides
from backprop_lab.dashboard import render
from backprop_lab.errors import BackpropLabError, ConfigError, Interrupted
from backprop_lab.models import SeedModel
from backprop_lab.ranks import is_rank_zero
from backprop_lab.rows import as_rows
from backprop_lab.training import checkpoints
from backprop_lab.training.build import build_data, build_model, make, path_error
from backprop_lab.training.evaluation import test_after_fit
from backprop_lab.training.hparams import hparams, trial_id
from backprop_lab.training.summary import (
    finish_run_files,
    kept,
    one_line,
    report,
    write_run_files,
)

log = logging.getLogger(__name__)

# Lightning 2.6 calls a torch.utils._pytree API that torch 2.15 deprecates: nothing to act on.
warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
# A resumed run writes into a run dir of its own, leaving the interrupted one as it was; the
# checkpoint callback's note that its directory changed is expected there.
warnings.filterwarnings("ignore", message="The dirpath has changed from")
# A run resumed without the early stopping its checkpoint was made with: left off on purpose.
warnings.filterwarnings(
    "ignore", message=r"Be aware that when using `ckpt_path`.*\[\"EarlyStopping\{[^]]*\}\"\]\.$"
)
# Lightning warns when an epoch has fewer batches than log_every_n_steps, for its own self.log
# step logging; this project logs a step every log_every_n_steps steps counted across epochs.
warnings.filterwarnings("ignore", message="The number of training batches .* logging interval")
# debug=fast_dev_run and debug=overfit set limit_val_batches themselves, over the 0 that a run
# without validation data passes: Lightning then asks for the datamodule's empty loader (a list,
# data/modules.py) and notes that it is empty, as it is meant to be.
warnings.filterwarnings("ignore", message=r"Total length of `list` across ranks is zero")
# logger=mlflow: MLflow sets up its loggers as it is imported, at INFO with a console handler of its
# own, and says there that it makes the tables of a new logs/mlflow.db; its warnings still show.
os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
# Lightning's MLFlowLogger warns as it creates the experiment of a run_name's first run, which is
# how every experiment begins.
logging.getLogger("lightning.pytorch.loggers.mlflow").addFilter(
    lambda record: not record.getMessage().endswith("not found. Creating it.")
)


# Lightning's hint, on a machine with SLURM installed, to start the run with srun: a run here is
# one process, or one SLURM job of a sweep (hydra/launcher=slurm submits them).
warnings.filterwarnings("ignore", message="The `srun` command is available on your system")


def train(
    cfg: DictConfig, extra_callbacks: Sequence[pl.Callback] = (), quiet: bool = False
) -> dict[str, Any]:
    """Train the configured model and return the run's summary (also written to summary.json).

    ``extra_callbacks`` join the configured ones (a search adds its pruning callback there);
    ``quiet`` leaves out the console report.
    """
    started = time.perf_counter()
    console.lightning_through_root()
    output_dir = Path(cfg.paths.output_dir)
    if is_rank_zero():  # the process that writes the run's files; the others join its dir
        files.check_run_dir(output_dir, key="paths.output_dir")  # before anything is written
    output_dir.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {"status": "running", "error": None, "overrides": task_overrides()}
    model: SeedModel | None = None
    trainer: pl.Trainer | None = None
    stop = StopOnSignal(output_dir / "checkpoints" / "last.ckpt")
    with files.background_writers_report_full_disks(output_dir):
        try:
            _refuse_ddp_in_multirun(cfg)
            if cfg.seed is not None:
                pl.seed_everything(cfg.seed, workers=True, verbose=False)
            resume, saved = _checkpoint_to_resume(cfg, output_dir)
            datamodule = build_data(cfg)
            callbacks = [make("callbacks", c) for c in (cfg.get("callbacks") or {}).values() if c]
            callbacks = [c for c in callbacks if c is not None]  # the ones switched off
            _check_early_stopping(callbacks, datamodule)
            values, chosen = hparams(cfg)
            summary_of_hparams = HParamsSummary(
                values, **cfg.objective, chosen=chosen, trial=trial_id(cfg)
            )
            callbacks += [*extra_callbacks, summary_of_hparams, stop]
            loggers = [make("logger", lg) for lg in (cfg.get("logger") or {}).values() if lg]
            # Without validation data, tell the Trainer so rather than hand it an empty loader.
            no_val = {"limit_val_batches": 0} if datamodule.val_xy is None else {}
            # The Trainer before the model, which is built under its init_module(): in the
            # training dtype (float64 from the config's values) and on the training device.
            lightning_trainer = make(
                "trainer", cfg.trainer, callbacks=callbacks, logger=loggers or False, **no_val
            )
            model = build_model(cfg, datamodule, lightning_trainer)
            if resume is not None and saved is not None:
                checkpoints.check_fits(saved, resume, cfg, model, datamodule)
            summary["resumed_from"] = str(resume) if resume else None
            trainer = lightning_trainer  # from here on, an error stops a run that has begun
            summary["predict_at"] = inputs = as_rows(cfg.get("predict_at"))
            model.predictions_before = _predictions_before(model, inputs, saved)
            summary["predictions_before"] = model.predictions_before["predictions"]
            trainer.fit(model, datamodule=datamodule, ckpt_path=resume, weights_only=True)
            if stop.received is not None:  # a signal at an epoch's last batch: stopped at its end
                raise stop.interrupted(trainer)
            summary["predictions_after"] = model.predict_at(inputs) if inputs else None
            summary["test"] = test_after_fit(trainer, model, datamodule)  # with a test split
            summary["status"] = "finished"
        except BaseException as caught:
            error = _as_user_error(caught, stop, output_dir)
            summary["status"] = getattr(error, "status", "failed")
            summary["error"] = one_line(error)
            if trainer is not None:  # training began: say where what it had is
                if isinstance(error, BackpropLabError):
                    error.detail = kept(output_dir)
                else:
                    print(kept(output_dir), file=sys.stderr)
            if trainer is None or trainer.is_global_zero:
                not_written = write_run_files(cfg, summary, model, trainer, output_dir, started)
                if not_written:
                    if isinstance(error, BackpropLabError):
                        error.detail = f"{error.detail or ''}; {not_written}".lstrip("; ")
                    else:
                        print(not_written, file=sys.stderr)
            if error is caught:
                raise
            raise error from None
    try:  # the loggers are closed now: the figures' TensorBoard events go in after theirs
        if _sweep_draws_later():
            render.release()  # drawn while the next job trains
        else:
            render.wait()  # the run's figures: the report names only files that exist
    except KeyboardInterrupt:
        summary["figures"] = (
            "not all drawn: stopped by SIGINT; a .figures-*.json file left in the run dir keeps "
            "the numbers of its figures, and python -m backprop_lab.dashboard.render <file> "
            "draws them"
        )
        write_run_files(cfg, summary, model, trainer, output_dir, started)
        raise Interrupted(
            f"stopped by SIGINT while drawing the figures; the training itself finished, and "
            f"{output_dir / 'summary.json'} says which figures are missing",
            signal.SIGINT,
        ) from None
    except OSError as error:
        if not files.is_disk_full(error):
            raise
        full = files.DiskFull(
            f"no space left on the device of {output_dir} while drawing the figures; the "
            "training itself finished: free some space, then draw them with python -m "
            "backprop_lab.dashboard.render <the .figures-*.json file in the run dir>"
        )
        summary["status"], summary["error"] = "failed", one_line(full)
        write_run_files(cfg, summary, model, trainer, output_dir, started)  # if there is room
        raise full from None
    if trainer.is_global_zero:
        finish_run_files(cfg, summary, model, trainer, output_dir, started)
    if trainer.is_global_zero and not quiet:
        # Through the run's log: the console shows it, and train.log keeps it. A sweep prints
        # one TensorBoard command for all its jobs at its end (tools/sweep.py).
        console.say(report(summary, tensorboard=not _in_multirun()))
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
    if isinstance(error, RuntimeError) and str(error).startswith("Early stopping conditioned"):
        return ConfigError(f"callbacks.early_stopping: {' '.join(str(error).split())}")
    if isinstance(error, MisconfigurationException):  # Lightning's word on a setting, at fit
        return ConfigError(f"trainer: {' '.join(str(error).split())}")
    if isinstance(error, OSError) and error.filename is not None and not files.is_disk_full(error):
        return path_error(error)
    if files.is_disk_full(error):
        return files.DiskFull(
            f"no space left on the device of {output_dir}: free some space, then run again "
            "(with ckpt_path=<this run dir> to continue from its last checkpoint)"
        )
    return error


def _check_early_stopping(callbacks: Sequence[pl.Callback], datamodule) -> None:
    """Early stopping on a validation metric needs validation data: said before training, not
    as Lightning's error at the first epoch's end."""
    for callback in callbacks:
        if not isinstance(callback, EarlyStopping) or datamodule.val_xy is not None:
            continue
        if callback.monitor.startswith(("Loss/val", "val/")):
            raise ConfigError(
                f"callbacks.early_stopping watches {callback.monitor}, but this run has no "
                "validation data; e.g. data.val_fraction=0.2 (or data.val_csv=...), or "
                "objective.metric=Loss/train"
            )


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
    launcher = str(hydra.launcher.get("_target_", ""))
    return hydra.mode == RunMode.MULTIRUN and launcher.endswith(".BasicLauncher")


def _in_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def _refuse_ddp_in_multirun(cfg: DictConfig) -> None:
    strategy = str(cfg.trainer.get("strategy", "auto"))
    in_multirun = HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
    if in_multirun and strategy.startswith("ddp") and "spawn" not in strategy:
        raise BackpropLabError(
            f"trainer.strategy={strategy} cannot run inside a multirun (-m): Lightning's DDP "
            "launcher re-runs the whole sweep in every child process (Lightning issue 11300). "
            "Run the DDP job on its own, or use trainer.strategy=ddp_spawn in a sweep."
        )
