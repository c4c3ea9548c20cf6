"""The run's figures as numbers: the loss by epoch, the parameters' path, the first step, the data
and the fit, the loss over a grid of parameters. They are computed here, where the model is, and
drawn by render.py (matplotlib, plots.py).

    TrainingPlots   Images tab: figures/<label>/<figure>, one run's figures together
    LossCurvePNG    <output dir>/loss_curve.png

One convention for epochs throughout: x counts the epochs done, 0 being the initial parameters.
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

#: (epochs done, parameter values by seed name): the optimisation path, one point per epoch.
Point = tuple[int, dict[str, float]]
#: Rows of a figure's scatter of the data, at most (the model's curves take any number).
SCATTER_ROWS = 1000


def training_xy(trainer: pl.Trainer) -> tuple[Tensor, Tensor] | None:
    """The training (x, y) of the run's DataModule, or None where it has none."""
    return getattr(getattr(trainer, "datamodule", None), "train_xy", None)


def training_rows(xy: tuple[Tensor, Tensor], model: SeedModel, limit: int) -> tuple[Tensor, Tensor]:
    """Up to ``limit`` rows of (x, y), on the model's device and dtype."""
    param = next(model.parameters())
    x, y = (t[:limit].to(param.device, param.dtype) for t in xy)
    return x, y


class TrainingPlots(pl.Callback):
    """Images tab, once at the end of training, each figure under ``figures/<label>/``:

    - ``loss_curve``: the training loss at the parameters after each epoch (0: the initial ones,
      so even one step is a line from before to after), the mean of each epoch's step losses, and
      the validation loss;
    - ``parameters``: each parameter's value by epoch, from its initial value, and the optimum
      where it is known;
    - ``first_step``: each parameter before the first step, its gradient dL/dparam, and after;
    - ``data_fit``: the training data and the model's curve before and after training (and the
      least-squares fit); with several inputs or outputs, targets against outputs;
    - ``loss_surface/<a>`` (one trainable parameter) or ``loss_surface/<a>_<b>`` (two; with more,
      up to ``max_surfaces`` slices through the parameters that moved most, the others held at
      their final values): the training loss over a grid, the path and the optimum drawn on it.

    The optimum is the least-squares solution on the training rows (the ridge solution with an
    L2 term) for a model whose output is linear in its parameters (linear, quadratic, cubic)
    under an MSE objective; under MAE there is no closed form, and the figures say so.

    The path is the parameters at the end of each epoch (one ``.tolist()`` per epoch, nothing per
    step but a check at the end of each batch, until the first step's values are kept). The
    losses and surfaces are evaluated with ``torch.func.vmap`` on up to ``max_rows`` training
    rows. render.py draws the figures once ``fit`` has returned.
    """

    def __init__(
        self, max_surfaces: int = 3, grid_points: int = 61, max_rows: int = 4096, label: str = "run"
    ) -> None:
        if max_surfaces < 0 or grid_points < 2 or max_rows < 1:
            raise ValueError(
                "max_surfaces must be >= 0, grid_points >= 2 and max_rows >= 1, got "
                f"{max_surfaces}, {grid_points}, {max_rows}"
            )
        self.max_surfaces, self.grid_points, self.max_rows = max_surfaces, grid_points, max_rows
        self.label = str(label)
        self.path: list[Point] = []
        self._loss: render.Figure | None = None

    def tag(self, figure: str) -> str:
        return f"figures/{self.label}/{figure}"

    def on_train_start(self, trainer: pl.Trainer, pl_module: SeedModel) -> None:
        history, step = pl_module.history, trainer.global_step
        self.path = []
        if step == 0:
            self.path = [(0, pl_module.scalar_values())]
        elif history and history[-1]["step"] == step:  # resumed at the end of an epoch
            self.path = [(int(history[-1]["epoch"]) + 1, pl_module.scalar_values())]
        self._loss = None

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: SeedModel) -> None:
        self.path.append((trainer.current_epoch + 1, pl_module.scalar_values()))

    def on_train_end(self, trainer: pl.Trainer, pl_module: SeedModel) -> None:
        logdirs = [lg.log_dir for lg in tensorboard_loggers(trainer)]
        if not logdirs:
            return
        figures = list(self.figures(trainer, pl_module))
        if figures:
            render.submit(render.Job(figures, logdirs=logdirs, step=trainer.global_step))

    def full_path(self, model: SeedModel) -> list[Point]:
        """The path from the initial parameters: a resumed run has them from its first step."""
        if (not self.path or self.path[0][0] != 0) and model.first_step:
            return [(0, dict(model.first_step["parameters"])), *self.path]
        return list(self.path)

    def loss_figure(self, trainer: pl.Trainer, model: SeedModel) -> render.Figure | None:
        """The loss curve (made once a run: the Images tab and loss_curve.png share it)."""
        if self._loss is None:
            xy = training_xy(trainer)
            surface = None
            if xy is not None:
                surface = LossSurface(model, *training_rows(xy, model, self.max_rows))
            note = _rows_note(xy, self.max_rows)
            self._loss = loss_curve_figure(
                model, self.tag("loss_curve"), self.full_path(model), surface, note
            )
        return self._loss

    def figures(self, trainer: pl.Trainer, model: SeedModel) -> Iterator[render.Figure]:
        """The figures as numbers: loss curve, parameters, first step, data and fit, surfaces."""
        name = type(model).__name__
        path = self.full_path(model)
        xy = training_xy(trainer)
        note = _rows_note(xy, self.max_rows)
        surface = None
        optimum: dict[str, float] | None = None
        why = ""
        if xy is not None:
            x, y = training_rows(xy, model, self.max_rows)
            surface = LossSurface(model, x, y)
            optimum, why = least_squares(model, x, y)
        kind = "ridge optimum (MSE + L2)" if model.objective.l2 else "least-squares optimum"
        loss = self.loss_figure(trainer, model)
        if loss is not None:
            yield loss
        if len(path) > 1:
            epochs, values = _with_gaps(
                [e for e, _ in path], {k: [p[k] for _, p in path] for k in path[0][1]}
            )
            title = f"{name}: parameters by epoch (0: initial values)"
            shown = None if optimum is None else {k: optimum[k] for k in values if k in optimum}
            args = (epochs, values, title, shown, why, kind)
            yield render.Figure(self.tag("parameters"), "parameter_trajectories", args)
        step = first_step_figure(trainer, model, self.tag("first_step"))
        if step is not None:
            yield step
        if xy is not None and path:
            x, y = surface.x, surface.y  # type: ignore[union-attr]  # made with xy
            fitted = kind.replace("optimum", "fit")
            fit = data_fit_figure(
                trainer, model, self.tag("data_fit"), path, x, y, optimum, fitted, note
            )
            if fit is not None:
                yield fit
        if surface is None or len(path) < 2 or not self.max_surfaces:
            return
        trainable = [k for k in path[0][1] if k in surface.trainable]
        points = {k: np.array([p[k] for _, p in path]) for k in trainable}
        pairs = surface_pairs(points, self.max_surfaces)
        exact = len(trainable) <= 2
        label = kind if exact else f"{kind} of all parameters"
        for names in pairs:
            tag = self.tag("loss_surface/" + "_".join(names))
            yield surface.figure(names, points, self.grid_points, note, optimum, label, tag)


class LossCurvePNG(pl.Callback):
    """Writes the loss curve (seed 004's figure) to ``path`` at the end of training, drawn by
    render.py: the Images tab's own figure where TrainingPlots runs too (drawn once for both)."""

    def __init__(self, path: str, label: str = "run", max_rows: int = 4096) -> None:
        self.path = Path(path)
        if self.path.suffix.lower() != ".png":
            raise ValueError(f"the loss curve is a PNG file: a path ending in .png, not {path}")
        self.label, self.max_rows = str(label), max_rows
        self.plots: TrainingPlots | None = None
        self.own: TrainingPlots | None = None

    def on_train_start(self, trainer: pl.Trainer, pl_module: SeedModel) -> None:
        found = [cb for cb in trainer.callbacks if isinstance(cb, TrainingPlots)]  # type: ignore[attr-defined]
        self.plots = found[0] if found else None
        self.own = None
        if self.plots is None:  # record the path here, for the loss at each epoch's parameters
            self.own = TrainingPlots(max_surfaces=0, max_rows=self.max_rows, label=self.label)
            self.own.on_train_start(trainer, pl_module)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: SeedModel) -> None:
        if self.own is not None:
            self.own.on_train_epoch_end(trainer, pl_module)

    def on_train_end(self, trainer: pl.Trainer, pl_module: SeedModel) -> None:
        source = self.plots or self.own
        if trainer.is_global_zero and pl_module.history and source is not None:
            figure = source.loss_figure(trainer, pl_module)
            if figure is not None:
                render.submit(render.Job([figure], files={figure.tag: str(self.path)}))


def loss_curve_figure(
    model: SeedModel,
    tag: str,
    path: list[Point],
    surface: LossSurface | None = None,
    note: str = "",
) -> render.Figure | None:
    """Seed 004's figure, as numbers, on the epochs-done axis: the training objective J at the
    parameters after each epoch (x = 0 the initial ones; on the training rows a surface holds),
    the mean of each epoch's step losses (each taken before its step's update, so drawn at the
    mean position of those steps: e + (k - 1) / 2k for an epoch e of k steps, the loss at the
    epoch's start for one full-batch step), and the validation loss after each epoch."""
    history = model.history
    curves: dict[str, tuple[list[float], list[float]]] = {}
    at_path: list[float] = []
    if surface is not None and path:
        trainable = [k for k in path[0][1] if k in surface.trainable]
        if trainable:
            settings = {k: np.array([p[k] for _, p in path]) for k in trainable}
            at_path = surface.losses(settings).tolist()
            label = "train, at the parameters after each epoch"
            xs, ys = _with_gaps([e for e, _ in path], {"J": at_path})
            curves[label] = (xs, ys["J"])
    steps_before = 0
    means: tuple[list[float], list[float]] = ([], [])
    for row in history:
        steps = max(1, int(row["step"]) - steps_before)
        steps_before = int(row["step"])
        if "Loss/train" in row:
            means[0].append(row["epoch"] + (steps - 1) / (2 * steps))
            means[1].append(row["Loss/train"])
    if means[1]:
        curves["train, mean of the epoch's step losses"] = means
    val = [(row["epoch"] + 1.0, row["Loss/val"]) for row in history if "Loss/val" in row]
    if val:
        curves["val, after each epoch"] = ([e for e, _ in val], [v for _, v in val])
    if not curves:
        return None
    name = type(model).__name__
    if len(at_path) > 1:
        done = path[-1][0]
        title = (
            f"{name}: training loss {at_path[0]:.6g} before training -> {at_path[-1]:.6g} after "
            f"{done} epoch{'s' if done != 1 else ''}{note}"
        )
    elif means[1]:
        title = f"{name}: loss by epoch (last epoch's mean {means[1][-1]:.6g})"
    elif at_path:
        title = f"{name}: training loss {at_path[0]:.6g} before training{note}"
    else:
        title = f"{name}: loss by epoch"
    return render.Figure(tag, "loss_curve", (curves, title))


def first_step_figure(trainer: pl.Trainer, model: SeedModel, tag: str) -> render.Figure | None:
    """Each parameter before the run's first step, its gradient there and its value after it
    (model.first_step), as numbers."""
    step = model.first_step
    if not step:
        return None
    after = step.get("after")
    names = list(step["parameters"])
    before = [step["parameters"][k] for k in names]
    gradients = [step["gradients"].get(k) for k in names]
    later = [None if after is None else after.get(k) for k in names]
    optimizer = trainer.optimizers[0] if trainer.optimizers else None
    how = ""
    if optimizer is not None:
        lr = optimizer.param_groups[0].get("lr")
        how = f" ({type(optimizer).__name__}" + (f", lr={lr:g})" if lr is not None else ")")
    title = f"{type(model).__name__}: the first step{how}, each parameter before, dL/dparam, after"
    return render.Figure(tag, "first_step", (names, before, gradients, later, title))


@torch.no_grad()
def outputs_at(model: SeedModel, values: Mapping[str, float], x: Tensor) -> Tensor:
    """The model's outputs on ``x`` with the seed-named parameters set to ``values`` (the others
    as they are); the model itself is left as it was."""
    slots = model.seed_slots()
    params = {name: p.detach().clone() for name, p in model.named_parameters()}
    for key, value in values.items():
        name, index = slots[key]
        params[name].view(-1)[index] = value
    return torch.func.functional_call(model, params, (x,))


def data_fit_figure(
    trainer: pl.Trainer,
    model: SeedModel,
    tag: str,
    path: list[Point],
    x: Tensor,
    y: Tensor,
    optimum: Mapping[str, float] | None = None,
    optimum_label: str = "least-squares fit",
    note: str = "",
) -> render.Figure | None:
    """The training data and the model before training (the path's first point) and after: for
    one input and one output, the points and the curves; otherwise each target against the
    output before and after."""
    if not len(x):
        return None
    name = type(model).__name__
    datamodule = getattr(trainer, "datamodule", None)
    x_names = list(getattr(datamodule, "x_columns", None) or [])
    y_names = list(getattr(datamodule, "y_columns", None) or [])
    done = path[-1][0]
    after = f"after {done} epoch{'s' if done != 1 else ''}"
    initial = path[0][1]
    if x.shape[1] == 1 and y.shape[1] == 1:
        low, high = float(x.min()), float(x.max())
        pad = 0.05 * (high - low or 1.0)
        grid = torch.linspace(low - pad, high + pad, 200, dtype=x.dtype, device=x.device)[:, None]
        with torch.no_grad():
            curves = {
                "before training": _numbers(outputs_at(model, initial, grid))[:, 0],
                after: _numbers(model(grid))[:, 0],
            }
        if optimum is not None:
            curves[optimum_label] = _numbers(outputs_at(model, optimum, grid))[:, 0]
        shown = _spread(len(x), SCATTER_ROWS)
        names = (x_names[0] if x_names else "x", y_names[0] if y_names else "y")
        some = f", {len(shown)} shown" if len(shown) < len(x) else ""
        data = f"training data ({len(x)} row{'s' if len(x) != 1 else ''}{some})"
        args = (
            _numbers(x[shown])[:, 0],
            _numbers(y[shown])[:, 0],
            _numbers(grid)[:, 0],
            curves,
            f"{name}: the data and the model before and after training{note}",
            names,
            data,
        )
        return render.Figure(tag, "data_fit", args)
    shown = _spread(len(x), 500)
    rows = x[shown]
    with torch.no_grad():
        before = outputs_at(model, initial, rows).to(torch.float64).cpu().numpy()
        now = model(rows).to(torch.float64).cpu().numpy()
    outputs = y_names if len(y_names) == y.shape[1] else [f"y{k + 1}" for k in range(y.shape[1])]
    count = f"{len(shown)} of {len(x)} rows" if len(shown) < len(x) else f"{len(x)} row"
    count += "s" if len(shown) > 1 and not count.endswith("rows") else ""
    title = f"{name}: targets and outputs before and {after} ({count}){note}"
    targets = y[shown].to(torch.float64).cpu().numpy()
    pairs = (targets, before, now, outputs, title, model.output_range)
    return render.Figure(tag, "targets_outputs", pairs)


def least_squares(model: SeedModel, x: Tensor, y: Tensor) -> tuple[dict[str, float] | None, str]:
    """The minimum of the objective in closed form, by seed name, where there is one: a model
    whose output is linear in its parameters (linear, quadratic, cubic) under MSE, solved on the
    rows with np.linalg.lstsq (with an L2 term, the ridge solution). Otherwise None, and why in
    words where a learner would expect one."""
    terms = model.objective.terms
    if y.shape[1] != 1:
        return None, ""
    slots = model.seed_slots()
    params = dict(model.named_parameters())
    if not all(params[name].requires_grad for name, _ in slots.values()):
        return None, ""
    names = list(slots)
    # The columns of the design matrix: the outputs with one parameter at 1, the others at 0.
    columns = [
        _numbers(outputs_at(model, {k: float(k == j) for k in names}, x))[:, 0] for j in names
    ]
    design = np.stack(columns, axis=1)
    now = model.scalar_values()
    probe = {k: now[k] + 1.0 + 0.5 * i for i, k in enumerate(names)}
    for setting in (now, probe):  # linear in its parameters: X theta is the model's output
        expected = design @ np.array([setting[k] for k in names])
        got = _numbers(outputs_at(model, setting, x))[:, 0]
        scale = max(1.0, float(np.max(np.abs(expected))))
        if not np.allclose(got, expected, rtol=1e-4, atol=1e-5 * scale):
            return None, ""
    if set(terms) != {"mse"}:
        return None, "no optimum marked: the objective has an MAE term (no closed form)"
    target = _numbers(y)[:, 0]
    weight = math.sqrt(2 * terms["mse"] / len(target))
    system, right = weight * design, weight * target
    if model.objective.l2:  # J = w * mean((X theta - y)^2) + l2/2 * ||W||^2, W the penalised
        penalised = [i for i, k in enumerate(names) if slots[k][0] in model.penalised]
        rows = np.zeros((len(penalised), len(names)))
        rows[range(len(penalised)), penalised] = math.sqrt(model.objective.l2)
        system = np.vstack([system, rows])
        right = np.concatenate([right, np.zeros(len(penalised))])
    theta, _, rank, _ = np.linalg.lstsq(system, right, rcond=None)
    if rank < len(names):  # e.g. a cubic's 4 parameters on 3 rows: a line of optima
        return None, (
            f"no optimum marked: {len(names)} parameters, {rank} independent rows; the "
            "least-squares optimum is not unique"
        )
    theta[np.abs(theta) < 1e-9 * max(1.0, float(np.max(np.abs(theta))))] = 0.0
    return dict(zip(names, theta.tolist(), strict=True)), ""


def _with_gaps(
    epochs: list[int], series: Mapping[str, list[float]]
) -> tuple[list[float], dict[str, list[float]]]:
    """The epochs and the series with a NaN between two epochs more than one apart (a resumed
    run has its initial values, then the epochs it trained): a line is not drawn across epochs
    that were not recorded."""
    xs: list[float] = []
    ys: dict[str, list[float]] = {k: [] for k in series}
    for i, epoch in enumerate(epochs):
        if i and epoch - epochs[i - 1] > 1:
            xs.append((epoch + epochs[i - 1]) / 2)
            for k in series:
                ys[k].append(math.nan)
        xs.append(epoch)
        for k, values in series.items():
            ys[k].append(values[i])
    return xs, ys


def _numbers(t: Tensor) -> np.ndarray:
    return t.detach().to(torch.float64).cpu().numpy()


def _spread(n: int, limit: int) -> np.ndarray:
    """Up to ``limit`` row indices spread evenly over ``n`` rows."""
    if n <= limit:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, limit).round().astype(np.int64))


def _rows_note(xy: tuple[Tensor, Tensor] | None, limit: int) -> str:
    total = 0 if xy is None else len(xy[0])
    return "" if total <= limit else f", on {limit} of {total} training rows"


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
        self.slots = model.seed_slots()
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
        self,
        names: tuple[str, ...],
        path: Mapping[str, np.ndarray],
        points: int,
        note: str = "",
        optimum: Mapping[str, float] | None = None,
        optimum_label: str = "least-squares optimum",
        tag: str | None = None,
    ) -> render.Figure:
        """The loss along one parameter, or over two, with the path (and the optimum, its
        coordinates among ``names``, inside the grid): a figure as numbers."""
        model = type(self.model).__name__
        tag = tag or "figures/run/loss_surface/" + "_".join(names)
        best = [optimum[k] for k in names] if optimum and all(k in optimum for k in names) else None
        spans = [
            np.append(path[k], best[i]) if best is not None else path[k]
            for i, k in enumerate(names)
        ]
        if len(names) == 1:
            (a,) = names
            grid = _span(spans[0], points * 3)
            profile = (
                grid,
                self.losses({a: grid}),
                path[a],
                self.losses({a: path[a]}),
                a,
                f"{model}: loss along {a}{note}",
                None if best is None else best[0],
                optimum_label,
            )
            return render.Figure(tag, "loss_profile", profile)
        a, b = names
        grid_a, grid_b = _span(spans[0], points), _span(spans[1], points)
        mesh_a, mesh_b = np.meshgrid(grid_a, grid_b)
        losses = self.losses({a: mesh_a.ravel(), b: mesh_b.ravel()}).reshape(mesh_a.shape)
        others = "" if len(self.trainable) == 2 else ", the others at their final values"
        title = f"{model}: loss over {a}, {b}{others}{note}"
        mark = None if best is None else (best[0], best[1])
        args = (grid_a, grid_b, losses, path[a], path[b], (a, b), title, mark, optimum_label)
        return render.Figure(tag, "loss_surface", args)


def _span(values: np.ndarray, points: int) -> np.ndarray:
    """A grid over the values' range, widened by a fifth on each side (or to +-0.5 if still)."""
    low, high = float(np.min(values)), float(np.max(values))
    width = max(high - low, 0.1 * max(abs(low), abs(high)), 1e-3)
    middle = (low + high) / 2
    return np.linspace(middle - 0.7 * width, middle + 0.7 * width, points)
