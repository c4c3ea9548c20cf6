"""Figures drawn by a helper process, so that training never waits for matplotlib.

A run's figures are numbers until they are drawn: the callbacks in dashboard.py compute them (the
loss by epoch, the parameters' path, the loss over a grid) and hand them here as a *job*. A job is
written to a file beside its outputs first (``.figures-*.pkl``), so a job that cannot be drawn
keeps its numbers, and ``python -m backprop_lab.dashboard.render FILE`` draws it again.

One helper process per Python process
(``python -m backprop_lab.dashboard.render --serve``) draws the jobs in order: PNG files, and images in a TensorBoard event file of the run's log dir. It is started
when a figure callback is made, so its imports (numpy, matplotlib, TensorBoard's protobufs, ~0.7 s
of CPU) overlap the run's set-up and training; it imports no torch. Drawing a run's five figures
takes ~0.4 s of CPU: in a sweep it runs beside the next job's training, and ``trainer.fit`` ends
without it (benchmarks/ measures both).

TensorBoard reads a run dir's event files in name order and, once it has moved on to a newer file,
polls only that one. So a job with TensorBoard images is held until the run's own writer has
closed (``release``, which
``backprop_lab.training.loggers.TensorBoardLogger.finalize`` calls), and its
images then go into a new event file that sorts after the run's.

    start()     start the helper (idempotent)
    submit()    a job: written to its file; handed to the helper, or held for its log dirs
    release()   hand over the jobs held for a log dir whose writer has closed
    wait()      hand over every job and wait until each is drawn; warn of any that was not
    pending()   whether a file is still to be written by a job

The helper runs at the lowest CPU priority (nice 19), so it takes only cores that training leaves
idle, and it ignores SIGINT: Ctrl-C stops training, and the figures of what was trained still get
drawn. If it cannot start or dies, the jobs left are drawn in this process instead.
"""

from __future__ import annotations

import atexit
import contextlib
import io
import itertools
import logging
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from backprop_lab.ranks import is_rank_zero

log = logging.getLogger(__name__)

#: The plots.py functions a job may name.
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
    """Figures to draw, where to put them: PNG files (by tag) and TensorBoard log dirs."""

    figures: list[Figure]
    files: dict[str, str] = field(default_factory=dict)
    logdirs: list[str] = field(default_factory=list)
    step: int = 0

    def home(self) -> Path:
        """The dir of the job's file: its first log dir, else its first PNG's dir."""
        if self.logdirs:
            return Path(self.logdirs[0])
        return Path(next(iter(self.files.values()))).parent


# --- drawing (the helper, or this process when the helper is gone) -------------------------------
def draw(path: Path) -> None:
    """Draw the job in ``path`` (PNG files, TensorBoard images), then remove the file."""
    with path.open("rb") as f:
        job: Job = pickle.load(f)
    pngs = {figure.tag: _png(figure) for figure in job.figures}
    for tag, target in job.files.items():
        _write_atomic(Path(target), pngs[tag])
    for logdir in job.logdirs:
        _add_images(logdir, pngs, job.step)
    path.unlink()


#: PNGs of the last few figures drawn, by their pickled numbers: a run's loss curve is in its
#: TensorBoard job and its loss_curve.png job, and is drawn once (~80 ms).
_drawn: dict[bytes, bytes] = {}


def _png(figure: Figure) -> bytes:
    from backprop_lab.dashboard import plots

    key = pickle.dumps((figure.kind, figure.args))
    if key not in _drawn:
        while len(_drawn) >= 8:
            del _drawn[next(iter(_drawn))]
        _drawn[key] = plots.to_png(getattr(plots, figure.kind)(*figure.args))
    return _drawn[key]


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_bytes(data)
    partial.replace(path)


def _add_images(logdir: str, pngs: Mapping[str, bytes], step: int) -> None:
    """The PNGs as TensorBoard images at ``step``, in an event file of ``logdir`` named after the
    run's own newest one plus ``.figures``: it sorts right after that file, so TensorBoard reads
    it after the run's events. Drawing a job again replaces it."""
    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.compat.proto.summary_pb2 import Summary
    from tensorboard.summary.writer.record_writer import RecordWriter

    from backprop_lab.dashboard import plots

    logdir = Path(logdir)
    runs = sorted(p.name for p in logdir.glob("events.out.tfevents.*") if p.suffix != ".figures")
    base = runs[-1] if runs else f"events.out.tfevents.{int(time.time()):010d}.{os.getpid()}"
    buffer = io.BytesIO()
    records = RecordWriter(buffer)
    records.write(Event(wall_time=time.time(), file_version="brain.Event:2").SerializeToString())
    for tag, png in pngs.items():
        image = Summary.Image(
            height=plots.HEIGHT, width=plots.WIDTH, colorspace=4, encoded_image_string=png
        )
        summary = Summary(value=[Summary.Value(tag=tag, image=image)])
        records.write(Event(wall_time=time.time(), step=step, summary=summary).SerializeToString())
    _write_atomic(logdir / f"{base}.figures", buffer.getvalue())


def serve() -> None:
    """The helper's loop: a job file's path per line of stdin; ``ok``/``failed`` lines back."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if hasattr(os, "nice"):
        os.nice(19)  # background work: training, on every core, comes first
    _warm_up()
    for line in sys.stdin:
        path = Path(line.rstrip("\n"))
        try:
            draw(path)
        except Exception as error:  # reported to the parent, which warns
            reason = " ".join(f"{type(error).__name__}: {error}".split())
            print(f"failed\t{path}\t{reason}", flush=True)
        else:
            print(f"ok\t{path}", flush=True)


def _warm_up() -> None:
    """Import and draw once (fonts, caches) before the first job needs it."""
    import tensorboard.summary.writer.record_writer  # noqa: F401
    from tensorboard.compat.proto import event_pb2, summary_pb2  # noqa: F401

    from backprop_lab.dashboard import plots

    _png(Figure("warm-up", "loss_curve", ([0, 1], {"train": [1.0, 0.5]})))
    del plots


# --- this process's side -------------------------------------------------------------------------
_replies: dict[Path, str | None] = {}  # job file -> None (drawn) or why it was not
_replied = threading.Condition()


class _Helper:
    """The helper process, and a thread that collects its replies."""

    def __init__(self) -> None:
        env = dict(os.environ)
        src = str(Path(__file__).resolve().parents[1])
        env["PYTHONPATH"] = os.pathsep.join(filter(None, (src, env.get("PYTHONPATH"))))
        self.process = subprocess.Popen(
            [sys.executable, "-m", "backprop_lab.dashboard.render", "--serve"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.finished = False  # it has exited and every reply it gave has been read
        threading.Thread(target=self._read, name="figures", daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            status, _, rest = line.rstrip("\n").partition("\t")
            path, _, reason = rest.partition("\t")
            if status in ("ok", "failed"):
                with _replied:
                    _replies[Path(path)] = reason if status == "failed" else None
                    _replied.notify_all()
        self.process.wait()
        with _replied:
            self.finished = True
            _replied.notify_all()

    def send(self, path: Path) -> bool:
        try:
            self.process.stdin.write(f"{path}\n")
            self.process.stdin.flush()
        except (OSError, ValueError):  # a broken pipe: the helper has exited
            return False
        return True

    def alive(self) -> bool:
        return self.process.poll() is None

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.process.stdin.close()
        self.process.wait()


_helper: _Helper | None = None
_held: list[tuple[Path, Job]] = []  # jobs waiting for their log dirs' writers to close
_sent: dict[Path, tuple[Job, _Helper | None]] = {}  # handed over (to which helper), not drawn
_numbers = itertools.count()
_exit_hook = False


def start() -> None:
    """Start the helper process, if it is not running.

    Not in a process that a launcher started for a data-parallel rank other than 0 (it sets
    ``LOCAL_RANK`` or ``NODE_RANK``): only global rank 0 writes figures. A job submitted there
    anyway is drawn in the process.
    """
    global _helper, _exit_hook
    if _helper is not None and _helper.alive():
        return
    if not is_rank_zero():
        _helper = None
    else:
        try:
            _helper = _Helper()
        except OSError as error:
            log.warning("figures are drawn in this process: the helper did not start (%s)", error)
            _helper = None
    if not _exit_hook:
        atexit.register(_at_exit)
        _exit_hook = True


def submit(job: Job) -> Path:
    """Write ``job`` to its file and hand it over (or hold it for its log dirs); its path."""
    home = job.home()
    home.mkdir(parents=True, exist_ok=True)
    path = home / f".figures-{os.getpid()}-{next(_numbers)}.pkl"
    with path.open("wb") as f:
        pickle.dump(job, f, protocol=pickle.HIGHEST_PROTOCOL)
    if job.logdirs:
        _held.append((path, job))
    else:
        _send(path, job)
    return path


def release(logdir: str | Path | None = None) -> None:
    """Hand over the held jobs that write to ``logdir`` (its writer has closed), or all."""
    logdir = Path(logdir) if logdir is not None else None
    for path, job in list(_held):
        if logdir is None or logdir in map(Path, job.logdirs):
            _held.remove((path, job))
            _send(path, job)


def pending(path: str | Path) -> bool:
    """Whether ``path`` is a file that a job not yet drawn will write."""
    jobs = [job for _, job in _held] + [job for job, _ in _sent.values()]
    return any(Path(path) in map(Path, job.files.values()) for job in jobs)


def wait() -> list[Path]:
    """Hand over every job and wait until all are drawn. Returns the job files not drawn (each
    warned of, with the command that draws it)."""
    release()
    with _replied:
        while any(
            path not in _replies and helper is not None and not helper.finished
            for path, (_, helper) in _sent.items()
        ):
            _replied.wait(timeout=1.0)
    failed = []
    for path in list(_sent):
        reason = _replies.pop(path) if path in _replies else _draw_here(path)
        del _sent[path]
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


def _draw_here(path: Path) -> str | None:
    """Draw a job the helper did not (it died, or never started); None, or why not."""
    try:
        draw(path)
    except Exception as error:  # warned of by wait(); the numbers are kept
        return " ".join(f"{type(error).__name__}: {error}".split())
    return None


def _send(path: Path, job: Job) -> None:
    if _helper is None or not _helper.alive():
        start()
    # A helper that has died, or none: wait() draws the job in this process.
    _sent[path] = (job, _helper if _helper is not None and _helper.send(path) else None)


def _at_exit() -> None:
    global _helper
    try:
        wait()
    finally:
        if _helper is not None:
            _helper.close()
            _helper = None


def main(argv: Sequence[str] | None = None) -> int:
    """``--serve``: the helper. Otherwise draw the job files given (exit 1 if any fails)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args == ["--serve"]:
        serve()
        return 0
    if not args or any(a.startswith("-") for a in args):
        print("usage: python -m backprop_lab.dashboard.render FIGURES.pkl ...", file=sys.stderr)
        return 2
    status = 0
    for arg in args:
        reason = _draw_here(Path(arg))
        if reason is not None:
            print(f"error: {arg}: {reason}", file=sys.stderr)
            status = 1
        else:
            print(f"drawn: {arg}")
    return status


if __name__ == "__main__":
    sys.exit(main())
