"""A run's figures drawn (matplotlib) and its graph written, once ``fit`` has returned.

The callbacks ``submit`` numbers as jobs. TensorBoard reads a run dir's event files in name order
and, once a newer file exists, polls only that one; so the images and the graph go into one event
file named after the run's own plus ``.figures``, written after Lightning has closed the run's.
``wait`` draws the jobs in this process, where matplotlib is loaded already (torchmetrics imports
it): the report that follows names only files that exist. In a sweep on Hydra's basic launcher,
``release`` hands them to a worker process instead, a ``ProcessPoolExecutor`` of one at the lowest
CPU priority, so the next job trains while they are drawn (~0.35 s a job: benchmarks/run.py
section 4, "8-job sweep"). Each job is kept in a ``.figures-*.pkl`` file until it is drawn, and
``python -m backprop_lab.dashboard.render FILE`` draws one that was not.
"""

from __future__ import annotations

import io
import itertools
import logging
import multiprocessing
import os
import pickle
import signal
import sys
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

#: The plots.py functions a figure may name.
FIGURES = ("loss_curve", "parameter_trajectories", "loss_profile", "loss_surface")


@dataclass
class Figure:
    """One figure as numbers: ``plots.<kind>(*args)``, shown under ``tag``."""

    tag: str
    kind: str
    args: tuple

    def __post_init__(self) -> None:
        if self.kind not in FIGURES:
            raise ValueError(f"unknown figure kind {self.kind!r}; one of {FIGURES}")


@dataclass
class Job:
    """What to draw and where: PNG files (by figure tag); images and a serialized GraphDef for
    the TensorBoard log dirs, at ``step``."""

    figures: list[Figure]
    files: dict[str, str] = field(default_factory=dict)
    logdirs: list[str] = field(default_factory=list)
    step: int = 0
    graph: bytes = b""


# --- drawing: in the worker, or here --------------------------------------------------------------
def draw(path: str | Path) -> None:
    """Draw the job kept in ``path`` (PNG files, TensorBoard events), then remove the file."""
    path = Path(path)
    with path.open("rb") as f:
        job: Job = pickle.load(f)
    from backprop_lab.dashboard import plots

    pngs = {fig.tag: plots.to_png(getattr(plots, fig.kind)(*fig.args)) for fig in job.figures}
    from backprop_lab.files import write_atomic

    for tag, target in job.files.items():
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        write_atomic(target, pngs[tag])
    for logdir in job.logdirs:
        _write_events(Path(logdir), pngs, job)
    path.unlink()


def _write_events(logdir: Path, pngs: Mapping[str, bytes], job: Job) -> None:
    """The graph and the PNGs as TensorBoard events at the job's step, in an event file named
    after the run's newest one plus ``.figures``: TensorBoard reads it after the run's events.
    Drawing a job again replaces it."""
    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.compat.proto.summary_pb2 import Summary
    from tensorboard.summary.writer.record_writer import RecordWriter

    from backprop_lab.dashboard import plots
    from backprop_lab.files import write_atomic

    runs = sorted(p.name for p in logdir.glob("events.out.tfevents.*") if p.suffix != ".figures")
    base = runs[-1] if runs else f"events.out.tfevents.{int(time.time()):010d}.{os.getpid()}"
    buffer = io.BytesIO()
    records = RecordWriter(buffer)
    now = time.time()
    records.write(Event(wall_time=now, file_version="brain.Event:2").SerializeToString())
    if job.graph:
        records.write(Event(wall_time=now, step=job.step, graph_def=job.graph).SerializeToString())
    for tag, png in pngs.items():
        image = Summary.Image(
            height=plots.HEIGHT, width=plots.WIDTH, colorspace=4, encoded_image_string=png
        )
        summary = Summary(value=[Summary.Value(tag=tag, image=image)])
        records.write(Event(wall_time=now, step=job.step, summary=summary).SerializeToString())
    write_atomic(logdir / f"{base}.figures", buffer.getvalue())


def _in_background() -> None:
    """The worker's set-up: training comes first; Ctrl-C stops the training, and the figures of
    what was trained still get drawn."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if hasattr(os, "nice"):
        os.nice(19)


# --- this process's side --------------------------------------------------------------------------
_worker: ProcessPoolExecutor | None = None
_held: list[Job] = []  # submitted, waiting for the run's writers to close
_jobs: dict[Path, tuple[Job, Future | None]] = {}  # by file: handed to the worker, or to draw here
_numbers = itertools.count()


def submit(job: Job) -> None:
    """Hold ``job`` until :func:`release` or :func:`wait`."""
    _held.append(job)


def release() -> None:
    """Hand the held jobs to the worker process, to be drawn while this process goes on (the
    next job of a sweep trains). Call it once ``fit`` has returned: Lightning has closed the
    run's writers then."""
    global _worker
    for path, job in _keep_held():
        if _worker is None:
            context = multiprocessing.get_context("spawn")  # no fork of a process with threads
            _worker = ProcessPoolExecutor(1, mp_context=context, initializer=_in_background)
        try:
            _jobs[path] = (job, _worker.submit(draw, path))
        except (BrokenProcessPool, RuntimeError):  # the worker has died: wait() draws it here
            _worker = None
            _jobs[path] = (job, None)


def wait() -> list[Path]:
    """Draw the held jobs here and wait for those handed to the worker: call it once ``fit`` has
    returned. Returns the job files not drawn, each warned of with the command that draws it."""
    for path, job in _keep_held():
        _jobs[path] = (job, None)
    failed = []
    for path in list(_jobs):
        reason = _outcome(_jobs.pop(path)[1], path)
        if reason is not None:
            log.warning(
                "figures not drawn (%s); their numbers are in %s, and "
                "`python -m backprop_lab.dashboard.render %s` draws them",
                reason,
                path,
                path,
            )
            failed.append(path)
    return failed


def pending(path: str | Path) -> bool:
    """Whether ``path`` is a file that a job not yet drawn will write."""
    jobs = [*_held, *(job for job, _ in _jobs.values())]
    return any(Path(path) in map(Path, job.files.values()) for job in jobs)


def _keep_held() -> list[tuple[Path, Job]]:
    """The held jobs merged into one per run dir, each kept in its ``.figures-*.pkl`` file. A
    figure in two jobs (the loss curve of the Images tab and of loss_curve.png) is drawn once."""
    runs: dict[Path, list[Job]] = {}
    for job in _held:
        home = Path(job.logdirs[0]) if job.logdirs else Path(next(iter(job.files.values()))).parent
        runs.setdefault(home, []).append(job)
    _held.clear()
    kept = []
    for home, jobs in runs.items():
        job = Job(
            list({fig.tag: fig for job in jobs for fig in job.figures}.values()),
            files={tag: target for job in jobs for tag, target in job.files.items()},
            logdirs=list(dict.fromkeys(logdir for job in jobs for logdir in job.logdirs)),
            step=max(job.step for job in jobs),
            graph=next((job.graph for job in jobs if job.graph), b""),
        )
        home.mkdir(parents=True, exist_ok=True)
        path = home / f".figures-{os.getpid()}-{next(_numbers)}.pkl"
        path.write_bytes(pickle.dumps(job, protocol=pickle.HIGHEST_PROTOCOL))
        kept.append((path, job))
    return kept


def _outcome(future: Future | None, path: Path) -> str | None:
    """Wait for one job, or draw it here (also one the worker could not: it died). None, or why
    it was not drawn."""
    global _worker
    try:
        if future is None:
            draw(path)
        else:
            future.result()
    except BrokenProcessPool:  # the next release() starts another worker
        _worker = None
        return _outcome(None, path)
    except Exception as error:  # warned of by wait(); the numbers are kept
        return " ".join(f"{type(error).__name__}: {error}".split())
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Draw the job files given, here (exit status 1 if any fails, 2 for a usage error)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or any(a.startswith("-") for a in args):
        print("usage: python -m backprop_lab.dashboard.render FIGURES.pkl ...", file=sys.stderr)
        return 2
    status = 0
    for arg in args:
        reason = _outcome(None, Path(arg))
        if reason is not None:
            print(f"error: {arg}: {reason}", file=sys.stderr)
            status = 1
        else:
            print(f"drawn: {arg}")
    return status


if __name__ == "__main__":
    sys.exit(main())
