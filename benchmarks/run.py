"""Benchmarks: backprop-lab against plain PyTorch and bare Lightning, each pair in one run.

    uv run benchmarks/run.py              # all four, ~15 minutes on 2 CPU cores
    uv run benchmarks/run.py --quick      # a smoke run: fewer steps and rows, one repeat
    uv run benchmarks/run.py --only step,cold --repeats 7

1. step   Per-step cost of the default configuration (its logging and callbacks all on) on the
          quadratic model, data=synthetic with 10,000 rows at batch size 1 (10,000 steps, one
          epoch, no validation split, in order), against a plain PyTorch loop doing seed 004's
          SGD steps and against bare Lightning with everything off. Also: bare Lightning with
          self.log on every step, with histograms on every step, the project with its logging
          and callbacks off, and the default with the seeds' log_every_n_steps=1. Per step =
          first batch to last batch (the steady state), in wall and in CPU time; the fixed cost
          of fit (set-up, end of training) shows in fit_s.
2. cold   Wall time of `train.py model=quadratic` (seed 004: 300 steps, 100 epochs) against
          benchmarks/bare_lightning.py (imports Lightning, fits the same model with a
          TensorBoardLogger), and `import lightning.pytorch` alone. Subprocesses, as a user
          starts them, with a warm bytecode cache as any install has after its first run; and
          once more without one (PYTHONDONTWRITEBYTECODE=1 and no .pyc, as this sandbox runs).
3. data   Linear regression on 10^7 synthetic rows, batch 2^18, 5 epochs, timed from the start of
          trainer.fit to its end: samples per second against a plain loop slicing the same
          in-memory tensors, and peak RSS above the import floor (VmHWM after the imports and
          before the data). One subprocess per variant and repeat, each with glibc's default
          malloc settings.
4. sweep  `train.py -m model=quadratic seed=0,...,7` (8 jobs, basic launcher) against one
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
def large_data_worker(variant: str, n: int, batch_size: int, epochs: int) -> dict:
    """One variant in this fresh process: its figures, printed as JSON."""
    import torch

    if variant == "plain":
        floor = peak_rss_mb()
        generator = torch.Generator().manual_seed(0)
        x = torch.empty(n, 1).uniform_(-1.0, 1.0, generator=generator)
        y = torch.randn(n, 1, generator=generator).mul_(0.1).add_(x, alpha=2.0)  # y = 2x + noise
        w = torch.tensor([3.0], requires_grad=True)
        started = time.perf_counter()
        for _ in range(epochs):
            for i in range(0, n, batch_size):
                xb, yb = x[i : i + batch_size], y[i : i + batch_size]
                loss = ((xb * w - yb) ** 2).mean()
                loss.backward()
                w.data = w.data - 0.01 * w.grad.data
                w.grad.data.zero_()
        fit_s, final_loss = time.perf_counter() - started, loss.item()
    elif variant == "bare":
        import lightning.pytorch as pl
        from bare_lightning import Linear

        from backprop_lab.data import SyntheticDataModule, TensorBatches

        quiet_lightning()
        floor = peak_rss_mb()
        x, y = SyntheticDataModule(n=n, seed=0).load()
        trainer = pl.Trainer(
            max_epochs=epochs,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        )
        model, fits = Linear(), timed_fits()
        trainer.fit(model, TensorBatches(x, y, batch_size))
        fit_s, final_loss = fits[0], None
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
        cfg = compose(*overrides)
        floor = peak_rss_mb()
        fits = timed_fits()
        summary = train(cfg, quiet=True)
        fit_s, final_loss = fits[0], summary["final_loss"]
        n = round(n * (1 - cfg.data.val_fraction))  # the rows it trains on
    return {
        "fit_s": fit_s,
        "samples_per_s": n * epochs / fit_s,
        "peak_above_floor_mb": peak_rss_mb() - floor,
        "floor_mb": floor,
        "final_loss": final_loss,
    }


def bench_data(n: int, batch_size: int, epochs: int, repeats: int) -> dict:
    def variant(name: str) -> Callable[[], dict]:
        def run() -> dict:
            args = [sys.executable, __file__, "--worker", name, str(n), str(batch_size)]
            done = subprocess.run(
                [*args, str(epochs)], cwd=ROOT, capture_output=True, text=True, env=CACHED
            )
            if done.returncode:
                raise RuntimeError(f"large-data worker {name} failed:\n{done.stderr[-3000:]}")
            return json.loads(done.stdout.splitlines()[-1])

        return run

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
        lines += ["", f"{'[' + name + ']':<{width}}" + "".join(f"{k:>20}" for k in keys)]
        for variant, row in rows.items():
            lines.append(f"{variant:<{width}}" + "".join(f"{_fmt(row[k]):>20}" for k in keys))
        lines.append("  " + verdict(name, results[name]["ratio"]))
        if name == "data":
            lines.append("  " + verdict("data_memory", results[name]["memory_ratio"]))
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
    parser.add_argument("--only", default="step,cold,data,sweep", help="comma-separated subset")
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
    if "sweep" in only:
        results["sweep"] = bench_sweep(8, max(1, repeats - 2))
    results["wall_s"] = time.perf_counter() - started
    print(table(results))
    Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
    print(f"\nresults: {args.out} ({results['wall_s']:.0f} s)")


if __name__ == "__main__":
    main()
