"""The figures: valid PNGs of the promised size with something drawn; matplotlib loaded lazily."""

from __future__ import annotations

import io
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from backprop_lab.dashboard import plots

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk, after checking the signature and chunk type."""
    assert data[:8] == PNG_SIGNATURE, "not a PNG"
    length, kind = struct.unpack(">I4s", data[8:16])
    assert kind == b"IHDR" and length == 13
    return struct.unpack(">II", data[16:24])


def check_png(data: bytes, size: tuple[int, int] = (plots.WIDTH, plots.HEIGHT)) -> None:
    """A PNG of ``size`` that decodes, and is not one flat colour (something was drawn)."""
    from PIL import Image

    assert png_size(data) == size
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        assert image.size == size
        pixels = np.asarray(image.convert("RGB"))
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 20, "a (nearly) blank image"


def test_importing_plots_does_not_load_matplotlib():
    code = "import sys, backprop_lab.dashboard.plots; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize(
    "make",
    [
        lambda: plots.loss_curve(
            {"train": ([0, 1, 2, 3], [4.0, 1.0, 0.1, 0.01]), "val": ([1, 2, 3], [5, 2, 1])}
        ),
        lambda: plots.parameter_trajectories([0, 1, 2], {"w0": [1, 0.5, 0.2], "w1": [1, 2, 3]}),
        lambda: plots.parameter_trajectories(
            [0, 1], {"w": [-0.25, -0.15], "b": [0.9, 0.95]}, "t", {"w": 1.0, "b": 0.5}, "a note"
        ),
        lambda: plots.loss_profile(
            np.linspace(1, 3, 50),
            (np.linspace(1, 3, 50) - 2) ** 2,
            [3, 2.5, 2.1],
            [1, 0.25, 0.01],
            "w",
            "t",
            2.0,
        ),
        lambda: plots.loss_surface(
            np.linspace(-1, 1, 30),
            np.linspace(-2, 2, 20),
            np.add.outer(np.linspace(-2, 2, 20) ** 2, np.linspace(-1, 1, 30) ** 2),
            [1, 0.5, 0.1],
            [2, 1, 0.2],
            ("a", "b"),
            "t",
            (0.0, 0.0),
        ),
        lambda: plots.first_step(["w", "b"], [-0.25, 0.9], [-10.0, None], [-0.15, None]),
        lambda: plots.data_fit(
            [1, 2, 3],
            [2, 4, 6],
            np.linspace(0.9, 3.1, 20),
            {"before": np.linspace(2.7, 9.3, 20), "after": np.linspace(1.8, 6.2, 20)},
        ),
        lambda: plots.targets_outputs(
            np.array([[0.23, -0.07]]),
            np.array([[0.48, 0.53]]),
            np.array([[0.24, 0.07]]),
            ["y1", "y2"],
            "t",
            (0.0, 1.0),
        ),
        lambda: plots.compare_loss_curves(
            {"0: lr=0.1": ([0, 1], [3, 1]), "1: lr=1": ([0, 1], [3, 2])}
        ),
    ],
    ids=[
        "loss_curve",
        "parameters",
        "parameters-optimum",
        "profile",
        "surface",
        "first_step",
        "data_fit",
        "targets_outputs",
        "sweep",
    ],
)
def test_every_figure_saves_a_png_of_the_promised_size(tmp_path: Path, make):
    fig = make()
    path = plots.save_png(fig, tmp_path / "sub" / "figure.png")
    check_png(path.read_bytes())
    check_png(plots.to_png(fig))  # the bytes a TensorBoard image holds


def test_surface_survives_zero_infinite_and_nan_losses(tmp_path: Path):
    grid = np.linspace(0, 1, 10)
    losses = np.add.outer(grid, grid)  # 0 at a corner: log10 needs a floor
    losses[3, 4], losses[5, 5] = np.inf, np.nan  # a diverged corner of the grid
    fig = plots.loss_surface(grid, grid, losses, [1, 0], [1, 0], ("a", "b"))
    check_png(plots.save_png(fig, tmp_path / "s.png").read_bytes())


def test_check_png_rejects_a_blank_image(tmp_path: Path):
    fig, _ = plots.figure()
    fig.axes[0].set_axis_off()
    data = plots.save_png(fig, tmp_path / "blank.png").read_bytes()
    assert png_size(data) == (plots.WIDTH, plots.HEIGHT)
    with pytest.raises(AssertionError, match="blank"):
        check_png(data)


def test_a_sweep_draws_every_jobs_loss_curve_in_one_figure(tmp_path: Path, monkeypatch):
    from backprop_lab.tools import sweep

    for num, lr, losses in ((0, "0.1", [3.0, 1.0, 0.5]), (1, "0.01", [3.0, 2.5, 2.0])):
        job = tmp_path / f"{num}_model=quadratic,optimizer.lr={lr}"
        (job / ".hydra").mkdir(parents=True)
        (job / ".hydra" / "overrides.yaml").write_text(f"- model=quadratic\n- optimizer.lr={lr}\n")
        (job / "summary.json").write_text('{"status": "finished", "best": {"value": 1.0}}')
        rows = "".join(f"{e},{3 * (e + 1)},{v}\n" for e, v in enumerate(losses))
        (job / "metrics.csv").write_text("epoch,step,Loss/train\n" + rows)
    drawn = {}
    original = plots.compare_loss_curves
    monkeypatch.setattr(
        plots, "compare_loss_curves", lambda curves, title: drawn.update(curves) or original(curves)
    )
    path = sweep.plot_loss_curves(tmp_path, sweep.collect(tmp_path), tmp_path / "loss_curves.png")
    assert path == tmp_path / "loss_curves.png"
    check_png(path.read_bytes())
    # Each job is labelled by its number and what sets it apart (the shared model=... is left out).
    assert drawn == {
        "0: optimizer.lr=0.1": ([0.0, 1.0, 2.0], [3.0, 1.0, 0.5]),
        "1: optimizer.lr=0.01": ([0.0, 1.0, 2.0], [3.0, 2.5, 2.0]),
    }


def test_a_sweep_without_metrics_draws_nothing(tmp_path: Path):
    from backprop_lab.tools import sweep

    assert sweep.plot_loss_curves(tmp_path, [], tmp_path / "loss_curves.png") is None
    assert not (tmp_path / "loss_curves.png").exists()
