"""Drawing the figures after fit: PNG files and TensorBoard events that appear, the worker that
draws a sweep's jobs, and the numbers kept, with the command that draws them, when drawing fails
or is stopped."""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.compat.proto.graph_pb2 import GraphDef
from tensorboard.compat.proto.node_def_pb2 import NodeDef
from test_plots import check_png
from torch.utils.tensorboard import SummaryWriter

from backprop_lab.dashboard import plots, render

RENDER = [sys.executable, "-m", "backprop_lab.dashboard.render"]


def _curve(tag: str = "plots/loss_curve") -> render.Figure:
    return render.Figure(tag, "loss_curve", ({"train": ([0, 1, 2], [3.0, 1.0, 0.5])}, "a curve"))


def _surface() -> render.Figure:
    grid = np.linspace(-1, 1, 9)
    losses = np.add.outer(grid**2, grid**2)
    args = (grid, grid, losses, [1, 0.5, 0.1], [1, 0.4, 0.0], ("a", "b"), "a surface")
    return render.Figure("plots/loss_surface/a_b", "loss_surface", args)


def _events(logdir: Path) -> EventAccumulator:
    events = EventAccumulator(str(logdir), size_guidance={"images": 0})
    events.Reload()
    return events


def _images(logdir: Path) -> dict[str, bytes]:
    events = _events(logdir)
    return {tag: events.Images(tag)[-1].encoded_image_string for tag in events.Tags()["images"]}


def _kept(directory: Path) -> list[Path]:
    return sorted(directory.glob(render.KEPT))


def test_a_png_is_drawn_when_the_run_waits(tmp_path: Path):
    target = tmp_path / "out" / "loss_curve.png"
    render.submit(render.Job([_curve()], files={"plots/loss_curve": str(target)}))
    assert render.pending(target) and not target.exists()
    assert render.wait() == []
    check_png(target.read_bytes())
    assert not render.pending(target)
    assert _kept(target.parent) == []  # drawn: its numbers are not kept


def test_images_and_graph_go_into_an_event_file_read_after_the_runs(tmp_path: Path):
    with SummaryWriter(str(tmp_path)) as writer:  # the run's own events, its writer closed
        writer.add_scalar("train/loss", 1.0, 0)
    (run_events,) = (p.name for p in tmp_path.glob("events.out.tfevents.*"))
    graph = GraphDef(node=[NodeDef(name="Model/pow", op="pow")]).SerializeToString()
    render.submit(render.Job([_curve(), _surface()], logdirs=[str(tmp_path)], step=300))
    render.submit(render.Job([], logdirs=[str(tmp_path)], step=300, graph=graph))
    assert [p.name for p in tmp_path.iterdir()] == [run_events]  # nothing before wait()
    assert render.wait() == []
    assert sorted(p.name for p in tmp_path.iterdir()) == [run_events, run_events + ".figures"]
    events = _events(tmp_path)
    assert [node.name for node in events.Graph().node] == ["Model/pow"]
    assert events.Scalars("train/loss")[0].value == 1.0
    assert set(events.Tags()["images"]) == {"plots/loss_curve", "plots/loss_surface/a_b"}
    for tag in events.Tags()["images"]:
        (image,) = events.Images(tag)
        assert image.step == 300 and (image.width, image.height) == (plots.WIDTH, plots.HEIGHT)
        check_png(image.encoded_image_string)


def test_a_figure_in_two_jobs_of_a_run_is_drawn_once(tmp_path: Path, monkeypatch):
    drawn = []
    loss_curve = plots.loss_curve
    monkeypatch.setattr(plots, "loss_curve", lambda *a: drawn.append(a) or loss_curve(*a))
    target = tmp_path / "loss_curve.png"
    render.submit(render.Job([_curve()], logdirs=[str(tmp_path)], step=3))  # the Images tab
    render.submit(render.Job([_curve()], files={"plots/loss_curve": str(target)}))  # the PNG
    assert render.wait() == []
    assert len(drawn) == 1
    assert _images(tmp_path)["plots/loss_curve"] == target.read_bytes()


def test_released_jobs_are_drawn_by_the_worker_while_this_process_goes_on(tmp_path: Path):
    targets = [tmp_path / f"job{n}" / "loss_curve.png" for n in range(2)]
    for target in targets:  # two jobs of a sweep, each released when its fit returns
        render.submit(render.Job([_curve()], files={"plots/loss_curve": str(target)}))
        render.release()
        assert render.pending(target)
    assert render.wait() == []
    for target in targets:
        check_png(target.read_bytes())
        assert _kept(target.parent) == []


def test_ctrl_c_does_not_stop_the_worker(tmp_path: Path):
    render.submit(render.Job([_curve()], files={"plots/loss_curve": str(tmp_path / "a.png")}))
    render.release()
    assert render.wait() == []  # the worker is up and has drawn a job
    (worker,) = multiprocessing.active_children()
    os.kill(worker.pid, signal.SIGINT)
    target = tmp_path / "b.png"
    render.submit(render.Job([_curve()], files={"plots/loss_curve": str(target)}))
    render.release()
    assert render.wait() == []
    check_png(target.read_bytes())
    assert multiprocessing.active_children() == [worker]


def test_a_job_the_worker_could_not_draw_is_drawn_here(tmp_path: Path):
    target = tmp_path / "curve.png"
    render.submit(render.Job([_curve()], files={"plots/loss_curve": str(target)}))
    render.release()
    for worker in multiprocessing.active_children():
        worker.kill()  # the worker dies, at the latest just after it drew the job
    assert render.wait() == []
    check_png(target.read_bytes())
    second = tmp_path / "second.png"  # and the next job gets a worker again
    render.submit(render.Job([_curve()], files={"plots/loss_curve": str(second)}))
    render.release()
    assert render.wait() == []
    check_png(second.read_bytes())
    assert len(multiprocessing.active_children()) == 1


def test_a_figure_that_cannot_be_drawn_keeps_its_numbers_and_says_how_to_redraw(
    tmp_path: Path, caplog
):
    bad = render.Figure("plots/loss_curve", "loss_curve", ("not a mapping of curves",))
    target = tmp_path / "x.png"
    render.submit(render.Job([bad], files={"plots/loss_curve": str(target)}))
    with caplog.at_level(logging.WARNING, logger="backprop_lab.dashboard.render"):
        (kept,) = render.wait()
    assert _kept(tmp_path) == [kept]
    (message,) = [
        r.getMessage() for r in caplog.records if r.name == "backprop_lab.dashboard.render"
    ]
    assert f"python -m backprop_lab.dashboard.render {kept}" in message
    assert "AttributeError" in message
    assert not target.exists()

    done = subprocess.run([*RENDER, str(kept)], capture_output=True, text=True)
    assert done.returncode == 1
    assert "AttributeError" in done.stderr and "Traceback" not in done.stderr
    assert kept.is_file()


def test_the_render_command_draws_the_numbers_a_failed_job_kept(tmp_path: Path):
    target = tmp_path / "loss_curve.png"
    target.mkdir()  # in the PNG's way: the job fails
    render.submit(render.Job([_curve()], files={"plots/loss_curve": str(target)}))
    render.submit(render.Job([_curve(), _surface()], logdirs=[str(tmp_path)], step=7))
    (kept,) = render.wait()
    assert not list(tmp_path.glob("*.figures"))
    target.rmdir()
    done = subprocess.run([*RENDER, str(kept)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [f"drawn: {kept}"]
    check_png(target.read_bytes())
    images = _events(tmp_path).Images("plots/loss_surface/a_b")
    assert [image.step for image in images] == [7]
    assert set(_images(tmp_path)) == {"plots/loss_curve", "plots/loss_surface/a_b"}
    assert not kept.exists()


def test_ctrl_c_while_drawing_keeps_the_numbers_to_draw_them_again(tmp_path: Path, monkeypatch):
    def ctrl_c(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(plots, "loss_curve", ctrl_c)
    target = tmp_path / "curve.png"
    render.submit(render.Job([_curve()], files={"plots/loss_curve": str(target)}))
    with pytest.raises(KeyboardInterrupt):
        render.wait()
    (kept,) = _kept(tmp_path)
    done = subprocess.run([*RENDER, str(kept)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    check_png(target.read_bytes())


def test_the_render_command_without_a_file_says_how_to_use_it():
    done = subprocess.run(RENDER, capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr.startswith("usage: python -m")


def test_an_unknown_figure_kind_is_refused():
    with pytest.raises(ValueError, match="unknown figure kind 'pie'"):
        render.Figure("t", "pie", ())


def test_the_worker_loads_neither_torch_nor_lightning():
    code = (
        "import sys, backprop_lab.dashboard.render; "
        "print('torch' in sys.modules, 'lightning' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
