"""The end of a multirun: every job's result in one table, on the console and in summary.csv,
and every job's loss curve in one figure, loss_curves.png.

Runs as a Hydra callback in the process that launched the sweep, whichever launcher ran the jobs.
Each job writes its own summary.json (also when it fails), so a failed job is a row like any other.
"""

from __future__ import annotations

import csv
import json
import math
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from backprop_lab.dashboard import render

COLUMNS = (
    "job",
    "status",
    "objective",
    "final_loss",
    "epochs",
    "wall_time_s",
    "overrides",
    "error",
)


def collect(sweep_dir: Path) -> list[dict[str, Any]]:
    """One row per job dir of the sweep, sorted by the objective (best first, failures last)."""
    rows = []
    for job_dir in sorted(
        (p for p in sweep_dir.iterdir() if (p / ".hydra").is_dir()), key=_job_num
    ):
        overrides = OmegaConf.load(job_dir / ".hydra" / "overrides.yaml")
        summary_file = job_dir / "summary.json"
        summary = json.loads(summary_file.read_text()) if summary_file.is_file() else {}
        best = summary.get("best") or {}
        rows.append(
            {
                "job": job_dir.name,
                "status": summary.get("status", "no summary (the job died)"),
                "objective": best.get("value"),
                "objective_metric": best.get("metric"),
                "final_loss": summary.get("final_loss"),
                "epochs": summary.get("epochs"),
                "wall_time_s": summary.get("wall_time_s"),
                "overrides": " ".join(overrides),
                "error": summary.get("error"),
                **{
                    f"final/{k}": v
                    for k, v in (summary.get("final_metrics") or {}).items()
                    if k not in ("epoch", "step")
                },
                # the test after training (Loss/test, test/mse, ...), where the jobs have one
                **((summary.get("test") or {}).get("metrics") or {}),
            }
        )
    return rows


def sort_rows(rows: list[dict[str, Any]], mode: str) -> list[dict[str, Any]]:
    def key(row: dict[str, Any]) -> tuple[int, float]:
        value = row["objective"]
        if row["status"] != "finished" or value is None or not math.isfinite(value):
            return (1, 0.0)
        return (0, value if mode == "min" else -value)

    return sorted(rows, key=key)


def write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    columns = list(dict.fromkeys([*COLUMNS, "objective_metric", *(k for r in rows for k in r)]))
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def table(rows: list[dict[str, Any]]) -> str:
    shown = ("job", "status", "objective", "final_loss", "epochs", "wall_time_s")
    cells = [[_cell(r[c]) for c in shown] for r in rows]
    widths = [max([len(h), *(len(c[i]) for c in cells)]) for i, h in enumerate(shown)]
    line = "  ".join(h.ljust(w) for h, w in zip(shown, widths, strict=True))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(out)


class SweepSummary(Callback):
    """Writes <sweep dir>/summary.csv, prints the table and the one ``tensorboard --logdir <sweep
    dir>`` command that shows every job (a job's own report leaves its command out); exits 1 if
    any job failed.

    It prints rather than logs: after the jobs, the logging Hydra configured is the last job's,
    and the sweep's table does not belong in that job's train.log."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        render.wait()  # the jobs' figures, drawn while later jobs trained
        sweep_dir = Path(config.hydra.sweep.dir)
        if not sweep_dir.is_dir():
            return
        rows = sort_rows(collect(sweep_dir), config.objective.mode)
        write_csv(rows, sweep_dir / "summary.csv")
        print(f"\nsweep of {len(rows)} job(s), best {config.objective.metric} first:")
        print(table(rows))
        print(f"summary: {sweep_dir / 'summary.csv'}")
        figure = plot_loss_curves(sweep_dir, rows, sweep_dir / "loss_curves.png")
        if figure is not None:
            print(f"loss curves: {figure}")
        if any(sweep_dir.glob("*/events.out.tfevents.*")):  # one TensorBoard for every job
            print(f"tensorboard: uv run tensorboard --logdir {sweep_dir}")
        failed = [r for r in rows if r["status"] != "finished"]
        if failed:
            print(
                f"error: {len(failed)} of {len(rows)} job(s) failed: "
                + "; ".join(f"{r['job']}: {r['error']}" for r in failed),
                file=sys.stderr,
            )
            sys.exit(1)


def plot_loss_curves(
    sweep_dir: Path, rows: list[dict[str, Any]], path: Path, metric: str = "Loss/train"
) -> Path | None:
    """One figure with every job's ``metric`` by epoch (from its metrics.csv), in table order,
    each labelled by its number and the overrides that set it apart from the other jobs."""
    overrides = [dict(o.split("=", 1) for o in r["overrides"].split() if "=" in o) for r in rows]
    shared = set.intersection(*(set(o.items()) for o in overrides)) if overrides else set()
    curves = {}
    for row, own in zip(rows, overrides, strict=True):
        history = sweep_dir / row["job"] / "metrics.csv"
        if not history.is_file():
            continue
        with history.open(newline="") as f:
            points = [
                (float(r["epoch"]), float(r[metric])) for r in csv.DictReader(f) if r.get(metric)
            ]
        if points:
            apart = " ".join(f"{k}={v}" for k, v in own.items() if (k, v) not in shared)
            label = f"{row['job'].split('_', 1)[0]}: {apart}" if apart else row["job"]
            curves[label] = ([e for e, _ in points], [v for _, v in points])
    if not curves:
        return None
    from backprop_lab.dashboard import plots  # matplotlib loads only here

    title = f"{metric} by epoch, {len(curves)} job(s) of {sweep_dir.name}"
    return plots.save_png(plots.compare_loss_curves(curves, title), path)


def _job_num(path: Path) -> int:
    head = path.name.split("_", 1)[0]
    return int(head) if head.isdigit() else 1 << 30


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)
