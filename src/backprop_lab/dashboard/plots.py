"""The figures of a run and of a sweep, drawn with matplotlib from plain numbers.

Every figure is WIDTH x HEIGHT pixels. Matplotlib is imported only when a figure is made (it costs
start-up time), and figures are built on the Agg canvas directly, without pyplot: nothing
interactive, no global figure registry to leak into, nothing to close.

    loss_curve               the loss by epoch (seed 004's figure)
    parameter_trajectories   each parameter's value by epoch
    loss_profile             one parameter: the loss along it, the optimisation path on the curve
    loss_surface             two parameters: the loss over a grid, the optimisation path on it
    first_step               each parameter before the first step, its gradient, and after
    data_fit                 one input, one output: the data and the model before and after
    targets_outputs          several outputs: each target against the output before and after
    compare_loss_curves      one curve per job of a sweep

Conventions every run figure keeps: the title at the top, the legend in rows beneath it, above
the axes (never over the data); epochs counted as epochs done, 0 being the initial values, with
whole-number ticks; a loss that spans more than two decades on a log axis, said in its label.
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
#: What the epoch axis of the loss curve and the parameter plot counts.
EPOCHS = "epochs done (0: before training)"
#: The figure fraction the title's line takes at the top.
TITLE = 0.075


def figure(right: float = 0.97) -> tuple[Figure, Axes]:
    """A WIDTH x HEIGHT figure on an Agg canvas and its one axes, room above it for the title.

    Margins are fixed rather than computed by a layout engine: that halves the drawing time (a
    legend above the axes is measured once drawn, and the axes made room for it)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(WIDTH / DPI, HEIGHT / DPI), dpi=DPI)
    FigureCanvasAgg(fig)
    fig.subplots_adjust(left=0.1, right=right, bottom=0.11, top=1 - TITLE)
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
    curves: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    title: str = "loss",
    xlabel: str = EPOCHS,
) -> Figure:
    """The loss by epoch: one line per curve, each (epochs done, losses), e.g. the training loss
    at the parameters after each epoch, the mean of each epoch's step losses, the validation
    loss. Markers where a curve has few points, so a one-step run is a line from before to after."""
    styles = ["-", "--", ":", "-."]
    fig, ax = figure()
    for i, (label, (xs, ys)) in enumerate(curves.items()):
        marker = "o" if len(ys) <= 50 else None
        ax.plot(xs, ys, linestyle=styles[i % 4], marker=marker, markersize=4, label=label)
    logged = _log_scale_if_wide(ax, [v for _, ys in curves.values() for v in ys])
    ax.set(xlabel=xlabel, ylabel="loss (log scale)" if logged else "loss")
    _epoch_ticks(ax)
    ax.grid(True, alpha=0.3)
    _title_and_legend(fig, ax, title)
    return fig


def parameter_trajectories(
    epochs: Sequence[float],
    values: Mapping[str, Sequence[float]],
    title: str = "parameters",
    optimum: Mapping[str, float] | None = None,
    note: str = "",
    optimum_label: str = "optimum",
) -> Figure:
    """Each parameter's value by epoch (0: the initial value), one line each, labelled with its
    first and last value; where the optimum is known, a dashed line at it in the same colour."""
    from matplotlib import colormaps

    optimum = optimum or {}
    labels = {}
    for name, series in values.items():
        labels[name] = f"{name}: {series[0]:.4g} -> {series[-1]:.4g}"
        if name in optimum:
            labels[name] += f" (opt. {optimum[name]:.4g})"
    fig, ax = figure(right=0.75)
    cmap = colormaps["tab20" if len(values) > 10 else "tab10"]
    for i, (name, series) in enumerate(values.items()):
        colour = cmap(i % cmap.N)
        if name in optimum:
            ax.axhline(optimum[name], color=colour, linestyle="--", linewidth=1, alpha=0.8)
        marker = "o" if len(series) <= 50 else None
        ax.plot(epochs, series, color=colour, marker=marker, markersize=3, label=labels[name])
    ax.set(xlabel=EPOCHS, ylabel="value")
    _epoch_ticks(ax)
    ax.grid(True, alpha=0.3)
    _title(fig, title)
    left = _legend_right(fig, ax)
    notes = [note] if note else []
    if optimum:
        notes.insert(0, f"dashed: the {optimum_label}")
    if notes:
        import textwrap

        columns = max(20, int((0.99 - left) * WIDTH / 6.0))
        text = "\n".join(textwrap.fill(n, columns) for n in notes)
        fig.text(left, 0.11, text, fontsize=8, va="bottom", color="dimgray")
    return fig


def loss_profile(
    grid: Sequence[float],
    losses: Sequence[float],
    path: Sequence[float],
    path_losses: Sequence[float],
    name: str,
    title: str = "loss",
    optimum: float | None = None,
    optimum_label: str = "optimum",
) -> Figure:
    """The loss along one parameter, with the optimisation path (one point per epoch) on it."""
    fig, ax = figure()
    ax.plot(grid, losses, color="tab:blue", label="loss")
    ax.plot(path, path_losses, color="tab:orange", marker=".", label="path (per epoch)")
    _ends(ax, path, path_losses)
    if optimum is not None:
        ax.axvline(optimum, color="tab:red", linestyle="--", linewidth=1.2, label=optimum_label)
    logged = _log_scale_if_wide(ax, [*losses, *path_losses])
    ax.set(xlabel=name, ylabel="loss (log scale)" if logged else "loss")
    ax.grid(True, alpha=0.3)
    _title_and_legend(fig, ax, title)
    return fig


def loss_surface(
    grid_a: Sequence[float],
    grid_b: Sequence[float],
    losses: np.ndarray,
    path_a: Sequence[float],
    path_b: Sequence[float],
    names: tuple[str, str],
    title: str = "loss",
    optimum: tuple[float, float] | None = None,
    optimum_label: str = "optimum",
) -> Figure:
    """log10 of the loss over a grid of two parameters (rows: b, columns: a), with the path."""
    fig, ax = figure(right=0.9)
    finite = np.ma.masked_invalid(np.asarray(losses, dtype=np.float64))
    positive = finite[finite > 0]
    floor = float(positive.min()) if positive.size else 1e-12
    log_loss = np.log10(np.ma.maximum(finite, floor))
    filled = ax.contourf(grid_a, grid_b, log_loss, levels=24, cmap="viridis")
    ax.plot(path_a, path_b, color="tab:red", marker=".", markersize=4, label="path (per epoch)")
    _ends(ax, path_a, path_b)
    if optimum:
        ax.scatter(
            [optimum[0]],
            [optimum[1]],
            marker="X",
            s=110,
            color="tab:red",
            edgecolors="white",
            zorder=4,
            label=optimum_label,
        )
    ax.set(xlabel=names[0], ylabel=names[1])
    _title_and_legend(fig, ax, title, width=0.74 * WIDTH)  # the colorbar takes the rest
    fig.colorbar(filled, ax=ax, label="log10 loss", fraction=0.05, pad=0.02, use_gridspec=False)
    return fig


def first_step(
    names: Sequence[str],
    before: Sequence[float],
    gradients: Sequence[float | None],
    after: Sequence[float | None],
    title: str = "the first step",
) -> Figure:
    """The first step, parameter by parameter: a bar for its gradient dL/dparam, and beside it
    its value before the step, the gradient, its value after and the change, as numbers (None:
    not known, e.g. a parameter that does not train)."""
    from matplotlib.transforms import blended_transform_factory

    fig, ax = figure()
    fig.subplots_adjust(left=0.1, right=0.46, top=0.82)
    rows = list(range(len(names)))
    grads = [g if g is not None else 0.0 for g in gradients]
    colours = ["tab:red" if g > 0 else "tab:blue" for g in grads]
    ax.barh(rows, grads, color=colours, height=0.6)
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_yticks(rows, list(names))
    ax.set_ylim(len(names) - 0.5, -0.5)  # the first parameter on top
    ax.set_xlabel("dL/dparam at the first step")
    ax.grid(True, axis="x", alpha=0.3)
    wide = max((abs(g) for g in grads), default=0.0) or 1.0
    ax.set_xlim(-1.15 * wide if min(grads) < 0 else -0.05 * wide, 1.15 * wide)
    if max(grads) <= 0:
        ax.set_xlim(-1.15 * wide, 0.05 * wide)
    at = blended_transform_factory(fig.transFigure, ax.transData)
    columns = [(0.58, "before"), (0.71, "dL/dparam"), (0.84, "after"), (0.96, "change")]
    small = 10 if len(names) <= 4 else 9 if len(names) <= 8 else 8
    for x, heading in columns:
        fig.text(x, 0.84, heading, ha="right", va="bottom", fontsize=small, weight="bold")
    for row, (b, g, a) in enumerate(zip(before, gradients, after, strict=True)):
        cells = [b, g, a, None if a is None else a - b]
        for (x, _), value in zip(columns, cells, strict=True):
            text = "-" if value is None else f"{value:.6g}"
            fig.text(x, row, text, transform=at, ha="right", va="center", fontsize=small)
    _title(fig, title)
    fig.text(
        0.5,
        0.915,
        "red: dL/dparam > 0, a descent step lowers it; blue: < 0, it rises",
        ha="center",
        va="top",
        fontsize=8.5,
        color="dimgray",
    )
    return fig


def data_fit(
    x: Sequence[float],
    y: Sequence[float],
    grid: Sequence[float],
    curves: Mapping[str, Sequence[float]],
    title: str = "data and fit",
    names: tuple[str, str] = ("x", "y"),
    data_label: str = "training data",
) -> Figure:
    """The training data as points and the model's curve over ``grid`` for each entry of
    ``curves`` (e.g. before training, after, the least-squares fit)."""
    labels = [data_label, *curves]
    fig, ax = figure()
    few = len(x) <= 200
    size, alpha = (28, 0.9) if few else (6, 0.35)
    ax.scatter(x, y, s=size, color="black", alpha=alpha, zorder=3, label=labels[0])
    styles = {0: ("tab:gray", "--"), 1: ("tab:orange", "-"), 2: ("tab:red", ":")}
    for i, (label, values) in enumerate(curves.items()):
        colour, line = styles.get(i, (None, "-."))
        ax.plot(grid, values, color=colour, linestyle=line, linewidth=2, label=label)
    ax.set(xlabel=names[0], ylabel=names[1])
    ax.grid(True, alpha=0.3)
    _title_and_legend(fig, ax, title)
    return fig


def targets_outputs(
    targets: np.ndarray,
    before: np.ndarray,
    after: np.ndarray,
    outputs: Sequence[str],
    title: str = "targets and outputs",
    output_range: tuple[float, float] | None = None,
) -> Figure:
    """Each output against its target (rows x outputs), before training and after, one colour per
    output; on the diagonal an output equals its target. Outputs outside ``output_range`` (a
    sigmoid's (0, 1)) cannot be reached: that band is shaded."""
    from matplotlib import colormaps

    targets, before, after = (np.asarray(a, dtype=np.float64) for a in (targets, before, after))
    labels = [f"{o}: before -> after" for o in outputs]
    fig, ax = figure(right=0.95)
    values = np.concatenate([targets.ravel(), before.ravel(), after.ravel()])
    values = values[np.isfinite(values)]
    low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 1.0)
    pad = 0.12 * max(high - low, 0.1)
    low, high = low - pad, high + pad
    cmap = colormaps["tab10"]
    arrows = targets.shape[0] * targets.shape[1] <= 60
    for k in range(len(outputs)):
        colour = cmap(k % cmap.N)
        t, b, a = targets[:, k], before[:, k], after[:, k]
        ax.scatter(t, b, s=45, facecolors="white", edgecolors=[colour], zorder=3, linewidths=1.5)
        ax.scatter(t, a, s=45, color=[colour], zorder=4, label=labels[k])
        if arrows:
            for ti, bi, ai in zip(t, b, a, strict=True):
                ax.annotate(
                    "",
                    xy=(ti, ai),
                    xytext=(ti, bi),
                    arrowprops={"arrowstyle": "->", "color": colour, "lw": 1.2},
                    zorder=2,
                )
        if len(t) <= 3:
            for ti, bi, ai in zip(t, b, a, strict=True):
                ax.annotate(
                    f"{bi:.4g} -> {ai:.4g}\n(target {ti:.4g})",
                    xy=(ti, ai),
                    xytext=(8, 0),
                    textcoords="offset points",
                    fontsize=8,
                    va="center",
                    color=colour,
                )
    ax.plot([low, high], [low, high], color="black", linewidth=0.8, label="output = target")
    if output_range is not None:
        lo, hi = output_range
        beyond = f"beyond the outputs' range ({lo:g}, {hi:g})"
        if low < lo:
            ax.axhspan(low, lo, color="0.85", zorder=0, label=beyond)
        if high > hi:
            ax.axhspan(hi, high, color="0.85", zorder=0, label="_" if low < lo else beyond)
    ax.set(xlim=(low, high), ylim=(low, high), xlabel="target", ylabel="output")
    ax.grid(True, alpha=0.3)
    fig.text(0.95, 0.015, "hollow: before training; filled: after", ha="right", fontsize=8)
    _title_and_legend(fig, ax, title)
    return fig


def compare_loss_curves(
    curves: Mapping[str, tuple[Sequence[float], Sequence[float]]], title: str = "loss by job"
) -> Figure:
    """One loss-by-epoch line per job of a sweep."""
    fig, ax = figure()
    for label, (epochs, values) in curves.items():
        ax.plot(epochs, values, label=label)
    logged = _log_scale_if_wide(ax, [v for _, values in curves.values() for v in values])
    ax.set(xlabel="epoch", ylabel="loss (log scale)" if logged else "loss", title=title)
    ax.grid(True, alpha=0.3)
    if curves:
        small = len(curves) > 6
        ax.legend(loc="best", fontsize=7 if small else 9, ncols=1 + len(curves) // 12)
    return fig


def _title_and_legend(fig, ax, title: str, width: float | None = None) -> None:
    """The title at the top of the figure, and the legend in rows between it and the axes, in
    as many columns as fit ``width`` pixels (the axes' width), measured; the axes' top is moved
    down to make room for it."""
    head = _title(fig, title)
    labels = ax.get_legend_handles_labels()[1]
    if not labels:
        return
    box = ax.get_position()
    room = (width or box.width * WIDTH) + 0.02 * WIDTH  # it may reach past the axes a little
    renderer = fig.canvas.get_renderer()
    for columns in range(len(labels), 0, -1):
        legend = ax.legend(
            loc="lower left",
            bbox_to_anchor=(0, 1.005),
            ncols=columns,
            fontsize=9,
            frameon=False,
            borderaxespad=0.2,
            handlelength=2.2,
            columnspacing=1.2,
        )
        extent = legend.get_window_extent(renderer)
        if extent.width <= room:
            break
    top = 1 - head - extent.height / HEIGHT
    ax.set_position([box.x0, box.y0, box.width, top - box.y0])


def _title(fig, title: str) -> float:
    """The title at the top left, in a smaller font where it is long, wrapped where it is longer
    still; the figure fraction it takes (TITLE for one line)."""
    import textwrap

    renderer = fig.canvas.get_renderer()
    text = fig.suptitle(title, x=0.02, y=0.985, ha="left", va="top", fontsize=11)
    for size in (10, 9):
        if text.get_window_extent(renderer).width <= 0.96 * WIDTH:
            return TITLE
        text.set_fontsize(size)
    if text.get_window_extent(renderer).width <= 0.96 * WIDTH:
        return TITLE
    wrapped = textwrap.fill(title, 110)
    text.set_text(wrapped)
    return TITLE + 0.035 * wrapped.count("\n")


def _legend_right(fig, ax) -> float:
    """The legend to the right of the axes, the axes narrowed so all of it is in the figure;
    the figure fraction where the legend begins."""
    legend = ax.legend(loc="upper right", bbox_to_anchor=(0.995, 1 - TITLE), fontsize=8)
    legend.set_bbox_to_anchor((0.995, 1 - TITLE), transform=fig.transFigure)
    left = legend.get_window_extent(fig.canvas.get_renderer()).x0 / WIDTH
    box = ax.get_position()
    ax.set_position([box.x0, box.y0, max(0.3, left - 0.015 - box.x0), box.height])
    return left


def _epoch_ticks(ax) -> None:
    """Whole epochs on the x axis, never 0.2 of one."""
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


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


def _log_scale_if_wide(ax, values: Sequence[float]) -> bool:
    """A log y axis where the values span more than two decades; whether it is one."""
    finite = [v for v in values if math.isfinite(v)]
    if finite and min(finite) > 0 and max(finite) / min(finite) > 100:
        ax.set_yscale("log")
        return True
    return False


from backprop_lab.dashboard.drawn_graph import computational_graph  # noqa: E402, F401
