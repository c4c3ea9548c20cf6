"""What a run leaves behind: summary.json, metrics.csv, the console report."""

from __future__ import annotations

import csv
import io
import json
import time
from pathlib import Path
from typing import Any

import torch

from backprop_lab import files
from backprop_lab.callbacks import best_epoch
from backprop_lab.callbacks.stopping import stopped_early
from backprop_lab.dashboard import render
from backprop_lab.rows import DIGITS, format_row, rounded
from backprop_lab.training.evaluation import test_lines


def write_run_files(cfg, summary, model, trainer, output_dir: Path, started) -> str | None:
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


def finish_run_files(cfg, summary, model, trainer, output_dir: Path, started) -> None:
    """:func:`write_run_files` for a run that has not failed: a file not written fails it."""
    not_written = write_run_files(cfg, summary, model, trainer, output_dir, started)
    if not_written:
        raise files.DiskFull(f"{output_dir}: {not_written}; free some space and run again")


def kept(output_dir: Path) -> str:
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
        results["first_step"] = model.first_step
        results["final_metrics"] = model.history[-1] if model.history else {}
        results["best"] = best_epoch(model.history, cfg.objective.metric, cfg.objective.mode)
        results["lr"] = model.learning_rates()  # {"first", "last"}: scheduler= changes it
    if trainer is not None:
        results["device"] = device_name(trainer.strategy.root_device)
        results["precision"] = str(trainer.precision)
        results["epochs"] = trainer.current_epoch
        results["steps"] = trainer.global_step
        results["stopped_early"] = stopped_early(trainer)
    results["wall_time_s"] = round(time.perf_counter() - started, 3)
    return results


def report(summary: dict[str, Any], tensorboard: bool = True) -> str:
    """The console report: predictions before and after (as the seeds print, rounded for
    reading), each parameter before -> after training and its gradient at the first step, the
    final results, then where to look: the loss curve, the checkpoint, TensorBoard (``tensorboard``:
    a sweep prints one command for all its jobs instead), and last the run's dir.

    The numbers are rounded to 6 significant digits; summary.json keeps every digit."""
    lines = []
    inputs = summary.get("predict_at")
    if inputs and summary.get("predictions_after") is not None:
        for when in ("before", "after"):
            preds = summary[f"predictions_{when}"]
            if preds is None:  # resumed with other predict_at inputs: none from before training
                continue
            shown = ", ".join(
                f"x={format_row(x, DIGITS)} -> {format_row(p, DIGITS)}"
                for x, p in zip(inputs, preds, strict=True)
            )
            lines.append(f"predict ({when} training): {shown}")
    lines += first_step_lines(summary.get("parameters") or {}, summary.get("first_step"))
    lines.append(f"final loss: {summary['final_loss']!r}")
    final = {k: v for k, v in (summary.get("final_metrics") or {}).items() if "/" in k}
    if final:
        lines.append("final metrics: " + ", ".join(f"{k}={v:.6g}" for k, v in final.items()))
    best = summary.get("best")
    if best:
        lines.append(f"best epoch: {best['epoch']} ({best['metric']}={best['value']:.6g})")
    lr = summary.get("lr")
    if lr and lr["last"] != lr["first"]:
        lines.append(f"learning rate: {lr['first']:.6g} -> {lr['last']:.6g}")
    stopped = summary.get("stopped_early")
    if stopped:
        lines.append(f"stopped early: at epoch {stopped['epoch']}, {stopped['reason']}")
    if summary.get("test"):
        lines += test_lines(summary["test"])
    lines += [
        f"device: {summary['device']}",
        f"epochs: {summary['epochs']}, steps: {summary['steps']}"
        + (f", {summary['wall_time_s']:.2f} s" if summary.get("wall_time_s") is not None else ""),
    ]
    out = Path(summary["output_dir"])
    for label, path in (
        ("loss curve", out / "loss_curve.png"),
        ("checkpoint", out / "checkpoints" / "last.ckpt"),
        ("best checkpoint", out / "checkpoints" / "best.ckpt"),
        ("profile", out / "fit-profile.txt"),  # debug=profiler: trainer.profiler's report
    ):
        if path.is_file() or render.pending(path):
            lines.append(f"{label}: {path}")
    if tensorboard and any(out.glob("events.out.tfevents.*")):
        lines.append(f"tensorboard: uv run tensorboard --logdir {out}")
    lines.append(f"logs: {out}")
    return "\n".join(lines)


def first_step_lines(parameters: dict[str, float], first_step: dict | None) -> list[str]:
    """``parameters: w=-0.2505 -> -0.150451, b=...`` (before -> after training) and
    ``gradients at step 0: dL/dw = -10.0049, dL/db = -4.1688``: a short run's whole story.
    Without a first step (no step was taken), the parameters as they are."""
    before = (first_step or {}).get("parameters") or {}
    gradients = (first_step or {}).get("gradients") or {}

    def value(name: str, after: float) -> str:
        if name not in before:
            return f"{name}={rounded(after)}"
        return f"{name}={rounded(before[name])} -> {rounded(after)}"

    lines = ["parameters: " + ", ".join(value(k, v) for k, v in parameters.items())]
    if gradients:
        shown = ", ".join(f"dL/d{k} = {rounded(g)}" for k, g in gradients.items())
        lines.append(f"gradients at step 0: {shown}")
    return lines


def _history_csv(history: list[dict[str, float]]) -> str:
    columns = list(dict.fromkeys(k for row in history for k in row))
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=columns)
    writer.writeheader()
    writer.writerows(history)
    return text.getvalue()


def one_line(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return f"{type(error).__name__}: {text}"


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)
