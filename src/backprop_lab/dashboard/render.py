"""A run's figures drawn (matplotlib) and its graph written, once ``fit`` has returned.

The callbacks ``submit`` numbers as jobs. TensorBoard reads a run dir's event files in name order
and, once a newer file exists, polls only that one; so the images and the graph go into one event
file named after the run's own plus ``.figures``, written after Lightning has closed the run's.
``wait`` draws the jobs in this process, where matplotlib is loaded already (torchmetrics imports
it): the report that follows names only files that exist. In a sweep on Hydra's basic launcher,
``release`` hands them to a worker process instead, a ``ProcessPoolExecutor`` of one at the lowest
CPU priority, so the next job trains while they are drawn (~0.1 s a figure, 0.6-0.9 s a run's
seven or eight; benchmarks/run.py section 4, "8-job sweep"). Each job is kept in a
``.figures-*.json`` file until it is drawn, and ``python -m backprop_lab.dashboard.render FILE``
draws one that was not.

A job file is data, never code: JSON holding numbers, strings, lists, tuples, mappings and numpy
arrays (raw bytes of an allowed dtype, base64), read back by a decoder that makes nothing else.
Each figure names the plots.py function that draws it, and only the names in :data:`FIGURES` are
drawn: a file that is not such data, or names any other kind, is refused in one line and nothing
of it is drawn. A figure's ``args`` must be made of those types (see :func:`encode`).
"""

from __future__ import annotations

import base64
import binascii
import io
import itertools
import json
import logging
import multiprocessing
import os
import signal
import struct
import sys
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

#: The plots.py functions a figure may name: the allow-list of what a job file can have drawn.
FIGURES = (
    "loss_curve",
    "parameter_trajectories",
    "loss_profile",
    "loss_surface",
    "first_step",
    "data_fit",
    "targets_outputs",
    "computational_graph",
)
#: The name of the files that keep the jobs not yet drawn, in the run dir (a glob pattern).
KEPT = ".figures-*.json"
#: What a job file says it is, first; a file of another format is refused.
FORMAT = "backprop-lab figures 1"
#: The numpy dtypes an array of a job file may have (little-endian, as ``dtype.str`` names them).
DTYPES = ("<f8", "<f4", "<i8", "<i4", "|b1")


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


class JobFileError(ValueError):
    """A job file that is not the data this module writes: refused, nothing of it drawn."""


# --- job files: data only -------------------------------------------------------------------------
def encode(value: Any) -> Any:
    """``value`` as JSON-ready data. Allowed: None, bools, numbers, strings, lists, tuples,
    mappings (any of these as keys) and numpy arrays and scalars; anything else is a TypeError."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, np.generic):
        return encode(value.item())
    if isinstance(value, np.ndarray):
        kind = {"f": "<f8", "i": "<i8", "u": "<i8", "b": "|b1"}.get(value.dtype.kind)
        if kind is None:
            raise TypeError(f"a figure's array must hold numbers, not {value.dtype}")
        dtype = value.dtype.str if value.dtype.str in DTYPES else kind
        data = np.ascontiguousarray(value, dtype=dtype).tobytes()
        return {
            "array": base64.b64encode(data).decode("ascii"),
            "dtype": dtype,
            "shape": list(value.shape),
        }
    if isinstance(value, tuple):
        return {"tuple": [encode(v) for v in value]}
    if isinstance(value, list):
        return [encode(v) for v in value]
    if isinstance(value, Mapping):
        return {"dict": [[encode(k), encode(v)] for k, v in value.items()]}
    raise TypeError(f"a figure's numbers must be plain data, not {type(value).__name__}")


def decode(value: Any) -> Any:
    """What :func:`encode` made, back: plain values, lists, tuples, dicts and numpy arrays, and
    nothing else (a JobFileError for any other JSON object)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, list):
        return [decode(v) for v in value]
    if isinstance(value, dict):
        keys = set(value)
        if keys == {"tuple"} and isinstance(value["tuple"], list):
            return tuple(decode(v) for v in value["tuple"])
        if keys == {"dict"} and isinstance(value["dict"], list):
            pairs = [decode(pair) for pair in value["dict"]]
            if not all(isinstance(pair, list) and len(pair) == 2 for pair in pairs):
                raise JobFileError("a mapping must be a list of [key, value] pairs")
            try:
                return {key: item for key, item in pairs}
            except TypeError as error:  # a list as a key
                raise JobFileError(f"a mapping's key cannot be used ({error})") from None
        if keys == {"array", "dtype", "shape"}:
            return _array(value)
    raise JobFileError(f"a value of a kind this module does not write: {str(value)[:60]}")


def _array(value: dict) -> np.ndarray:
    dtype, shape, data = value["dtype"], value["shape"], value["array"]
    if dtype not in DTYPES:
        raise JobFileError(f"an array of dtype {str(dtype)[:20]!r}, not one of {DTYPES}")
    if not isinstance(shape, list) or not all(
        isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape
    ):
        raise JobFileError("an array's shape must be a list of whole numbers >= 0")
    if not isinstance(data, str):
        raise JobFileError("an array's data must be a base64 string")
    try:
        raw = base64.b64decode(data, validate=True)
        return np.frombuffer(raw, dtype=np.dtype(dtype)).reshape(shape).copy()
    except (binascii.Error, ValueError) as error:
        raise JobFileError(f"an array that does not decode ({error})") from None


def dumps(job: Job) -> bytes:
    """The job as the bytes of its JSON file."""
    data = {
        "format": FORMAT,
        "figures": [
            {"tag": fig.tag, "kind": fig.kind, "args": encode(list(fig.args))}
            for fig in job.figures
        ],
        "files": dict(job.files),
        "logdirs": list(job.logdirs),
        "step": int(job.step),
        "graph": base64.b64encode(job.graph).decode("ascii"),
    }
    return json.dumps(data, separators=(",", ":")).encode()


def loads(raw: bytes) -> Job:
    """The job a file holds, every part checked before anything is drawn: a JobFileError (one
    line) for anything but what :func:`dumps` writes, or a figure kind not in :data:`FIGURES`."""
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as error:
        raise JobFileError(f"not a figures file: not JSON ({error})") from None
    except RecursionError:
        raise JobFileError("not a figures file: nested too deep") from None
    expected = {"format", "figures", "files", "logdirs", "step", "graph"}
    if not isinstance(data, dict) or set(data) != expected or data["format"] != FORMAT:
        raise JobFileError(f"not a figures file: a JSON object with {FORMAT!r} was expected")
    figures = data["figures"]
    if not isinstance(figures, list) or not all(
        isinstance(f, dict) and set(f) == {"tag", "kind", "args"} for f in figures
    ):
        raise JobFileError("its figures must be a list of {tag, kind, args}")
    for fig in figures:
        if not isinstance(fig["tag"], str) or not isinstance(fig["args"], list):
            raise JobFileError("a figure's tag must be a string and its args a list")
        if fig["kind"] not in FIGURES:
            raise JobFileError(
                f"figure kind {str(fig['kind'])[:60]!r} is not one that is drawn "
                f"({', '.join(FIGURES)}); nothing was drawn"
            )
    files, logdirs, step = data["files"], data["logdirs"], data["step"]
    tags = {fig["tag"] for fig in figures}
    if not isinstance(files, dict) or not all(
        isinstance(t, str) and t in tags and isinstance(f, str) and f.lower().endswith(".png")
        for t, f in files.items()
    ):
        raise JobFileError("its files must map a figure's tag to a .png path")
    if not isinstance(logdirs, list) or not all(isinstance(d, str) for d in logdirs):
        raise JobFileError("its logdirs must be a list of paths")
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        raise JobFileError("its step must be a whole number >= 0")
    try:
        graph = base64.b64decode(str(data["graph"]), validate=True)
        args = [tuple(decode(fig["args"])) for fig in figures]
    except binascii.Error as error:
        raise JobFileError(f"its graph does not decode ({error})") from None
    except RecursionError:
        raise JobFileError("not a figures file: nested too deep") from None
    return Job(
        [Figure(f["tag"], f["kind"], a) for f, a in zip(figures, args, strict=True)],
        files=files,
        logdirs=logdirs,
        step=step,
        graph=graph,
    )


# --- drawing: in the worker, or here --------------------------------------------------------------
def draw(path: str | Path) -> None:
    """Draw the job kept in ``path`` (PNG files, TensorBoard events), then remove the file. The
    whole file is checked first, and every figure drawn before any file is written."""
    path = Path(path)
    job = loads(path.read_bytes())
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
        width, height = struct.unpack(">II", png[16:24])  # the PNG's IHDR: any figure's size
        image = Summary.Image(height=height, width=width, colorspace=4, encoded_image_string=png)
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
    """The held jobs merged into one per run dir, each kept in its ``.figures-*.json`` file. A
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
        path = home / KEPT.replace("*", f"{os.getpid()}-{next(_numbers)}")
        from backprop_lab.files import write_atomic

        write_atomic(path, dumps(job))
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
        usage = "usage: python -m backprop_lab.dashboard.render .figures-....json ..."
        print(usage, file=sys.stderr)
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
