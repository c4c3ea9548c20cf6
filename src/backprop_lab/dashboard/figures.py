"""The run's figures as numbers: the loss by epoch, the parameters' path, the loss over a grid of
parameters. They are computed here, where the model is, and drawn by render.py (matplotlib).

    TrainingPlots   Images tab: loss curve, parameter trajectories, loss surfaces with the path
    LossCurvePNG    <output dir>/loss_curve.png
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Mapping
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch
from torch import Tensor

from backprop_lab.callbacks import tensorboard_loggers
from backprop_lab.dashboard import render
from backprop_lab.models import SeedModel


def training_xy(trainer: pl.Trainer) -> tuple[Tensor, Tensor] | None:
    """The training (x, y) of the run's DataModule, or None where it has none."""
    return getattr(getattr(trainer, "datamodule", None), "train_xy", None)


def training_rows(xy: tuple[Tensor, Tensor], model: SeedModel, limit: int) -> tuple[Tensor, Tensor]:
    """Up to ``limit`` rows of (x, y), on the model's device and dtype."""
    param = next(model.parameters())
    x, y = (t[:limit].to(param.device, param.dtype) for t in xy)
    return x, y


class TrainingPlots(pl.Callback):
    """Images tab, once at the end of training:

    - ``plots/loss_curve``: train (and val) loss by epoch;
    - ``plots/parameters``: each parameter's value by epoch, from its initial value;
    - ``plots/loss_surface/<a>`` (one trainable parameter) or ``plots/loss_surface/<a>_<b>``
      (two; with more, up to ``max_surfaces`` slices through the parameters that moved most, the
      others held at their final values): the training loss over a grid, the path drawn on it.

    The path is the parameters at the end of each epoch (one ``.tolist()`` per epoch, nothing per
    step). The surface is evaluated with ``torch.func.vmap`` on up to ``max_rows`` training rows.
    render.py draws the figures once ``fit`` has returned.
    """

    def __init__(self, max_surfaces: int = 3, grid_points: int = 61, max_rows: int = 4096) -> None:
        if max_surfaces < 0 or grid_points < 2 or max_rows < 1:
            raise ValueError(
                "max_surfaces must be >= 0, grid_points >= 2 and max_rows >= 1, got "
                f"{max_surfaces}, {grid_points}, {max_rows}"
            )
        self.max_surfaces, self.grid_points, self.max_rows = max_surfaces, grid_points, max_rows
        self.path: list[dict[str, float]] = []

    def on_train_start(self, trainer: pl.Trainer, pl_module: SeedModel) -> None:
        self.path = [pl_module.scalar_values()]

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: SeedModel) -> None:
        self.path.append(pl_module.scalar_values())

    def on_train_end(self, trainer: pl.Trainer, pl_module: SeedModel) -> None:
        logdirs = [lg.log_dir for lg in tensorboard_loggers(trainer)]
        if not logdirs:
            return
        figures = list(self.figures(trainer, pl_module))
        if figures:
            render.submit(render.Job(figures, logdirs=logdirs, step=trainer.global_step))

    def figures(self, trainer: pl.Trainer, model: SeedModel) -> Iterator[render.Figure]:
        """The figures as numbers: loss curve, parameter trajectories, loss surfaces."""
        if model.history:
            yield loss_curve_figure(model)
        name = type(model).__name__
        if len(self.path) > 1:
            epochs = list(range(len(self.path)))
            values = {k: [p[k] for p in self.path] for k in self.path[0]}
            title = f"{name}: parameters by epoch (0: initial values)"
            args = (epochs, values, title)
            yield render.Figure("plots/parameters", "parameter_trajectories", args)
        xy = training_xy(trainer) if self.max_surfaces else None
        if xy is None or len(self.path) < 2:
            return
        total = len(xy[0])
        note = "" if total <= self.max_rows else f", on {self.max_rows} of {total} training rows"
        surface = LossSurface(model, *training_rows(xy, model, self.max_rows))
        trainable = [k for k in self.path[0] if k in surface.trainable]
        path = {k: np.array([p[k] for p in self.path]) for k in trainable}
        for names in surface_pairs(path, self.max_surfaces):
            yield surface.figure(names, path, self.grid_points, note)


class LossCurvePNG(pl.Callback):
    """Writes the loss curve (seed 004's figure) to ``path`` at the end of training, drawn by
    render.py."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)

    def on_train_end(self, trainer: pl.Trainer, pl_module: SeedModel) -> None:
        if trainer.is_global_zero and pl_module.history:
            figure = loss_curve_figure(pl_module)
            render.submit(render.Job([figure], files={figure.tag: str(self.path)}))


def loss_curve_figure(model: SeedModel) -> render.Figure:
    """Seed 004's figure, as numbers: the training (and validation) loss by epoch."""
    history = model.history
    curves = {
        label: [row[key] for row in history if key in row]
        for label, key in (("train", "train/loss_epoch"), ("val", "val/loss_epoch"))
        if any(key in row for row in history)
    }
    epochs = [row["epoch"] for row in history]
    last = curves["train"][-1] if "train" in curves else float("nan")
    title = f"{type(model).__name__}: loss by epoch, mean over each (last {last:.6g})"
    return render.Figure("plots/loss_curve", "loss_curve", (epochs, curves, title))


def surface_pairs(path: Mapping[str, np.ndarray], limit: int) -> list[tuple[str, ...]]:
    """Which parameters to draw the loss over: the only one, the two, or pairs of those that moved
    most (the first ``limit`` pairs among the fewest top movers that give ``limit`` pairs)."""
    names = list(path)
    if limit < 1 or not names:
        return []
    if len(names) <= 2:
        return [tuple(names)]
    moved = sorted(names, key=lambda k: -abs(path[k][-1] - path[k][0]))
    top = 2
    while top < len(names) and math.comb(top, 2) < limit:
        top += 1
    chosen = [k for k in names if k in moved[:top]]  # in the model's own order
    pairs: list[tuple[str, ...]] = list(itertools.combinations(chosen, 2))
    return pairs[:limit]


class LossSurface:
    """The training objective J at many settings of a few seed-named parameters at once (vmap),
    every other parameter at its current value."""

    def __init__(self, model: SeedModel, x: Tensor, y: Tensor) -> None:
        self.model, self.x, self.y = model, x, y
        self.slots = seed_slots(model)
        params = dict(model.named_parameters())
        self.trainable = {k for k, (name, _) in self.slots.items() if params[name].requires_grad}

    @torch.no_grad()
    def losses(self, settings: Mapping[str, np.ndarray]) -> np.ndarray:
        """J for each row of ``settings`` (seed name -> values, all of one length)."""
        params = dict(self.model.named_parameters())
        n = len(next(iter(settings.values())))
        touched = {self.slots[k][0] for k in settings}
        batched = {
            name: params[name].detach().expand(n, *params[name].shape).clone() for name in touched
        }
        for key, values in settings.items():
            name, index = self.slots[key]
            column = torch.as_tensor(values, dtype=batched[name].dtype, device=batched[name].device)
            batched[name].view(n, -1)[:, index] = column

        def loss(p: dict[str, Tensor]) -> Tensor:
            y_hat = torch.func.functional_call(self.model, p, (self.x,))
            weights = [p.get(w, getattr(self.model, w)) for w in self.model.penalised]
            return self.model.objective(y_hat, self.y, weights)[0]

        chunk = max(1, 2**20 // max(1, self.y.numel()))
        vloss = torch.func.vmap(loss)
        out = [vloss({k: v[i : i + chunk] for k, v in batched.items()}) for i in range(0, n, chunk)]
        return torch.cat(out).to(torch.float64).cpu().numpy()

    def figure(
        self, names: tuple[str, ...], path: Mapping[str, np.ndarray], points: int, note: str = ""
    ) -> render.Figure:
        """The loss along one parameter, or over two, with the path: a figure as numbers."""
        model = type(self.model).__name__
        tag = "plots/loss_surface/" + "_".join(names)
        if len(names) == 1:
            (a,) = names
            grid = _span(path[a], points * 3)
            profile = (
                grid,
                self.losses({a: grid}),
                path[a],
                self.losses({a: path[a]}),
                a,
                f"{model}: loss along {a}{note}",
            )
            return render.Figure(tag, "loss_profile", profile)
        a, b = names
        grid_a, grid_b = _span(path[a], points), _span(path[b], points)
        mesh_a, mesh_b = np.meshgrid(grid_a, grid_b)
        losses = self.losses({a: mesh_a.ravel(), b: mesh_b.ravel()}).reshape(mesh_a.shape)
        others = "" if len(self.trainable) == 2 else ", the others at their final values"
        title = f"{model}: loss over {a}, {b}{others}{note}"
        args = (grid_a, grid_b, losses, path[a], path[b], (a, b), title)
        return render.Figure(tag, "loss_surface", args)


def seed_slots(model: SeedModel) -> dict[str, tuple[str, int]]:
    """Where each seed-named scalar lives: (parameter name, index into the flattened parameter).

    Found by handing ``seed_names`` tensors that hold their own flat positions."""
    params = dict(model.named_parameters())
    starts, codes, offset = {}, {}, 0
    for name, p in params.items():
        starts[name] = offset
        codes[name] = torch.arange(offset, offset + p.numel(), dtype=torch.float64).view(p.shape)
        offset += p.numel()
    slots = {}
    for key, code in model.seed_names(codes).items():
        flat = int(code)
        name = next(n for n, s in starts.items() if s <= flat < s + params[n].numel())
        slots[key] = (name, flat - starts[name])
    return slots


def _span(values: np.ndarray, points: int) -> np.ndarray:
    """A grid over the values' range, widened by a fifth on each side (or to +-0.5 if still)."""
    low, high = float(np.min(values)), float(np.max(values))
    width = max(high - low, 0.1 * max(abs(low), abs(high)), 1e-3)
    middle = (low + high) / 2
    return np.linspace(middle - 0.7 * width, middle + 0.7 * width, points)
