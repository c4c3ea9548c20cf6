"""Benchmarks: backprop-lab against plain PyTorch and bare Lightning, each pair in one run.

    uv run benchmarks/run.py --repeats 3   # all seven sections, ~35 minutes on 2 CPU cores
    uv run benchmarks/run.py --quick       # a smoke run: fewer steps, rows, epochs; one repeat
    uv run benchmarks/run.py --only step,cold --repeats 7
    uv run benchmarks/run.py --only long --long-scale 0.3   # shorter long runs

step    Per-step cost of the default configuration (its logging and callbacks all on) on the
        quadratic model, data=synthetic with 10,000 rows at batch size 1 (10,000 steps, one
        epoch, no validation split, in order), against a plain PyTorch loop doing seed 004's
        SGD steps and against bare Lightning with everything off. Also: bare Lightning with
        self.log on every step, with histograms on every step, the project with its logging
        and callbacks off, and the default with the seeds' log_every_n_steps=1. Per step =
        first batch to last batch (the steady state), in wall and in CPU time; the fixed cost
        of fit (set-up, end of training) shows in fit_s.
cold    Wall time of `train.py model=quadratic` (seed 004: 300 steps, 100 epochs) against
        benchmarks/bare_lightning.py (imports Lightning, fits the same model with a
        TensorBoardLogger), and `import lightning.pytorch` alone. Subprocesses, as a user
        starts them, with a warm bytecode cache as any install has after its first run; and
        once more without one (PYTHONDONTWRITEBYTECODE=1 and no .pyc, as this sandbox runs).
data    Linear regression on 10^7 synthetic rows, batch 2^18, 5 epochs, timed from the start of
        trainer.fit to its end: samples per second against a plain loop slicing the same
        in-memory tensors, and peak RSS above the import floor (VmHWM after the imports and
        before the data). One subprocess per variant and repeat, each with glibc's default
        malloc settings.
data_equal
        The same linear model, rows and batch, at 5 and 20 epochs (fixed and per-step costs
        told apart: the fit time over the 15 extra epochs' steps is the per-step cost, what is
        left of the 5-epoch fit the fixed one): the plain loop, bare Lightning and the project
        (no validation split, in order), each under glibc's default malloc settings and each
        under GLIBC_TUNABLES=TUNABLES (below: why those values) set in its subprocess's
        environment. Samples/s and their ratios to bare Lightning and to the plain loop under
        the same settings, per step (first batch to last), minor page faults a step, and peak
        RSS above the import floor over the data's bytes. Then, once, the project's 5-epoch run
        under Lightning's SimpleProfiler (debug=profiler) with TUNABLES: where its step goes.
data_realistic
        data=synthetic's defaults at that size: the training rows shuffled each epoch and a 20%
        validation split validated each epoch. The project (data=synthetic, 5 epochs), bare
        Lightning doing the same (the project's split, its TensorBatches shuffled for training
        and in order for validation, a validation_step logging the MSE) and a plain loop doing
        the same (torch.randperm each epoch from a seeded generator, index_select batches, a
        no_grad MSE pass over the validation rows); under glibc's defaults and TUNABLES.
long    Long learner runs: `model=quadratic trainer.max_epochs=3334` (10,002 steps) and
        `model=sigmoid_net trainer.max_epochs=5000` (5,000 steps), with the seed experiments'
        log_every_n_steps=1 and the default callbacks, in this process as section step runs
        them. Against bare Lightning on the same model, rows and epochs with a TensorBoardLogger
        into a temp dir and self.log("Loss/train_step", loss) in every training_step (the
        baseline of the target), also with Lightning's default ModelCheckpoint (a checkpoint
        every epoch end), also with as many callbacks as the project's, doing nothing (what
        Lightning's call of every callback's hooks at every step costs), with everything off;
        and against plain loops,
        with and without SummaryWriter.add_scalar every step. Per step (first batch to last,
        epoch ends included) and fit time. Then, once, the project's quadratic run under
        Lightning's SimpleProfiler (debug=profiler, max_epochs overridden): each action's total
        time per step, largest first (nested: run_training_epoch contains the batch's actions).
        --long-scale shortens both runs; --no-profile leaves out the profiled runs.
sweep   `train.py -m model=quadratic seed=0,...,7` (8 jobs, basic launcher) against one
        `train.py model=quadratic`, wall time of the whole command.

Variants are interleaved within each repeat, their order rotating, so machine load hits them
alike; the tables give medians, and each ratio is the median of the per-repeat ratios. Results go
to benchmarks/results.json. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
#: Subprocesses keep their bytecode in a cache of their own, as an install keeps .pyc files.
CACHED = {
    **{k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"},
    "PYTHONPYCACHEPREFIX": str(Path(tempfile.gettempdir()) / "backprop-lab-bench-pycache"),
}
UNCACHED = {
    **{k: v for k, v in os.environ.items() if k != "PYTHONPYCACHEPREFIX"},
    "PYTHONDONTWRITEBYTECODE": "1",
}
TARGETS = {  # name: (what, bound, "<=" or ">=")
    "step": ("project default / bare Lightning, per step", 1.5, "<="),
    "cold": ("train.py / bare Lightning script", 1.3, "<="),
    "data": ("project / plain loop, samples per second", 0.8, ">="),
    "data_memory": ("project's peak RSS above the import floor / data bytes", 2.0, "<="),
    "sweep": ("8-job sweep / 1 run", 2.0, "<="),
    "data_equal": ("project / bare Lightning, samples/s, 5 epochs, glibc defaults", 0.9, ">="),
    "data_equal_tuned": ("project / bare Lightning, samples/s, 5 epochs, tuned malloc", 0.9, ">="),
    "data_equal_memory": ("project's peak RSS above the floor / data bytes, defaults", 2.0, "<="),
    "data_equal_memory_tuned": (
        "project's peak RSS above the floor / data bytes, tuned malloc",
        2.0,
        "<=",
    ),
    "data_realistic": ("project / bare Lightning, shuffled + validated, glibc defaults", 0.8, ">="),
    "data_realistic_tuned": (
        "project / bare Lightning, shuffled + validated, tuned malloc",
        0.8,
        ">=",
    ),
    "long": ("project / bare Lightning logging every step, per step, quadratic", 1.25, "<="),
    "long_sigmoid_net": (
        "project / bare Lightning logging every step, per step, sigmoid_net",
        1.25,
        "<=",
    ),
}
#: The targets each section's table ends with: (target, key of the section's results).
VERDICTS = {
    "step": [("step", "ratio")],
    "cold": [("cold", "ratio")],
    "data": [("data", "ratio"), ("data_memory", "memory_ratio")],
    "data_equal": [
        ("data_equal", "ratio"),
        ("data_equal_tuned", "ratio_tuned"),
        ("data_equal_memory", "memory_ratio"),
        ("data_equal_memory_tuned", "memory_ratio_tuned"),
    ],
    "data_realistic": [("data_realistic", "ratio"), ("data_realistic_tuned", "ratio_tuned")],
    "long": [("long", "ratio"), ("long_sigmoid_net", "ratio_sigmoid_net")],
    "sweep": [("sweep", "ratio")],
}


# --- measuring ------------------------------------------------------------------------------------
def interleaved(variants: dict[str, Callable[[], dict]], repeats: int) -> dict[str, list[dict]]:
    """Run every variant once per repeat, the order rotating each repeat; results by variant."""
    names = list(variants)
    results: dict[str, list[dict]] = {name: [] for name in names}
    for r in range(repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            result = variants[name]()
            results[name].append(result)
            shown = ", ".join(f"{k}={_fmt(v)}" for k, v in result.items())
            print(f"  [{r + 1}/{repeats}] {name}: {shown}", flush=True)
    return results


def median(runs: list[dict], key: str) -> float:
    return statistics.median(run[key] for run in runs)


def paired_ratio(a: list[dict], b: list[dict], key: str) -> float:
    """The median over repeats of a[key] / b[key], each pair measured in the same repeat."""
    return statistics.median(x[key] / y[key] for x, y in zip(a, b, strict=True))


def best_ratio(a: list[dict], b: list[dict], key: str) -> float:
    """a's best (largest) a[key] over b's best: on a machine that other work loads now and then
    (a 2^18-row step with torch's two threads on two shared cores can take 10-50 x as long), the
    fastest repeat of each is the one least hit, as timeit takes its best."""
    return max(x[key] for x in a) / max(y[key] for y in b)


def _fmt(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def subprocess_wall(args: list[str], env: dict[str, str] = CACHED) -> float:
    """Wall time of a command run to completion from the repo root (a failure raises)."""
    started = time.perf_counter()
    done = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - started
    if done.returncode:
        raise RuntimeError(f"{' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return wall


def peak_rss_mb() -> float:
    """This process's peak resident memory so far (VmHWM), in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def quiet_lightning() -> None:
    """Lightning's start-up notes and warnings would drown the table."""
    warnings.filterwarnings("ignore")
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.ERROR)


def compose(*overrides: str):
    """A run's config composed as train.py composes it (as tests/conftest.py does), writing
    under a fresh temporary dir."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    from backprop_lab.config import CONFIG_DIR

    tmp = tempfile.mkdtemp(prefix="bench-")
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = hydra_compose(
            config_name="train",
            overrides=[f"paths.output_dir={tmp}/run", f"paths.log_dir={tmp}/logs", *overrides],
            return_hydra_config=True,
        )
    HydraConfig.instance().set_config(cfg)
    return cfg


def step_timer():
    """A callback noting the first batch's start and the last batch's end, in wall time and in
    this process's CPU time (all its threads; less hit by other processes' load)."""
    import lightning.pytorch as pl

    class StepTimer(pl.Callback):
        def __init__(self) -> None:
            self.first = self.last = (0.0, 0.0)
            self.steps = 0

        def on_train_batch_start(self, *args) -> None:
            if not self.steps:
                self.first = (time.perf_counter(), time.process_time())

        def on_train_batch_end(self, *args) -> None:
            self.last = (time.perf_counter(), time.process_time())
            self.steps += 1

        def result(self) -> dict[str, float]:
            wall, cpu = (b - a for a, b in zip(self.first, self.last, strict=True))
            return {
                "per_step_us": wall / self.steps * 1e6,
                "cpu_per_step_us": cpu / self.steps * 1e6,
            }

    return StepTimer()


def timed_fits() -> list[float]:
    """From now on every Trainer.fit in this process appends its wall time to the list returned."""
    import lightning.pytorch as pl

    fit, times = pl.Trainer.fit, []

    def timed_fit(*args, **kwargs):
        started = time.perf_counter()
        try:
            return fit(*args, **kwargs)
        finally:
            times.append(time.perf_counter() - started)

    pl.Trainer.fit = timed_fit
    return times


# --- 1. per-step cost -----------------------------------------------------------------------------
def bench_step(steps: int, repeats: int) -> dict:
    import lightning.pytorch as pl
    import torch
    import torch.nn.functional as F
    from bare_lightning import Quadratic
    from lightning.pytorch.loggers import TensorBoardLogger

    from backprop_lab.data import SyntheticDataModule, TensorBatches
    from backprop_lab.training.run import train

    quiet_lightning()
    data = ["data=synthetic", f"data.n={steps}", "data.batch_size=1", "data.val_fraction=0"]
    data += ["data.shuffle=false", "trainer.max_epochs=1"]
    x, y = SyntheticDataModule(n=steps).load()  # the rows data=synthetic makes (seed 0)
    fits = timed_fits()

    def plain() -> dict:
        w = torch.tensor([1.0, 1.0, 1.0], requires_grad=True)
        started, cpu = time.perf_counter(), time.process_time()
        for i in range(len(x)):
            xi, yi = x[i : i + 1], y[i : i + 1]
            loss = F.mse_loss(w[0] * xi**2 + w[1] * xi + w[2], yi)
            loss.backward()
            w.data = w.data - 0.01 * w.grad.data  # seed 004's step, as it writes it
            w.grad.data.zero_()
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu
        n = len(x)
        return {"per_step_us": wall / n * 1e6, "cpu_per_step_us": cpu / n * 1e6, "fit_s": wall}

    def bare(logger: bool = False, **module: bool) -> Callable[[], dict]:
        def run() -> dict:
            timer = step_timer()
            trainer = pl.Trainer(
                max_epochs=1,
                logger=TensorBoardLogger(tempfile.mkdtemp(prefix="bench-")) if logger else False,
                log_every_n_steps=1,
                enable_checkpointing=False,
                enable_progress_bar=False,
                enable_model_summary=False,
                callbacks=[timer],
            )
            trainer.fit(Quadratic(**module), TensorBatches(x, y, batch_size=1))
            return {**timer.result(), "fit_s": fits[-1]}

        return run

    def project(*overrides: str) -> Callable[[], dict]:
        def run() -> dict:
            timer = step_timer()
            summary = train(compose(*data, *overrides), extra_callbacks=[timer], quiet=True)
            assert summary["steps"] == steps, summary
            return {**timer.result(), "fit_s": fits[-1]}

        return run

    variants = {
        "plain PyTorch loop": plain,
        "bare Lightning, all off": bare(),
        "bare + self.log every step": bare(logger=True, log_loss=True),
        "bare + histograms every step": bare(logger=True, histograms=True),
        "project, logging+callbacks off": project(
            "logger=none",
            "callbacks=none",
            "+trainer.enable_checkpointing=false",
            "trainer.enable_progress_bar=false",
        ),
        "project default": project(),
        # Lightning calls every per-batch hook of every callback: what four fewer callbacks
        # (the dashboard's, which act only at epoch and fit end) would save a step.
        "project default less 4 end-of-fit callbacks": project(
            *(f"~callbacks.{name}" for name in ("graph", "plots", "run_card", "loss_curve_png"))
        ),
        "project default, log every step": project("trainer.log_every_n_steps=1"),
    }
    print(f"1. per-step cost, {steps} steps a run, {repeats} repeat(s)", flush=True)
    runs = interleaved(variants, repeats)
    bare_runs, plain_runs = runs["bare Lightning, all off"], runs["plain PyTorch loop"]
    rows = {
        name: {
            "per_step_us": median(r, "per_step_us"),
            "x_bare": paired_ratio(r, bare_runs, "per_step_us"),
            "x_plain": paired_ratio(r, plain_runs, "per_step_us"),
            "cpu_per_step_us": median(r, "cpu_per_step_us"),
            "cpu_x_bare": paired_ratio(r, bare_runs, "cpu_per_step_us"),
            "fit_s": median(r, "fit_s"),
        }
        for name, r in runs.items()
    }
    ratio = rows["project default"]["x_bare"]
    return {"steps": steps, "repeats": repeats, "variants": rows, "runs": runs, "ratio": ratio}


# --- 2. cold start --------------------------------------------------------------------------------
def bench_cold(repeats: int) -> dict:
    python, log_dir = sys.executable, tempfile.mkdtemp(prefix="bench-")
    train_py = [python, "train.py", "model=quadratic", f"paths.log_dir={log_dir}"]
    train_py += ["trainer.enable_progress_bar=false"]
    bare = [python, str(HERE / "bare_lightning.py"), log_dir]
    imports = [python, "-c", "import lightning.pytorch"]

    def wall(args: list[str], env: dict[str, str] = CACHED) -> Callable[[], dict]:
        return lambda: {"wall_s": subprocess_wall(args, env)}

    variants = {
        "import lightning.pytorch": wall(imports),
        "bare Lightning script": wall(bare),
        "train.py model=quadratic": wall(train_py),
        "bare Lightning script, no bytecode cache": wall(bare, UNCACHED),
        "train.py model=quadratic, no bytecode cache": wall(train_py, UNCACHED),
    }
    print(f"2. cold start, {repeats} repeat(s)", flush=True)
    subprocess_wall(train_py), subprocess_wall(bare)  # fill the bytecode cache
    runs = interleaved(variants, repeats)
    rows = {}
    for name, r in runs.items():
        bare_runs = runs[
            "bare Lightning script" + (", no bytecode cache" if "no byte" in name else "")
        ]
        rows[name] = {"wall_s": median(r, "wall_s"), "x_bare": paired_ratio(r, bare_runs, "wall_s")}
    ratio = rows["train.py model=quadratic"]["x_bare"]
    return {"repeats": repeats, "variants": rows, "runs": runs, "ratio": ratio}


# --- 3. large data --------------------------------------------------------------------------------
#: Section data_equal's allocator setting, in each variant's environment (glibc >= 2.26 reads it at
#: start-up). A 2^18-row float32 column is 1 MiB: above glibc's initial mmap threshold (128 KiB),
#: so a step's batch-sized temporaries are mapped afresh, or, once the adaptive threshold has risen
#: past them, freed to the top of the heap and trimmed back to the OS past a trim threshold of
#: twice that; either way each step faults in and zeroes fresh pages. 32 MiB (glibc's largest
#: mmap threshold on 64-bit; batches up to 2^23 rows) serves them from the heap, and 256 MiB of
#: trim threshold keeps what a step frees for the next one: the values the project set with
#: mallopt before the redesign (keep_freed_memory_mb=256). Setting either one also turns the
#: adaptive threshold off.
TUNABLES = "glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=268435456"
MALLOC = {"glibc defaults": None, "tuned malloc": TUNABLES}


def minor_faults() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def metered_fits() -> list[dict]:
    """Like :func:`timed_fits`, also counting the minor page faults of each fit."""
    import lightning.pytorch as pl

    fit, meters = pl.Trainer.fit, []

    def metered_fit(*args, **kwargs):
        started, faults = time.perf_counter(), minor_faults()
        try:
            return fit(*args, **kwargs)
        finally:
            wall, faults = time.perf_counter() - started, minor_faults() - faults
            meters.append({"fit_s": wall, "faults": faults})

    pl.Trainer.fit = metered_fit
    return meters


def plain_large(
    x, y, batch_size: int, epochs: int, val=None, shuffle: bool = False
) -> tuple[dict, float]:
    """The plain loop over in-memory tensors: slices in order, or (shuffle) index_select batches of
    a torch.randperm drawn each epoch from a seeded generator, and (val) a no_grad MSE pass over
    the validation rows after each epoch. Its figures, and the last training loss."""
    import torch

    from backprop_lab.data import take_rows

    w, n, steps = torch.tensor([3.0], requires_grad=True), len(x), 0
    started, faults = time.perf_counter(), minor_faults()
    first = last = started
    for epoch in range(epochs):
        if shuffle:
            order = torch.randperm(n, generator=torch.Generator().manual_seed(epoch))
        for i in range(0, n, batch_size):
            if steps == 0:
                first = time.perf_counter()
            if shuffle:
                index = order[i : i + batch_size]
                xb, yb = take_rows(x, index), take_rows(y, index)
            else:
                xb, yb = x[i : i + batch_size], y[i : i + batch_size]
            loss = ((xb * w - yb) ** 2).mean()
            loss.backward()
            w.data = w.data - 0.01 * w.grad.data
            w.grad.data.zero_()
            steps += 1
            last = time.perf_counter()
        if val is not None:
            vx, vy, total = *val, 0.0
            with torch.no_grad():
                for i in range(0, len(vx), batch_size):
                    total += float(
                        ((vx[i : i + batch_size] * w - vy[i : i + batch_size]) ** 2).sum()
                    )
            val_loss = total / len(vx)  # noqa: F841  (what a loop would print)
    fit_s = time.perf_counter() - started
    meter = {"fit_s": fit_s, "faults": minor_faults() - faults, "steps": steps}
    return {**meter, "per_step_us": (last - first) / steps * 1e6}, loss.item()


def large_data_worker(variant: str, n: int, batch_size: int, epochs: int) -> dict:
    """One variant in this fresh process: its figures, printed as JSON.

    plain, bare, project, project_no_dashboard: every row trains, in order, no validation.
    plain_realistic, bare_realistic, project_defaults: data=synthetic's defaults, a 20% validation
    split (the project's: one seeded permutation) and the training rows shuffled each epoch.
    """
    import torch

    realistic = variant in ("plain_realistic", "bare_realistic", "project_defaults")
    timer, steps = None, None
    if variant in ("plain", "plain_realistic"):
        from backprop_lab.data import SyntheticDataModule

        floor = peak_rss_mb()
        if realistic:  # the project's split, outside the timed loop as the project's is
            data = SyntheticDataModule(n=n, seed=0, val_fraction=0.2, batch_size=batch_size)
            data.setup("fit")
            (x, y), val = data.train_xy, data.val_xy
            del data
        else:
            generator = torch.Generator().manual_seed(0)
            x = torch.empty(n, 1).uniform_(-1.0, 1.0, generator=generator)
            y = torch.randn(n, 1, generator=generator).mul_(0.1).add_(x, alpha=2.0)  # 2x + noise
            val = None
        meter, final_loss = plain_large(x, y, batch_size, epochs, val=val, shuffle=realistic)
        steps, n = meter.pop("steps"), len(x)
    elif variant in ("bare", "bare_realistic", "bare_profile"):
        import lightning.pytorch as pl
        from bare_lightning import Linear, ValidatedLinear
        from lightning.pytorch.profilers import SimpleProfiler

        from backprop_lab.data import SyntheticDataModule, TensorBatches

        quiet_lightning()
        floor = peak_rss_mb()
        timer = step_timer()
        trainer = pl.Trainer(
            max_epochs=epochs,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            callbacks=[timer],
            profiler=SimpleProfiler() if variant == "bare_profile" else None,
        )
        meters = metered_fits()
        if realistic:  # the project's split; its shuffled train batches, in-order val batches
            data = SyntheticDataModule(n=n, seed=0, val_fraction=0.2, batch_size=batch_size)
            data.setup("fit")
            (x, y), (vx, vy) = data.train_xy, data.val_xy
            del data
            train = TensorBatches(x, y, batch_size, shuffle=True, seed=0)
            trainer.fit(ValidatedLinear(), train, TensorBatches(vx, vy, batch_size))
        else:
            x, y = SyntheticDataModule(n=n, seed=0).load()
            trainer.fit(Linear(), TensorBatches(x, y, batch_size))
            if variant == "bare_profile":  # not a timed variant: bare Lightning's hooks
                return {
                    "model": "linear, bare Lightning",
                    **profile_summary(trainer.profiler, timer),
                }
        meter, final_loss, n = meters[0], None, len(x)
    else:
        from backprop_lab.training.run import train

        quiet_lightning()
        overrides = ["model=linear", "data=synthetic", f"data.n={n}"]
        overrides += [f"data.batch_size={batch_size}", f"trainer.max_epochs={epochs}"]
        overrides += ["trainer.enable_progress_bar=false"]
        if variant != "project_defaults":  # the plain loop's data: every row trains, in order
            overrides += ["data.val_fraction=0", "data.shuffle=false"]
        if variant == "project_no_dashboard":
            overrides += [f"~callbacks.{name}" for name in ("graph", "plots", "run_card")]
            overrides += ["~callbacks.loss_curve_png"]
        if variant == "project_profile":  # not a timed variant: where the project's time goes
            return profiled_project(*overrides)
        cfg = compose(*overrides)
        floor = peak_rss_mb()
        meters, timer = metered_fits(), step_timer()
        summary = train(cfg, extra_callbacks=[timer], quiet=True)
        meter, final_loss = meters[0], summary["final_loss"]
        n = round(n * (1 - cfg.data.val_fraction))  # the rows it trains on
    if timer is not None:
        steps = timer.steps
        meter["per_step_us"] = timer.result()["per_step_us"]
    return {
        "fit_s": meter["fit_s"],
        "samples_per_s": n * epochs / meter["fit_s"],
        "per_step_us": meter["per_step_us"],
        "steps": steps,
        "faults_per_step": meter["faults"] / steps,
        "peak_above_floor_mb": peak_rss_mb() - floor,
        "floor_mb": floor,
        "final_loss": final_loss,
        "glibc_tunables": os.environ.get("GLIBC_TUNABLES"),
    }


def worker_env(tunables: str | None) -> dict[str, str]:
    """CACHED with GLIBC_TUNABLES set to ``tunables``, or without it (glibc's defaults)."""
    env = {k: v for k, v in CACHED.items() if k != "GLIBC_TUNABLES"}
    return {**env, "GLIBC_TUNABLES": tunables} if tunables else env


def data_variant(
    name: str, n: int, batch_size: int, epochs: int, tunables: str | None = None
) -> Callable[[], dict]:
    """A large-data variant, run in a fresh subprocess (the worker) each time it is called."""

    def run() -> dict:
        args = [sys.executable, __file__, "--worker", name, str(n), str(batch_size), str(epochs)]
        env = worker_env(tunables)
        done = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, env=env)
        if done.returncode:
            raise RuntimeError(f"large-data worker {name} failed:\n{done.stderr[-3000:]}")
        return json.loads(done.stdout.splitlines()[-1])

    return run


def bench_data(n: int, batch_size: int, epochs: int, repeats: int) -> dict:
    def variant(name: str) -> Callable[[], dict]:
        return data_variant(name, n, batch_size, epochs)

    variants = {
        "plain PyTorch loop": variant("plain"),
        "bare Lightning, all off": variant("bare"),
        "project (no val split, in order)": variant("project"),
        "project, no end-of-training dashboard": variant("project_no_dashboard"),
        "project, data=synthetic defaults": variant("project_defaults"),
    }
    data_mb = n * 2 * 4 / 2**20  # x and y, float32
    print(f"3. large data, {n} rows, batch {batch_size}, {epochs} epochs", flush=True)
    runs = interleaved(variants, repeats)
    plain = runs["plain PyTorch loop"]
    rows = {
        name: {
            "samples_per_s": median(r, "samples_per_s"),
            "x_plain": paired_ratio(r, plain, "samples_per_s"),
            "fit_s": median(r, "fit_s"),
            "peak_above_floor_mb": median(r, "peak_above_floor_mb"),
            "x_data_bytes": median(r, "peak_above_floor_mb") / data_mb,
        }
        for name, r in runs.items()
    }
    project = rows["project (no val split, in order)"]
    return {
        "rows": n,
        "batch_size": batch_size,
        "epochs": epochs,
        "data_mb": data_mb,
        "repeats": repeats,
        "variants": rows,
        "runs": runs,
        "ratio": project["x_plain"],
        "memory_ratio": project["x_data_bytes"],
    }


# --- 3b. large data on equal footing --------------------------------------------------------------
IMPLS = {"plain": "plain PyTorch loop", "bare": "bare Lightning, all off", "project": "project"}


def bench_data_equal(
    n: int, batch_size: int, epochs: tuple[int, ...], repeats: int, profile: bool = True
) -> dict:
    """data's plain loop, bare Lightning and project (no val split, in order), each under glibc's
    default malloc settings and under TUNABLES, at each number of epochs: 2 x 3 x len(epochs)
    subprocesses a repeat, interleaved. The difference between two epoch counts tells the
    per-step cost (fit time over the extra steps) from the fixed cost of a fit."""
    variants = {
        f"{label}, {e} epochs, {malloc}": data_variant(impl, n, batch_size, e, tunables)
        for e in epochs
        for malloc, tunables in MALLOC.items()
        for impl, label in IMPLS.items()
    }
    data_mb = n * 2 * 4 / 2**20  # x and y, float32
    print(
        f"3b. large data on equal footing, {n} rows, batch {batch_size}, {epochs} epochs, "
        f"{repeats} repeat(s)",
        flush=True,
    )
    runs = interleaved(variants, repeats)
    rows = {}
    for e in epochs:
        for malloc in MALLOC:
            bare = runs[f"{IMPLS['bare']}, {e} epochs, {malloc}"]
            plain = runs[f"{IMPLS['plain']}, {e} epochs, {malloc}"]
            for label in IMPLS.values():
                r = runs[f"{label}, {e} epochs, {malloc}"]
                rows[f"{label}, {e} epochs, {malloc}"] = {
                    "samples_per_s": median(r, "samples_per_s"),
                    "x_bare": paired_ratio(r, bare, "samples_per_s"),
                    "best_x_bare": best_ratio(r, bare, "samples_per_s"),
                    "x_plain": paired_ratio(r, plain, "samples_per_s"),
                    "fit_s": median(r, "fit_s"),
                    "per_step_us": median(r, "per_step_us"),
                    "faults_per_step": median(r, "faults_per_step"),
                    "peak_above_floor_mb": median(r, "peak_above_floor_mb"),
                    "x_data_bytes": median(r, "peak_above_floor_mb") / data_mb,
                }
    # Fixed and per-step cost of a fit from the fewest and the most epochs, paired by repeat.
    split = {}
    lo, hi = min(epochs), max(epochs)
    for malloc in MALLOC:
        for label in IMPLS.values():
            short, long_ = (runs[f"{label}, {e} epochs, {malloc}"] for e in (lo, hi))
            per_step = [
                (b["fit_s"] - a["fit_s"]) / (b["steps"] - a["steps"])
                for a, b in zip(short, long_, strict=True)
            ]
            fixed = [a["fit_s"] - p * a["steps"] for a, p in zip(short, per_step, strict=True)]
            split[f"{label}, {malloc}"] = {
                "per_step_us": statistics.median(per_step) * 1e6,
                "fixed_s": statistics.median(fixed),
            }
    for malloc in MALLOC:
        bare = split[f"{IMPLS['bare']}, {malloc}"]
        for label in IMPLS.values():
            row = split[f"{label}, {malloc}"]
            row["per_step_x_bare"] = row["per_step_us"] / bare["per_step_us"]
    project = {m: rows[f"project, {lo} epochs, {m}"] for m in MALLOC}
    print(f"3b. SimpleProfiler over the project's run, {lo} epochs, tuned malloc", flush=True)
    profiles = {}
    if profile:
        profiles = {
            "profile": data_variant("project_profile", n, batch_size, lo, TUNABLES)(),
            "profile_bare": data_variant("bare_profile", n, batch_size, lo, TUNABLES)(),
        }
    return {
        **profiles,
        "rows": n,
        "batch_size": batch_size,
        "epochs": list(epochs),
        "data_mb": data_mb,
        "glibc_tunables": TUNABLES,
        "repeats": repeats,
        "variants": rows,
        "fixed_and_per_step": split,
        "runs": runs,
        "ratio": project["glibc defaults"]["x_bare"],
        "ratio_tuned": project["tuned malloc"]["x_bare"],
        "memory_ratio": project["glibc defaults"]["x_data_bytes"],
        "memory_ratio_tuned": project["tuned malloc"]["x_data_bytes"],
    }


# --- 3c. large data as data=synthetic has it: shuffled, validated -------------------------------
def bench_data_realistic(n: int, batch_size: int, epochs: int, repeats: int) -> dict:
    """data=synthetic's defaults (shuffle, 20% validation) for the project, and the same shuffle
    and validation in bare Lightning and a plain loop; under glibc's defaults and TUNABLES."""
    impls = {
        "plain": "plain loop, shuffled + validated",
        "bare": "bare Lightning, shuffled + validated",
        "project": "project, data=synthetic defaults",
    }
    workers = {"plain": "plain_realistic", "bare": "bare_realistic", "project": "project_defaults"}
    variants = {
        f"{label}, {malloc}": data_variant(workers[impl], n, batch_size, epochs, tunables)
        for malloc, tunables in MALLOC.items()
        for impl, label in impls.items()
    }
    data_mb = n * 2 * 4 / 2**20
    print(
        f"3c. large data, shuffled + 20% validation, {n} rows, batch {batch_size}, {epochs} "
        f"epochs, {repeats} repeat(s)",
        flush=True,
    )
    runs = interleaved(variants, repeats)
    rows = {}
    for malloc in MALLOC:
        bare, plain = runs[f"{impls['bare']}, {malloc}"], runs[f"{impls['plain']}, {malloc}"]
        for label in impls.values():
            r = runs[f"{label}, {malloc}"]
            rows[f"{label}, {malloc}"] = {
                "samples_per_s": median(r, "samples_per_s"),
                "x_bare": paired_ratio(r, bare, "samples_per_s"),
                "best_x_bare": best_ratio(r, bare, "samples_per_s"),
                "x_plain": paired_ratio(r, plain, "samples_per_s"),
                "fit_s": median(r, "fit_s"),
                "per_step_us": median(r, "per_step_us"),
                "faults_per_step": median(r, "faults_per_step"),
                "peak_above_floor_mb": median(r, "peak_above_floor_mb"),
                "x_data_bytes": median(r, "peak_above_floor_mb") / data_mb,
            }
    return {
        "rows": n,
        "batch_size": batch_size,
        "epochs": epochs,
        "val_fraction": 0.2,
        "data_mb": data_mb,
        "glibc_tunables": TUNABLES,
        "repeats": repeats,
        "variants": rows,
        "runs": runs,
        "ratio": rows[f"{impls['project']}, glibc defaults"]["x_bare"],
        "ratio_tuned": rows[f"{impls['project']}, tuned malloc"]["x_bare"],
    }


# --- 5. long learner runs -------------------------------------------------------------------------
#: The callbacks of a default project run with the progress bar off: parameters, histograms,
#: gradient_check, graph, graph_figure, plots, run_card, loss_curve_png, the two checkpoints,
#: and HParamsSummary and StopOnSignal, which train() adds.
PROJECT_CALLBACKS = 12


def bench_long(quadratic_epochs: int, sigmoid_epochs: int, repeats: int, profile: bool) -> dict:
    """Seed models for thousands of rounds with the seed experiments' every-step logging and the
    default callbacks (model=quadratic: 3 rows a epoch; model=sigmoid_net: 1), against bare
    Lightning logging its loss to TensorBoard every step (self.log in training_step,
    log_every_n_steps=1, a TensorBoardLogger into a temp dir), with and without Lightning's
    default checkpoint at every epoch end, bare Lightning with everything off, and plain loops
    (with and without SummaryWriter.add_scalar every step). In this process, as section step.
    Then, once, the project's quadratic run under Lightning's SimpleProfiler (debug=profiler):
    each action's total time per step."""
    import lightning.pytorch as pl
    import torch
    import torch.nn.functional as F
    from bare_lightning import Quadratic, SigmoidNet
    from lightning.pytorch.loggers import TensorBoardLogger
    from torch.utils.tensorboard import SummaryWriter

    from backprop_lab.data import TensorBatches
    from backprop_lab.training.run import train

    quiet_lightning()
    fits = timed_fits()
    seeds = {
        "quadratic": (
            quadratic_epochs,
            torch.tensor([[1.0], [2.0], [3.0]]),
            torch.tensor([[2.0], [4.0], [6.0]]),
            lambda **kw: Quadratic(lr=0.01, **kw),
        ),
        "sigmoid_net": (
            sigmoid_epochs,
            torch.tensor([[0.5, 0.3]]),
            torch.tensor([[0.23, -0.07]]),
            lambda **kw: SigmoidNet(lr=1.0, **kw),
        ),
    }

    def plain(model: str, log: bool = False) -> Callable[[], dict]:
        epochs, x, y, make = seeds[model]

        def run() -> dict:
            module = make()
            params, lr = list(module.parameters()), module.lr
            writer = SummaryWriter(tempfile.mkdtemp(prefix="bench-")) if log else None
            steps, started = 0, time.perf_counter()
            for _ in range(epochs):
                for i in range(len(x)):
                    loss = F.mse_loss(module(x[i : i + 1]), y[i : i + 1])
                    loss.backward()
                    with torch.no_grad():
                        for p in params:
                            p -= lr * p.grad
                            p.grad = None
                    if writer is not None:
                        writer.add_scalar("loss", loss.item(), steps)
                    steps += 1
            if writer is not None:
                writer.close()
            wall = time.perf_counter() - started
            return {"per_step_us": wall / steps * 1e6, "fit_s": wall, "steps": steps}

        return run

    def bare(
        model: str,
        logger: bool,
        checkpoints: bool = False,
        epochs: int | None = None,
        no_ops: int = 0,
    ) -> Callable[[], dict]:
        _, x, y, make = seeds[model]
        epochs = epochs or seeds[model][0]

        def run() -> dict:
            timer, root = step_timer(), tempfile.mkdtemp(prefix="bench-")
            # callbacks that do nothing: what Lightning's calling of every callback's hooks costs
            nothing = [pl.Callback() for _ in range(no_ops)]
            trainer = pl.Trainer(
                max_epochs=epochs,
                default_root_dir=root,
                logger=TensorBoardLogger(root) if logger else False,
                log_every_n_steps=1,
                enable_checkpointing=checkpoints,
                enable_progress_bar=False,
                enable_model_summary=False,
                callbacks=[timer, *nothing],
            )
            trainer.fit(make(log_loss=logger), TensorBatches(x, y, batch_size=1))
            return {**timer.result(), "fit_s": fits[-1], "steps": timer.steps}

        return run

    def project(model: str, *overrides: str, epochs: int | None = None) -> Callable[[], dict]:
        epochs = epochs or seeds[model][0]

        def run() -> dict:
            timer = step_timer()
            cfg = compose(f"model={model}", f"trainer.max_epochs={epochs}", *overrides)
            assert cfg.trainer.log_every_n_steps == 1, cfg.trainer.log_every_n_steps
            train(cfg, extra_callbacks=[timer], quiet=True)
            return {**timer.result(), "fit_s": fits[-1], "steps": timer.steps}

        return run

    off = "trainer.enable_progress_bar=false"
    results: dict = {"repeats": repeats, "epochs": {m: seeds[m][0] for m in seeds}, "models": {}}
    for model in seeds:
        variants = {
            "plain PyTorch loop": plain(model),
            "plain loop + SummaryWriter.add_scalar every step": plain(model, log=True),
            "bare Lightning, all off": bare(model, logger=False),
            "bare + TensorBoard self.log every step": bare(model, logger=True),
            "bare + TensorBoard every step + default checkpoint": bare(
                model, logger=True, checkpoints=True
            ),
            # As many callbacks as the project's default run has (progress bar off), doing nothing.
            f"bare + TensorBoard every step + {PROJECT_CALLBACKS} no-op callbacks": bare(
                model, logger=True, no_ops=PROJECT_CALLBACKS
            ),
            f"project model={model}, default callbacks": project(model, off),
            # What the two epoch-end checkpoints (last.ckpt, best.ckpt) cost a step of these
            # 1- and 3-step epochs; without them Lightning would add its own.
            "project less its 2 checkpoint callbacks": project(
                model,
                off,
                "~callbacks.model_checkpoint",
                "~callbacks.best_checkpoint",
                "+trainer.enable_checkpointing=false",
            ),
        }
        print(
            f"5. long run, model={model}, {seeds[model][0]} epochs, {repeats} repeat(s)", flush=True
        )
        runs = interleaved(variants, repeats)
        base = runs["bare + TensorBoard self.log every step"]
        plain_runs, off_runs = runs["plain PyTorch loop"], runs["bare Lightning, all off"]
        rows = {
            name: {
                "per_step_us": median(r, "per_step_us"),
                "x_bare_logging": paired_ratio(r, base, "per_step_us"),
                # the fastest repeat of each (least hit by other load; see best_ratio)
                "best_x_bare_logging": min(x["per_step_us"] for x in r)
                / min(x["per_step_us"] for x in base),
                "x_bare_off": paired_ratio(r, off_runs, "per_step_us"),
                "x_plain": paired_ratio(r, plain_runs, "per_step_us"),
                "fit_s": median(r, "fit_s"),
                "fit_x_bare_logging": paired_ratio(r, base, "fit_s"),
                "steps": r[0]["steps"],
            }
            for name, r in runs.items()
        }
        ratio = rows[f"project model={model}, default callbacks"]["x_bare_logging"]
        results["models"][model] = {"variants": rows, "runs": runs, "ratio": ratio}
    if profile:
        results["profile"] = profile_long("quadratic", quadratic_epochs, off)
        # The same profiler over the baseline: bare Lightning logging every step.
        epochs, x, y, make = seeds["quadratic"]
        timer, root = step_timer(), tempfile.mkdtemp(prefix="bench-")
        trainer = pl.Trainer(
            max_epochs=epochs,
            default_root_dir=root,
            logger=TensorBoardLogger(root),
            log_every_n_steps=1,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            callbacks=[timer],
            profiler="simple",
        )
        trainer.fit(make(log_loss=True), TensorBatches(x, y, batch_size=1))
        results["profile_bare"] = {
            "model": "quadratic, bare + TensorBoard self.log every step",
            **profile_summary(trainer.profiler, timer),
        }
    models = results["models"]
    # One table for the report: both models' rows, prefixed.
    results["variants"] = {
        f"{m}: {name}": row for m, res in models.items() for name, row in res["variants"].items()
    }
    results["ratio"] = models["quadratic"]["ratio"]
    results["ratio_sigmoid_net"] = models["sigmoid_net"]["ratio"]
    return results


def profile_long(model: str, epochs: int, *overrides: str) -> dict:
    """The project's run under debug=profiler (Lightning's SimpleProfiler) for ``epochs``: each
    action's calls and total seconds, and per step in microseconds, largest first."""
    print(f"5. SimpleProfiler over model={model}, {epochs} epochs", flush=True)
    return {
        "model": model,
        **profiled_project(f"model={model}", f"trainer.max_epochs={epochs}", *overrides),
    }


def profiled_project(*overrides: str) -> dict:
    """train() of the composed run under debug=profiler (SimpleProfiler; the overrides' max_epochs
    win over its one epoch): each action's calls and seconds, per step, largest first."""
    import lightning.pytorch as pl

    from backprop_lab.training.run import train

    class Grab(pl.Callback):
        def on_fit_start(self, trainer, pl_module) -> None:
            self.trainer = trainer

    grab, timer = Grab(), step_timer()
    cfg = compose("debug=profiler", *overrides)
    train(cfg, extra_callbacks=[grab, timer], quiet=True)
    return {"epochs": cfg.trainer.max_epochs, **profile_summary(grab.trainer.profiler, timer)}


def profile_summary(profiler, timer) -> dict:
    """A SimpleProfiler's actions after a fit: calls, seconds and microseconds per step (of the
    step_timer ``timer``), largest first; and each callback's hooks summed."""
    steps = timer.steps
    durations = profiler.recorded_durations
    actions = sorted(((name, len(d), sum(d)) for name, d in durations.items()), key=lambda a: -a[2])
    owners: dict[str, float] = {}  # each callback's hooks together ([Callback]Name{...}.hook)
    for name, _, total in actions:
        if name.startswith("[Callback]"):
            owner = name.rsplit(".", 1)[0]
            owners[owner] = owners.get(owner, 0.0) + total
    return {
        "by_callback": {
            k: v / steps * 1e6 for k, v in sorted(owners.items(), key=lambda kv: -kv[1])
        },
        "steps": steps,
        "per_step_us_profiled": timer.result()["per_step_us"],
        "actions": [
            {"action": a, "calls": c, "total_s": t, "per_step_us": t / steps * 1e6}
            for a, c, t in actions
        ],
    }


# --- 4. sweeps ------------------------------------------------------------------------------------
def bench_sweep(jobs: int, repeats: int) -> dict:
    log_dir = tempfile.mkdtemp(prefix="bench-")
    common = [f"paths.log_dir={log_dir}", "trainer.enable_progress_bar=false"]
    seeds = ",".join(str(s) for s in range(jobs))
    single = [sys.executable, "train.py", "model=quadratic", *common]
    sweep = [sys.executable, "train.py", "-m", "model=quadratic", f"seed={seeds}", *common]
    # The per-job images cost ~0.5 s of matplotlib: drawn by render.py's worker process beside
    # the next job's training, they should cost the sweep little; this variant shows how little.
    no_images = ["~callbacks.plots", "~callbacks.graph", "~callbacks.graph_figure"]
    no_images += ["~callbacks.loss_curve_png"]
    variants = {
        "train.py model=quadratic": lambda: {"wall_s": subprocess_wall(single)},
        f"train.py -m model=quadratic seed=0..{jobs - 1}": lambda: {
            "wall_s": subprocess_wall(sweep)
        },
        "the same sweep without the end-of-training images": lambda: {
            "wall_s": subprocess_wall([*sweep, *no_images])
        },
    }
    print(f"4. sweep of {jobs} jobs, {repeats} repeat(s)", flush=True)
    subprocess_wall(single)  # fill the bytecode cache
    runs = interleaved(variants, repeats)
    single_runs = runs["train.py model=quadratic"]
    rows = {
        name: {"wall_s": median(r, "wall_s"), "x_single": paired_ratio(r, single_runs, "wall_s")}
        for name, r in runs.items()
    }
    ratio = rows[f"train.py -m model=quadratic seed=0..{jobs - 1}"]["x_single"]
    return {"jobs": jobs, "repeats": repeats, "variants": rows, "runs": runs, "ratio": ratio}


# --- the report -----------------------------------------------------------------------------------
COLUMNS = {
    "step": ("per_step_us", "x_bare", "x_plain", "cpu_per_step_us", "cpu_x_bare", "fit_s"),
    "cold": ("wall_s", "x_bare"),
    "data": ("samples_per_s", "x_plain", "fit_s", "peak_above_floor_mb", "x_data_bytes"),
    "data_equal": (
        "samples_per_s",
        "x_bare",
        "best_x_bare",
        "x_plain",
        "fit_s",
        "per_step_us",
        "faults_per_step",
        "x_data_bytes",
    ),
    "data_realistic": (
        "samples_per_s",
        "x_bare",
        "best_x_bare",
        "x_plain",
        "fit_s",
        "per_step_us",
        "faults_per_step",
        "x_data_bytes",
    ),
    "long": (
        "per_step_us",
        "x_bare_logging",
        "best_x_bare_logging",
        "x_bare_off",
        "x_plain",
        "fit_s",
        "steps",
    ),
    "sweep": ("wall_s", "x_single"),
}


def verdict(name: str, value: float) -> str:
    what, bound, op = TARGETS[name]
    met = value <= bound if op == "<=" else value >= bound
    return f"{what} = {value:.2f} (target {op} {bound}: {'met' if met else 'NOT met'})"


def table(results: dict) -> str:
    lines = []
    for name, keys in COLUMNS.items():
        if name not in results:
            continue
        rows = results[name]["variants"]
        width = max(len(v) for v in rows) + 2
        cols = [max(16, len(k) + 2) for k in keys]
        head = "".join(f"{k:>{c}}" for k, c in zip(keys, cols, strict=True))
        lines += ["", f"{'[' + name + ']':<{width}}" + head]
        for variant, row in rows.items():
            cells = "".join(
                f"{_fmt(row.get(k, '-')):>{c}}" for k, c in zip(keys, cols, strict=True)
            )  # a section an earlier version of this file wrote may lack a column
            lines.append(f"{variant:<{width}}" + cells)
        if name == "data_equal":
            lines.append("  fixed cost of a fit and per step, from the fewest and most epochs:")
            for variant, row in results[name]["fixed_and_per_step"].items():
                shown = ", ".join(f"{k}={_fmt(v)}" for k, v in row.items())
                lines.append(f"    {variant}: {shown}")
        for key in ("profile", "profile_bare"):
            if name not in ("long", "data_equal") or not results[name].get(key):
                continue
            profile = results[name][key]
            lines.append(
                f"  SimpleProfiler, {profile.get('model', 'linear')}, {profile['steps']} steps "
                f"({_fmt(profile['per_step_us_profiled'])} us a step profiled), top actions:"
            )
            for action in profile["actions"][:20]:
                lines.append(
                    f"    {action['per_step_us']:9.1f} us/step {action['calls']:8d} calls  "
                    f"{action['action']}"
                )
            lines.append("  each callback's hooks together, us a step:")
            for owner, us in profile["by_callback"].items():
                lines.append(f"    {us:9.1f} us/step  {owner}")
        for target, key in VERDICTS[name]:
            lines.append("  " + verdict(target, results[name][key]))
    return "\n".join(lines)


def machine() -> dict:
    import torch

    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    cpu = next((ln.split(":", 1)[1].strip() for ln in cpuinfo if ln.startswith("model name")), "")
    return {
        "date": date.today().isoformat(),
        "cpu": cpu or platform.processor(),
        "cpus": os.cpu_count(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "load_average_at_start": os.getloadavg(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument("--repeats", type=int, help="repeats per variant (default 5, quick 1)")
    parser.add_argument("--only", default=",".join(COLUMNS), help="comma-separated subset")
    parser.add_argument(
        "--long-scale",
        type=float,
        default=1.0,
        help="section long's epochs times this (1: the issue's 3334 and 5000; quick 0.1)",
    )
    parser.add_argument(
        "--no-profile",
        action="store_true",
        help="sections data_equal and long without their SimpleProfiler runs",
    )
    parser.add_argument("--out", default=str(HERE / "results.json"), help="results JSON")
    parser.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    sys.path.insert(0, str(HERE))
    if args.worker:
        variant, n, batch_size, epochs = args.worker
        print(json.dumps(large_data_worker(variant, int(n), int(batch_size), int(epochs))))
        return
    repeats = args.repeats or (1 if args.quick else 5)
    only = args.only.split(",")
    unknown = set(only) - set(COLUMNS)
    if unknown:
        sections = ", ".join(COLUMNS)
        parser.error(f"--only: no section {', '.join(sorted(unknown))} (sections: {sections})")
    results: dict = {"machine": machine(), "quick": args.quick}
    if set(only) < set(COLUMNS) and Path(args.out).is_file():
        # A partial run replaces its own sections of an earlier results file, keeping the rest.
        earlier = json.loads(Path(args.out).read_text())
        results.update({k: earlier[k] for k in COLUMNS if k in earlier and k not in only})
        results["earlier_machine"] = earlier.get("machine")
    started = time.perf_counter()
    if "step" in only:
        results["step"] = bench_step(1_000 if args.quick else 10_000, repeats)
    if "cold" in only:
        results["cold"] = bench_cold(repeats)
    if "data" in only:
        results["data"] = bench_data(10**6 if args.quick else 10**7, 2**18, 5, repeats)
    large = 10**6 if args.quick else 10**7
    if "data_equal" in only:
        results["data_equal"] = bench_data_equal(
            large, 2**18, (5, 20), repeats, profile=not args.no_profile
        )
    if "data_realistic" in only:
        results["data_realistic"] = bench_data_realistic(large, 2**18, 5, repeats)
    if "long" in only:
        scale = args.long_scale * (0.1 if args.quick else 1.0)
        epochs = max(1, round(3334 * scale)), max(1, round(5000 * scale))
        results["long"] = bench_long(*epochs, repeats, profile=not args.no_profile)
    if "sweep" in only:
        results["sweep"] = bench_sweep(8, max(1, repeats - 2))
    results["wall_s"] = time.perf_counter() - started
    Path(args.out).write_text(json.dumps(results, indent=1) + "\n")  # before the table
    print(table(results))
    print(f"\nresults: {args.out} ({results['wall_s']:.0f} s)")


if __name__ == "__main__":
    main()
