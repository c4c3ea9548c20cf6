"""The figures of a run and of a sweep, drawn with matplotlib from plain numbers.

Every figure is WIDTH x HEIGHT pixels. Matplotlib is imported only when a figure is made (it costs
start-up time), and figures are built on the Agg canvas directly, without pyplot: nothing
interactive, no global figure registry to leak into, nothing to close.

    loss_curve               the loss by epoch (seed 004's figure)
    parameter_trajectories   each parameter's value by epoch
    loss_profile             one parameter: the loss along it, the optimisation path on the curve
    loss_surface             two parameters: the loss over a grid, the optimisation path on it
    compare_loss_curves      one curve per job of a sweep
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

WIDTH, HEIGHT, DPI = 800, 500, 100


def figure(right: float = 0.97) -> tuple[Figure, Axes]:
    """A WIDTH x HEIGHT figure on an Agg canvas and its one axes.

    Margins are fixed rather than computed by a layout engine: that halves the drawing time."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(WIDTH / DPI, HEIGHT / DPI), dpi=DPI)
    FigureCanvasAgg(fig)
    fig.subplots_adjust(left=0.1, right=right, bottom=0.11, top=0.92)
    return fig, fig.add_subplot()


def save_png(fig: Figure, path: str | Path) -> Path:
    """Write the figure as a WIDTH x HEIGHT PNG."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=DPI)
    return path


def to_png(fig: Figure) -> bytes:
    """The figure as the bytes of a WIDTH x HEIGHT PNG (for a file, or a TensorBoard image)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def loss_curve(
    epochs: Sequence[float], curves: Mapping[str, Sequence[float]], title: str = "loss"
) -> Figure:
    """The loss by epoch, one line per curve (e.g. train and val); log scale when it spans 100x."""
    fig, ax = figure()
    for label, values in curves.items():
        marker = "." if len(values) <= 50 else None
        ax.plot(epochs[: len(values)], values, marker=marker, label=label)
    _log_scale_if_wide(ax, [v for values in curves.values() for v in values])
    ax.set(xlabel="epoch", ylabel="loss", title=title)
    ax.grid(True, alpha=0.3)
    if len(curves) > 1:
        ax.legend(loc="upper right")
    return fig


def parameter_trajectories(
    epochs: Sequence[float], values: Mapping[str, Sequence[float]], title: str = "parameters"
) -> Figure:
    """Each parameter's value by epoch (0: the initial value), one line each, labelled with its
    first and last value."""
    from matplotlib import colormaps

    fig, ax = figure(right=0.78)
    cmap = colormaps["tab20" if len(values) > 10 else "tab10"]
    for i, (name, series) in enumerate(values.items()):
        label = f"{name}: {series[0]:.4g} -> {series[-1]:.4g}"
        ax.plot(epochs, series, color=cmap(i % cmap.N), label=label)
    ax.set(xlabel="epochs completed", ylabel="value", title=title)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, borderaxespad=0)
    return fig


def loss_profile(
    grid: Sequence[float],
    losses: Sequence[float],
    path: Sequence[float],
    path_losses: Sequence[float],
    name: str,
    title: str = "loss",
) -> Figure:
    """The loss along one parameter, with the optimisation path (one point per epoch) on it."""
    fig, ax = figure()
    ax.plot(grid, losses, color="tab:blue", label="loss")
    ax.plot(path, path_losses, color="tab:orange", marker=".", label="path (per epoch)")
    _ends(ax, path, path_losses)
    _log_scale_if_wide(ax, [*losses, *path_losses])
    ax.set(xlabel=name, ylabel="loss", title=title)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best")
    return fig


def loss_surface(
    grid_a: Sequence[float],
    grid_b: Sequence[float],
    losses: np.ndarray,
    path_a: Sequence[float],
    path_b: Sequence[float],
    names: tuple[str, str],
    title: str = "loss",
) -> Figure:
    """log10 of the loss over a grid of two parameters (rows: b, columns: a), with the path."""
    fig, ax = figure(right=0.9)
    finite = np.ma.masked_invalid(np.asarray(losses, dtype=np.float64))
    positive = finite[finite > 0]
    floor = float(positive.min()) if positive.size else 1e-12
    log_loss = np.log10(np.ma.maximum(finite, floor))
    filled = ax.contourf(grid_a, grid_b, log_loss, levels=24, cmap="viridis")
    fig.colorbar(filled, ax=ax, label="log10 loss", fraction=0.05, pad=0.02)
    ax.plot(path_a, path_b, color="tab:red", marker=".", markersize=4, label="path (per epoch)")
    _ends(ax, path_a, path_b)
    ax.set(xlabel=names[0], ylabel=names[1], title=title)
    ax.legend(loc="upper right", fontsize=8, framealpha=0.6)
    return fig


def compare_loss_curves(
    curves: Mapping[str, tuple[Sequence[float], Sequence[float]]], title: str = "loss by job"
) -> Figure:
    """One loss-by-epoch line per job of a sweep."""
    fig, ax = figure()
    for label, (epochs, values) in curves.items():
        ax.plot(epochs, values, label=label)
    _log_scale_if_wide(ax, [v for _, values in curves.values() for v in values])
    ax.set(xlabel="epoch", ylabel="loss", title=title)
    ax.grid(True, alpha=0.3)
    if curves:
        small = len(curves) > 6
        ax.legend(loc="best", fontsize=7 if small else 9, ncols=1 + len(curves) // 12)
    return fig


def _ends(ax, xs: Sequence[float], ys: Sequence[float]) -> None:
    ax.scatter([xs[0]], [ys[0]], color="white", edgecolors="black", zorder=3, label="start")
    ax.scatter(
        [xs[-1]],
        [ys[-1]],
        marker="*",
        s=150,
        color="gold",
        edgecolors="black",
        zorder=3,
        label="end",
    )


def _log_scale_if_wide(ax, values: Sequence[float]) -> None:
    finite = [v for v in values if math.isfinite(v)]
    if finite and min(finite) > 0 and max(finite) / min(finite) > 100:
        ax.set_yscale("log")
