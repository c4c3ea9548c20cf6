"""The helper process that draws figures: files and TensorBoard images, held until the run's
writer closes, drawn here when the helper is gone, kept as numbers when they cannot be drawn."""

from __future__ import annotations

import logging
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from test_plots import check_png

from backprop_lab.dashboard import render


def _curve(tag: str = "plots/loss_curve") -> render.Figure:
    return render.Figure(tag, "loss_curve", ([0, 1, 2], {"train": [3.0, 1.0, 0.5]}, "a curve"))


def _surface() -> render.Figure:
    grid = np.linspace(-1, 1, 9)
    losses = np.add.outer(grid**2, grid**2)
    args = (grid, grid, losses, [1, 0.5, 0.1], [1, 0.4, 0.0], ("a", "b"), "a surface")
    return render.Figure("plots/loss_surface/a_b", "loss_surface", args)


def _images(logdir: Path) -> dict[str, bytes]:
    events = EventAccumulator(str(logdir), size_guidance={"images": 0})
    events.Reload()
    return {tag: events.Images(tag)[-1].encoded_image_string for tag in events.Tags()["images"]}


def test_a_job_is_drawn_to_files_by_the_helper(tmp_path: Path):
    render.start()
    helper = render._helper
    target = tmp_path / "out" / "loss_curve.png"
    job_file = render.submit(render.Job([_curve()], files={"plots/loss_curve": str(target)}))
    assert job_file.parent == target.parent and job_file.name.startswith(".figures-")
    assert render.pending(target)
    assert render.wait() == []
    assert render._helper is helper  # the same helper drew it, and stays for the next run
    check_png(target.read_bytes())
    assert not job_file.exists() and not render.pending(target)


def test_tensorboard_images_wait_until_the_runs_writer_closes(tmp_path: Path):
    run_events = tmp_path / "events.out.tfevents.1700000000.host.1.0"
    run_events.write_bytes(b"")  # the run's own event file, as its writer left it
    job = render.Job([_curve(), _surface()], logdirs=[str(tmp_path)], step=300)
    job_file = render.submit(job)
    time.sleep(2.0)  # a helper handed the job would have drawn it by now
    assert not list(tmp_path.glob("*.figures"))
    render.release(tmp_path)
    assert render.wait() == []
    assert not job_file.exists()
    (figures,) = tmp_path.glob("*.figures")
    assert figures.name == run_events.name + ".figures"  # read after the run's events
    images = _images(tmp_path)
    assert set(images) == {"plots/loss_curve", "plots/loss_surface/a_b"}
    for png in images.values():
        check_png(png)
    events = EventAccumulator(str(tmp_path), size_guidance={"images": 0})
    events.Reload()
    assert events.Images("plots/loss_curve")[-1].step == 300


def test_ctrl_c_does_not_stop_the_helper(tmp_path: Path):
    render.start()
    helper = render._helper
    first = tmp_path / "first.png"
    render.submit(render.Job([_curve("first")], files={"first": str(first)}))
    assert render.wait() == []  # it answered: past its start-up, in its loop
    os.kill(helper.process.pid, signal.SIGINT)
    target = tmp_path / "curve.png"
    render.submit(render.Job([_curve()], files={"plots/loss_curve": str(target)}))
    assert render.wait() == []
    assert helper.alive() and render._helper is helper
    check_png(target.read_bytes())


def test_a_job_the_helper_could_not_take_is_drawn_here(tmp_path: Path):
    render.start()
    render._helper.process.kill()
    render._helper.process.wait()
    target = tmp_path / "curve.png"
    job_file = tmp_path / "job.pkl"
    job = render.Job([_curve()], files={"plots/loss_curve": str(target)})
    render._sent[job_file] = (job, render._helper)  # handed to the helper just before it died
    job_file.write_bytes(pickle.dumps(job))
    assert render.wait() == []
    check_png(target.read_bytes())
    assert not job_file.exists()
    render.start()  # the next job gets a fresh helper
    assert render._helper.alive()


def test_a_figure_that_cannot_be_drawn_keeps_its_numbers_and_says_how_to_redraw(
    tmp_path: Path, caplog
):
    bad = render.Figure("plots/loss_curve", "loss_curve", ([0, 1], "not a mapping of curves"))
    job_file = render.submit(render.Job([bad], files={"plots/loss_curve": str(tmp_path / "x.png")}))
    with caplog.at_level(logging.WARNING, logger="backprop_lab.dashboard.render"):
        assert render.wait() == [job_file]
    assert job_file.is_file()  # the numbers are kept
    (message,) = [
        r.getMessage() for r in caplog.records if r.name == "backprop_lab.dashboard.render"
    ]
    assert f"python -m backprop_lab.dashboard.render {job_file}" in message
    assert "AttributeError" in message
    assert not (tmp_path / "x.png").exists()

    done = subprocess.run(
        [sys.executable, "-m", "backprop_lab.dashboard.render", str(job_file)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 1
    assert "AttributeError" in done.stderr and "Traceback" not in done.stderr


def test_the_render_command_draws_a_kept_job(tmp_path: Path):
    target = tmp_path / "curve.png"
    job_file = tmp_path / ".figures-1-0.pkl"
    job = render.Job([_curve()], files={"plots/loss_curve": str(target)}, logdirs=[str(tmp_path)])
    job_file.write_bytes(pickle.dumps(job))
    done = subprocess.run(
        [sys.executable, "-m", "backprop_lab.dashboard.render", str(job_file)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    check_png(target.read_bytes())
    assert set(_images(tmp_path)) == {"plots/loss_curve"}
    assert not job_file.exists()


def test_an_unknown_figure_kind_is_refused():
    with pytest.raises(ValueError, match="unknown figure kind 'pie'"):
        render.Figure("t", "pie", ())


def test_the_helper_imports_no_torch():
    code = (
        "import sys; from backprop_lab import render; render._warm_up(); "
        "print('torch' in sys.modules, 'matplotlib' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "True"]


def test_a_figure_in_two_jobs_is_drawn_once(tmp_path: Path, monkeypatch):
    from backprop_lab.dashboard import plots

    drawn = []
    loss_curve = plots.loss_curve
    monkeypatch.setattr(plots, "loss_curve", lambda *a: drawn.append(a) or loss_curve(*a))
    figure = render.Figure("plots/loss_curve", "loss_curve", ([0, 1], {"train": [2.0, 0.25]}))
    monkeypatch.chdir(tmp_path)
    for name in ("a", "b"):  # as a run's TensorBoard job and its loss_curve.png job
        job_file = tmp_path / f"{name}.pkl"
        job_file.write_bytes(pickle.dumps(render.Job([figure], files={figure.tag: f"{name}"})))
        render.draw(job_file)
    assert len(drawn) == 1
    assert (tmp_path / "a").read_bytes() == (tmp_path / "b").read_bytes()
    check_png((tmp_path / "b").read_bytes())


def test_a_process_for_another_rank_starts_no_helper_and_still_draws(tmp_path: Path):
    # Under data-parallel training only global rank 0 submits figures; the other ranks' processes
    # (LOCAL_RANK or NODE_RANK set by the launcher) start no helper of their own.
    target = tmp_path / "curve.png"
    code = f"""
from backprop_lab.dashboard import render
render.start()
assert render._helper is None
curve = render.Figure("plots/loss_curve", "loss_curve", ([0, 1], {{"train": [1.0, 0.5]}}))
job = render.Job([curve], files={{"plots/loss_curve": {str(target)!r}}})
render.submit(job)
assert render.wait() == []
"""
    env = {**os.environ, "LOCAL_RANK": "1"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    check_png(target.read_bytes())
