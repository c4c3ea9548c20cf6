"""The figures a learner reads: read back from the files (PNGs that decode, TensorBoard's image
tags under figures/<label>/) and from the numbers each figure is drawn from (render.Figure)."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from test_plots import check_png, png_size

from backprop_lab.dashboard import figures, plots, render
from backprop_lab.models import LinearRegression, QuadraticRegression, SigmoidNet
from backprop_lab.training.objective import Objective

RENDER = [sys.executable, "-m", "backprop_lab.dashboard.render"]


@pytest.fixture
def drawn(run, monkeypatch):
    """Train with overrides; return (summary, {figure name: render.Figure}) of the run's figures,
    as the callbacks submitted them to be drawn."""
    jobs: list[render.Job] = []
    submit = render.submit
    monkeypatch.setattr(render, "submit", lambda job: jobs.append(job) or submit(job))

    def _drawn(*overrides: str) -> tuple[dict, dict[str, render.Figure]]:
        jobs.clear()
        summary = run(*overrides)
        found = {}
        for job in jobs:
            for fig in job.figures:
                assert fig.tag.startswith("figures/")
                found[fig.tag.split("/", 2)[2]] = fig
        return summary, found

    return _drawn


def _images(run_dir: Path) -> dict[str, bytes]:
    events = EventAccumulator(str(run_dir), size_guidance={"images": 0})
    events.Reload()
    return {tag: events.Images(tag)[-1].encoded_image_string for tag in events.Tags()["images"]}


# --- seed 002: one step tells its whole story -----------------------------------------------------
def test_seed002s_one_step_is_a_line_and_a_first_step_figure(drawn):
    summary, found = drawn("experiment=seed002")
    out = Path(summary["output_dir"])
    check_png((out / "loss_curve.png").read_bytes())
    images = _images(out)
    assert set(images) == {
        f"figures/seed002/{name}"
        for name in (
            "loss_curve",
            "parameters",
            "first_step",
            "data_fit",
            "graph",  # the computational graph (dashboard/graph.py)
            "loss_surface/w_b",
        )
    }
    for tag, png in images.items():  # the graph is as large as its nodes need
        check_png(png, png_size(png) if tag.endswith("/graph") else (plots.WIDTH, plots.HEIGHT))

    # The loss at the parameters before and after the step: a line of two points, not a dot.
    curves, _ = found["loss_curve"].args
    xs, losses = curves["train, at the parameters after each epoch"]
    assert xs == [0.0, 1.0]
    assert losses[0] == pytest.approx(5.387224, rel=1e-5)  # J(w=-0.2505, b=0.9166)
    assert losses[1] < losses[0]
    # The epoch's one full-batch step took its loss at the initial parameters, x = 0.
    assert curves["train, mean of the epoch's step losses"] == ([0.0], [pytest.approx(losses[0])])

    names, before, gradients, after, title = found["first_step"].args
    assert names == ["w", "b"]
    assert np.round(before, 4).tolist() == [-0.2505, 0.9166]
    assert np.round(gradients, 4).tolist() == [-10.0049, -4.1688]
    assert np.round(after, 6).tolist() == [-0.150451, 0.958288]
    assert "lr=0.01" in title

    # The optimum of y = w*x + b on x = 1, 2, 3 -> 1.5, 2.5, 3.5: w = 1, b = 0.5.
    epochs, values, _, optimum, _, _ = found["parameters"].args
    assert epochs == [0, 1]
    assert values["w"] == pytest.approx([-0.2505, -0.150451], abs=1e-6)
    assert optimum == pytest.approx({"w": 1.0, "b": 0.5}, abs=1e-5)
    assert found["loss_surface/w_b"].args[7] == pytest.approx((1.0, 0.5), abs=1e-5)


def test_the_loss_curve_and_the_parameter_plot_count_epochs_alike(drawn):
    _, found = drawn("model=quadratic", "trainer.max_epochs=3")  # 3 per-sample steps an epoch
    curves, _ = found["loss_curve"].args
    epochs = found["parameters"].args[0]
    assert epochs == [0, 1, 2, 3]  # epochs done, 0: the initial values
    assert curves["train, at the parameters after each epoch"][0] == epochs
    means, _ = curves["train, mean of the epoch's step losses"]
    # Each epoch's mean lies within that epoch: its steps' losses at 0, 1/3, 2/3 of it.
    assert means == pytest.approx([1 / 3, 4 / 3, 7 / 3])
    # The first step of an epoch of three: the value after it is w - lr * dL/dw (plain SGD).
    names, before, gradients, after, _ = found["first_step"].args
    assert names == ["w0", "w1", "w2"]
    for b, g, a in zip(before, gradients, after, strict=True):
        assert a == pytest.approx(b - 0.01 * g, abs=1e-6)


@pytest.mark.parametrize(
    ("overrides", "kind"),
    [
        (("model=linear", "trainer.max_epochs=3"), "data_fit"),
        (("model=quadratic", "trainer.max_epochs=3"), "data_fit"),
        (("model=cubic", "trainer.max_epochs=3"), "data_fit"),
        (("model=sigmoid_net", "trainer.max_epochs=3"), "targets_outputs"),
    ],
    ids=["linear", "quadratic", "cubic", "sigmoid_net"],
)
def test_every_model_has_a_data_and_fit_figure(drawn, overrides, kind):
    summary, found = drawn(*overrides)
    fit = found["data_fit"]
    assert fit.kind == kind
    images = _images(Path(summary["output_dir"]))
    (tag,) = [t for t in images if t.endswith("/data_fit")]
    check_png(images[tag])
    if kind == "data_fit":
        x, y, grid, curves, *_ = fit.args
        assert x.tolist() == [1.0, 2.0, 3.0] and y.tolist() == [2.0, 4.0, 6.0]
        before, after = list(curves)[:2]
        assert before == "before training" and after == "after 3 epochs"
        assert len(curves[before]) == len(grid) == len(curves[after])
    else:  # seed 000's one sample, two outputs: targets against the outputs before and after
        targets, before, after, outputs, _, output_range = fit.args
        assert targets.tolist() == [[pytest.approx(0.23), pytest.approx(-0.07)]]
        assert outputs == ["y1", "y2"] and output_range == (0.0, 1.0)
        assert abs(after[0, 0] - 0.23) < abs(before[0, 0] - 0.23)


# --- the optimum ----------------------------------------------------------------------------------
def test_the_least_squares_optimum_of_y_equals_2x_is_w_2():
    x = torch.tensor([[1.0], [2.0], [3.0]])
    y = 2 * x
    # Independently: w minimises sum((w x - y)^2), w = sum(x y) / sum(x^2).
    expected = float((x * y).sum() / (x * x).sum())
    assert expected == pytest.approx(2.0)
    optimum, why = figures.least_squares(LinearRegression(w=3.0), x, y)
    assert optimum == pytest.approx({"w": expected}) and why == ""
    # With the bias and seed 002's data: y = x + 0.5 exactly.
    optimum, _ = figures.least_squares(LinearRegression(w=0.0, bias=True), x, x + 0.5)
    assert optimum == pytest.approx({"w": 1.0, "b": 0.5}, abs=1e-5)
    # The quadratic on y = 2x: w0 = 0, w1 = 2, w2 = 0.
    optimum, _ = figures.least_squares(QuadraticRegression(), x, y)
    assert optimum == pytest.approx({"w0": 0.0, "w1": 2.0, "w2": 0.0}, abs=1e-4)


def test_with_an_l2_term_the_optimum_is_the_ridge_solution():
    x = torch.tensor([[1.0], [2.0], [3.0]])
    y = 2 * x
    l2 = 0.5
    model = LinearRegression(w=3.0, objective=Objective({"mse": 1.0}, l2=l2))
    # J = mean((w x - y)^2) + l2/2 w^2; dJ/dw = 2/n sum((w x - y) x) + l2 w = 0.
    n = 3
    expected = float((2 / n * (x * y).sum()) / (2 / n * (x * x).sum() + l2))
    optimum, _ = figures.least_squares(model, x, y)
    assert optimum == pytest.approx({"w": expected}, rel=1e-6)
    grid = torch.linspace(expected - 0.01, expected + 0.01, 201)
    losses = figures.LossSurface(model, x, y).losses({"w": grid.numpy()})
    assert abs(grid[int(np.argmin(losses))].item() - expected) < 2e-4  # the objective's minimum


def test_no_optimum_is_marked_where_there_is_no_closed_form():
    x = torch.tensor([[1.0], [2.0], [3.0]])
    mae = LinearRegression(objective=Objective({"mae": 1.0}))
    optimum, why = figures.least_squares(mae, x, 2 * x)
    assert optimum is None and "MAE" in why
    net_x = torch.tensor([[0.5, 0.3]])
    assert figures.least_squares(SigmoidNet(), net_x, torch.tensor([[0.23, -0.07]])) == (None, "")


def test_the_optimum_is_marked_on_the_profile_and_the_parameter_plot(drawn):
    _, found = drawn("model=linear", "trainer.max_epochs=3")  # seed 003: w = 3 on y = 2x
    assert found["parameters"].args[3] == pytest.approx({"w": 2.0})
    profile = found["loss_surface/w"].args
    grid, optimum = profile[0], profile[6]
    assert optimum == pytest.approx(2.0) and grid.min() < 2.0 < grid.max()


# --- how they are drawn ---------------------------------------------------------------------------
def _boxes(fig):
    renderer = fig.canvas.get_renderer()
    fig.draw(renderer)
    return renderer


def _overlap(a, b) -> bool:
    return a.x0 < b.x1 - 1 and b.x0 < a.x1 - 1 and a.y0 < b.y1 - 1 and b.y0 < a.y1 - 1


FIGURES = {
    "loss_curve": lambda: plots.loss_curve(
        {
            "train, at the parameters after each epoch": ([0, 1], [5.39, 4.28]),
            "train, mean of the epoch's step losses": ([0], [5.39]),
            "val, after each epoch": ([1], [4.5]),
        },
        "LinearRegression: training loss 5.38722 before training -> 4.27758 after 1 epoch",
    ),
    "parameters": lambda: plots.parameter_trajectories(
        [0, 1],
        {"w": [-0.2505, -0.150451], "b": [0.9166, 0.958288]},
        "LinearRegression: parameters by epoch (0: initial values)",
        {"w": 1.0, "b": 0.5},
        "",
        "least-squares optimum",
    ),
    "surface": lambda: plots.loss_surface(
        np.linspace(-0.5, 1.2, 30),
        np.linspace(0.4, 1.0, 20),
        np.add.outer(np.linspace(-0.5, 0.5, 20) ** 2, np.linspace(-1.5, 0.2, 30) ** 2) + 1e-3,
        [-0.2505, -0.150451],
        [0.9166, 0.958288],
        ("w", "b"),
        "LinearRegression: loss over w, b",
        (1.0, 0.5),
        "least-squares optimum",
    ),
    "profile": lambda: plots.loss_profile(
        np.linspace(1.8, 3.2, 60),
        (np.linspace(1.8, 3.2, 60) - 2) ** 2,
        [3.0, 2.6, 2.2],
        [1.0, 0.36, 0.04],
        "w",
        "LinearRegression: loss along w",
        2.0,
        "least-squares optimum",
    ),
    "data_fit": lambda: plots.data_fit(
        [1, 2, 3],
        [1.5, 2.5, 3.5],
        np.linspace(0.9, 3.1, 50),
        {
            "before training": np.linspace(0.7, 0.1, 50),
            "after 1 epoch": np.linspace(0.8, 0.5, 50),
            "least-squares fit": np.linspace(1.4, 3.6, 50),
        },
    ),
    "targets_outputs": lambda: plots.targets_outputs(
        np.array([[0.23, -0.07]]),
        np.array([[0.4769, 0.5287]]),
        np.array([[0.2375, 0.0730]]),
        ["y1", "y2"],
        "SigmoidNet: targets and outputs before and after 100 epochs (1 row)",
        (0.0, 1.0),
    ),
}


@pytest.mark.parametrize("make", list(FIGURES.values()), ids=list(FIGURES))
def test_legends_lie_off_the_data_and_nothing_is_cut_off(make):
    fig = make()
    renderer = _boxes(fig)
    ax = fig.axes[0]
    legend = ax.get_legend()
    frame = ax.get_window_extent(renderer)
    box = legend.get_window_extent(renderer)
    assert not _overlap(box, frame), "the legend covers the data"
    title = fig._suptitle.get_window_extent(renderer)
    assert not _overlap(box, title)
    for part in (box, title, frame):
        assert part.x0 >= 0 and part.y0 >= 0
        assert part.x1 <= plots.WIDTH + 0.5 and part.y1 <= plots.HEIGHT + 0.5


@pytest.mark.parametrize("make", [FIGURES["loss_curve"], FIGURES["parameters"]])
def test_epoch_axes_tick_whole_epochs_only(make):
    fig = make()
    _boxes(fig)
    ax = fig.axes[0]
    low, high = ax.get_xlim()
    ticks = [t for t in ax.get_xticks() if low <= t <= high]
    assert ticks == [0, 1]
    assert ax.get_xlabel() == plots.EPOCHS


def test_a_loss_over_more_than_two_decades_is_on_a_log_axis_and_says_so():
    wide = plots.loss_curve({"train": ([0, 1, 2], [10.0, 0.5, 0.01])})
    assert wide.axes[0].get_yscale() == "log" and "log" in wide.axes[0].get_ylabel()
    narrow = plots.loss_curve({"train": ([0, 1, 2], [10.0, 5.0, 1.0])})
    assert narrow.axes[0].get_yscale() == "linear" and narrow.axes[0].get_ylabel() == "loss"


def test_a_sweep_jobs_figures_sort_after_the_loss_group():
    plotter = figures.TrainingPlots(label="0_lr=0.1")
    tag = plotter.tag("loss_curve")
    assert tag == "figures/0_lr=0.1/loss_curve"
    # TensorBoard's compareTagNames puts digits and '_' first, then ASCII order: capitals first.
    assert sorted(["figures", "Loss", "params", "grads"])[0] == "Loss"


# --- the job file: data, never code ---------------------------------------------------------------
def _job(tmp_path: Path) -> render.Job:
    target = tmp_path / "curve.png"
    grid = np.linspace(-1, 1, 5)
    surface = render.Figure(
        "figures/t/loss_surface/a_b",
        "loss_surface",
        (grid, grid, np.add.outer(grid, grid) + 3, [1, 0.5], [1, 0.2], ("a", "b"), "s", None),
    )
    curve = render.Figure("figures/t/loss_curve", "loss_curve", ({"train": ([0, 1], [3.0, 1.0])},))
    return render.Job([curve, surface], files={curve.tag: str(target)}, step=3, graph=b"\x00\x01")


def test_a_job_file_round_trips_as_json(tmp_path: Path):
    job = _job(tmp_path)
    raw = render.dumps(job)
    assert json.loads(raw)["format"] == render.FORMAT
    back = render.loads(raw)
    assert back.files == job.files and back.step == 3 and back.graph == b"\x00\x01"
    args = back.figures[1].args
    assert isinstance(args[0], np.ndarray) and args[0].dtype == np.float64
    assert np.array_equal(args[2], job.figures[1].args[2]) and args[5] == ("a", "b")
    assert back.figures[0].args == ({"train": ([0, 1], [3.0, 1.0])},)
    value = {"nan": float("nan"), (1, "k"): np.float32(0.5), "ints": np.arange(3)}
    decoded = render.decode(json.loads(json.dumps(render.encode(value))))
    assert np.isnan(decoded["nan"]) and decoded[(1, "k")] == 0.5
    assert decoded["ints"].tolist() == [0, 1, 2]
    with pytest.raises(TypeError, match="plain data"):
        render.encode(object())


def _refused(tmp_path: Path, raw: bytes) -> str:
    kept = tmp_path / ".figures-1-0.json"
    kept.write_bytes(raw)
    done = subprocess.run([*RENDER, str(kept)], capture_output=True, text=True)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {kept}: JobFileError: "), done.stderr
    assert kept.is_file()  # kept as it was
    assert not (tmp_path / "curve.png").exists()  # nothing of it drawn
    return lines[0]


def test_a_pickle_left_as_a_job_file_is_refused_and_runs_nothing(tmp_path: Path):
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    line = _refused(tmp_path, pickle.dumps(Payload()))
    assert "not a figures file" in line
    assert not marker.exists()


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (lambda d: d["figures"][0].update(kind="system"), "figure kind 'system' is not one"),
        (lambda d: d["figures"][1].update(kind="__import__"), "is not one that is drawn"),
        (lambda d: d["figures"][0]["args"].append({"py/object": "os.system"}), "not write"),
        (lambda d: d.update(format="other"), "not a figures file"),
        (lambda d: d.update(files={"figures/t/loss_curve": "/tmp/x.sh"}), ".png path"),
        (lambda d: d.update(step="3"), "step"),
        (lambda d: d["figures"][1]["args"][0].update(dtype="O"), "dtype"),
    ],
    ids=["kind", "builtin", "object", "format", "target", "step", "dtype"],
)
def test_a_job_file_outside_the_allow_list_is_refused_in_one_line(tmp_path, change, words):
    data = json.loads(render.dumps(_job(tmp_path)))
    change(data)
    line = _refused(tmp_path, json.dumps(data).encode())
    assert words in line


def test_a_valid_job_file_is_drawn_by_the_command(tmp_path: Path):
    kept = tmp_path / ".figures-1-0.json"
    kept.write_bytes(render.dumps(_job(tmp_path)))
    done = subprocess.run([*RENDER, str(kept)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    check_png((tmp_path / "curve.png").read_bytes())
    assert not kept.exists()
