"""What a person sees of a run: TensorBoard's Graphs, Images and Text tabs, the loss-curve PNG and
the progress bar. One concern per callback.

Per training step only the progress bar does anything (it reads the clock); the plots record the
parameters once per epoch. Graphs, figures and the text card are made once, in ``on_train_end``:
after the last step, while the loggers are still open. The figures are computed here as numbers
and drawn by a helper process (backprop_lab/dashboard/render.py), so ``fit`` does not wait for matplotlib.
Each writes on the global-rank-0 process only.

    ComputationGraph   Graphs tab: the traced forward pass; Text: the graph backward() walks
    TrainingPlots      Images: loss curve, parameter trajectories, loss surfaces with the path
    RunCard            Text: the run's results and composed config
    LossCurvePNG       <output dir>/loss_curve.png
    ProgressBar        one bar for the run, once it has lasted more than a moment
"""

from __future__ import annotations

import itertools
import logging
import math
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import ProgressBar as _ProgressBar
from torch import Tensor

from backprop_lab.callbacks import Callback, best_epoch, tensorboard_loggers, tensorboards
from backprop_lab.config import task_overrides
from backprop_lab.dashboard import render
from backprop_lab.models import SeedModel
from backprop_lab.rows import as_rows, format_row

log = logging.getLogger(__name__)


def training_rows(trainer: pl.Trainer, model: SeedModel, limit: int) -> tuple[Tensor, ...] | None:
    """Up to ``limit`` rows of the training (x, y), on the model's device and dtype, or None."""
    xy = getattr(trainer.datamodule, "train_xy", None)
    if xy is None:
        return None
    param = next(model.parameters())
    return tuple(t[:limit].to(param.device, param.dtype) for t in xy)


# --- Graphs ---------------------------------------------------------------------------------------
class ComputationGraph(Callback):
    """The model's computational graph, once, at the end of training.

    Graphs tab: the forward pass on one batch of training data, traced with ``torch.fx`` (every
    operation with its output shape; ``torch.jit.trace``, which ``SummaryWriter.add_graph`` uses,
    is deprecated). Text tab, ``graph/backward``: the graph that ``loss.backward()`` walks for
    that batch, from the loss back through each ``grad_fn`` to the ``AccumulateGrad`` nodes that
    write ``.grad`` (seed 001's subject).
    """

    def __init__(self, max_lines: int = 200) -> None:
        self.max_lines = max_lines

    def on_train_end(self, trainer: pl.Trainer, pl_module: SeedModel) -> None:
        writers = tensorboards(trainer)
        batch_size = getattr(trainer.datamodule, "batch_size", 1)
        batch = training_rows(trainer, pl_module, batch_size) if writers else None
        if batch is None:
            return
        try:
            graph = forward_graph(pl_module, batch[0])
        except (torch.fx.proxy.TraceError, TypeError, RuntimeError, NotImplementedError) as e:
            log.warning(
                "no graph in TensorBoard: torch.fx cannot trace %s (%s)",
                type(pl_module).__name__,
                e,
            )
            graph = None
        text = backward_graph(pl_module, batch, self.max_lines)
        from tensorboard.compat.proto.event_pb2 import Event

        for writer in writers:
            if graph is not None:
                writer._get_file_writer().add_event(Event(graph_def=graph.SerializeToString()))
            writer.add_text("graph/backward", text, trainer.global_step)


def forward_graph(model: torch.nn.Module, x: Tensor):
    """The forward pass at input ``x`` as a TensorBoard GraphDef: one node per operation, named
    ``<Model>/<op>``, with the inputs and parameters it reads and the shape it gives."""
    from tensorboard.compat.proto.attr_value_pb2 import AttrValue
    from tensorboard.compat.proto.graph_pb2 import GraphDef
    from tensorboard.compat.proto.node_def_pb2 import NodeDef
    from tensorboard.compat.proto.tensor_shape_pb2 import TensorShapeProto
    from tensorboard.compat.proto.versions_pb2 import VersionDef
    from torch.fx.passes.shape_prop import ShapeProp

    traced = torch.fx.symbolic_trace(model)
    with torch.no_grad():
        ShapeProp(traced).propagate(x)
    scope = type(model).__name__
    names: dict[torch.fx.Node, str] = {}
    nodes = []
    for node in traced.graph.nodes:
        if node.op == "placeholder":
            names[node], op = f"input/{node.name}", "input"
        elif node.op == "output":
            names[node], op = "output/output", "output"
        elif node.op == "get_attr":
            names[node], op = f"{scope}/{node.target}", "parameter"
        else:
            names[node], op = f"{scope}/{node.name}", _op_name(node)
        attr = {}
        meta = node.meta.get("tensor_meta")
        if meta is not None and hasattr(meta, "shape"):
            dims = [TensorShapeProto.Dim(size=int(d)) for d in meta.shape]
            attr["_output_shapes"] = AttrValue(
                list=AttrValue.ListValue(shape=[TensorShapeProto(dim=dims)])
            )
            attr["dtype"] = AttrValue(s=str(meta.dtype).encode())
        if node.op in ("call_function", "call_method", "call_module"):
            args = ", ".join(names[a] if a in names else repr(a) for a in node.args)
            attr["expression"] = AttrValue(s=f"{op}({args})".encode())
        inputs = [names[a] for a in node.all_input_nodes]
        nodes.append(NodeDef(name=names[node], op=op, input=inputs, attr=attr))
    return GraphDef(node=nodes, versions=VersionDef(producer=22))


def _op_name(node: torch.fx.Node) -> str:
    target = node.target
    if node.op == "call_module":
        return str(target)
    if isinstance(target, str):
        return target
    return getattr(target, "__name__", str(target))


def backward_graph(model: SeedModel, batch: tuple[Tensor, Tensor], max_lines: int = 200) -> str:
    """The autograd graph of the batch's loss as a tree of grad_fn nodes, in Markdown."""
    with torch.enable_grad():
        _, loss, _ = model.compute_loss(batch)
    names = {id(p): name for name, p in model.named_parameters()}
    lines: list[str] = []
    seen: set[int] = set()

    def walk(node: Any, prefix: str, last: bool, depth: int) -> None:
        if len(lines) >= max_lines:
            return
        branch = "" if depth == 0 else ("└─ " if last else "├─ ")
        label = type(node).__name__
        variable = getattr(node, "variable", None)
        if variable is not None:  # AccumulateGrad: a leaf that requires grad
            name = names.get(id(variable), "tensor")
            label += f"  -> {name}.grad {tuple(variable.shape)}"
        children = [n for n, _ in getattr(node, "next_functions", ()) if n is not None]
        if id(node) in seen and children:
            lines.append(f"{prefix}{branch}{label}  (as above)")
            return
        seen.add(id(node))
        lines.append(f"{prefix}{branch}{label}")
        inner = prefix + ("" if depth == 0 else ("   " if last else "│  "))
        for i, child in enumerate(children):
            walk(child, inner, i == len(children) - 1, depth + 1)

    if loss.grad_fn is None:
        return "The loss does not depend on any parameter that requires a gradient."
    walk(loss.grad_fn, "", True, 0)
    if len(lines) >= max_lines:
        lines.append(f"... (cut at {max_lines} lines)")
    rows = len(batch[0])
    return (
        f"The graph `loss.backward()` walks for one batch ({rows} row(s) of the training data), "
        "from the loss back to the parameters. Each node is a `grad_fn`; `AccumulateGrad` adds "
        "the gradient into a parameter's `.grad`. Inputs that do not require a gradient (the "
        "data) have no node.\n\n```text\n" + "\n".join(lines) + "\n```"
    )


# --- Images ---------------------------------------------------------------------------------------
class TrainingPlots(Callback):
    """Images tab, once at the end of training:

    - ``plots/loss_curve``: train (and val) loss by epoch;
    - ``plots/parameters``: each parameter's value by epoch, from its initial value;
    - ``plots/loss_surface/<a>`` (one trainable parameter) or ``plots/loss_surface/<a>_<b>``
      (two; with more, up to ``max_surfaces`` slices through the parameters that moved most, the
      others held at their final values): the training loss over a grid, the path drawn on it.

    The path is the parameters at the end of each epoch (one ``.tolist()`` per epoch, nothing per
    step). The surface is evaluated with ``torch.func.vmap`` on up to ``max_rows`` training rows.
    The figures are drawn by the helper process of backprop_lab/dashboard/render.py, started here so that
    its imports overlap training; the images go into the run's log dir once its writer closes.
    """

    def __init__(self, max_surfaces: int = 3, grid_points: int = 61, max_rows: int = 4096) -> None:
        if max_surfaces < 0 or grid_points < 2 or max_rows < 1:
            raise ValueError(
                "max_surfaces must be >= 0, grid_points >= 2 and max_rows >= 1, got "
                f"{max_surfaces}, {grid_points}, {max_rows}"
            )
        self.max_surfaces, self.grid_points, self.max_rows = max_surfaces, grid_points, max_rows
        self.path: list[dict[str, float]] = []
        render.start()

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
        rows = training_rows(trainer, model, self.max_rows) if self.max_surfaces else None
        if rows is None or len(self.path) < 2:
            return
        total = len(trainer.datamodule.train_xy[0])
        note = "" if total <= self.max_rows else f", on {self.max_rows} of {total} training rows"
        surface = LossSurface(model, *rows)
        trainable = [k for k in self.path[0] if k in surface.trainable]
        path = {k: np.array([p[k] for p in self.path]) for k in trainable}
        for names in surface_pairs(path, self.max_surfaces):
            yield surface.figure(names, path, self.grid_points, note)


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
    return list(itertools.combinations(chosen, 2))[:limit]


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
            args = (
                grid,
                self.losses({a: grid}),
                path[a],
                self.losses({a: path[a]}),
                a,
                f"{model}: loss along {a}{note}",
            )
            return render.Figure(tag, "loss_profile", args)
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


# --- Text -----------------------------------------------------------------------------------------
class RunCard(Callback):
    """Text tab, ``run/card``, once at the end of training: the run's final results (loss, best
    epoch, metrics, parameters, predictions before and after) and its composed config.

    The config is ``config_file`` (Hydra's ``.hydra/config.yaml`` of the run) resolved, or, when
    there is none, the model, loss, optimizer and data config the checkpoint also holds.
    """

    def __init__(
        self,
        metric: str = "train/loss_epoch",
        mode: str = "min",
        config_file: str | None = None,
    ) -> None:
        self.metric, self.mode, self.config_file = metric, mode, config_file
        self._started = 0.0
        self._before: list[list[float]] | None = None

    def on_train_start(self, trainer: pl.Trainer, pl_module: SeedModel) -> None:
        self._started = time.perf_counter()
        inputs = self._inputs(pl_module)
        self._before = pl_module.predict_at(inputs) if inputs and trainer.is_global_zero else None

    def on_train_end(self, trainer: pl.Trainer, pl_module: SeedModel) -> None:
        writers = tensorboards(trainer)
        if writers:
            text = self.card(trainer, pl_module)
            for writer in writers:
                writer.add_text("run/card", text, trainer.global_step)

    def card(self, trainer: pl.Trainer, model: SeedModel) -> str:
        seconds = time.perf_counter() - self._started
        head = (
            f"**{type(model).__name__}**: {trainer.current_epoch} epoch(s), "
            f"{trainer.global_step} step(s) in {seconds:.2f} s on {trainer.strategy.root_device}"
        )
        overrides = task_overrides()
        if overrides:
            head += "  \noverrides: " + " ".join(f"`{o}`" for o in overrides)
        rows = []
        if model.last_loss is not None:
            rows.append(("final loss (last step)", f"{float(model.last_loss):.6g}"))
        best = best_epoch(model.history, self.metric, self.mode)
        if best:
            rows.append((f"best {self.metric}", f"{best['value']:.6g} (epoch {best['epoch']})"))
        final = model.history[-1] if model.history else {}
        rows += [(f"final {k}", f"{v:.6g}") for k, v in final.items() if "/" in k]
        rows += [(k, f"{v:.6g}") for k, v in model.scalar_values().items()]
        inputs = self._inputs(model)
        if inputs:
            after = model.predict_at(inputs)
            before = self._before or [None] * len(inputs)
            for x, b, a in zip(inputs, before, after, strict=True):
                shown = format_row(a) if b is None else (f"{format_row(b)} -> {format_row(a)}")
                rows.append((f"prediction at x={format_row(x)}", shown))
        table = "| | |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in rows)
        return f"{head}\n\n{table}\n\n**config**\n\n```yaml\n{self._config(model)}```"

    @staticmethod
    def _inputs(model: SeedModel) -> list[list[float]] | None:
        return as_rows((model.run_config or {}).get("predict_at"))

    def _config(self, model: SeedModel) -> str:
        from omegaconf import OmegaConf
        from omegaconf.errors import OmegaConfBaseException

        path = Path(self.config_file) if self.config_file else None
        if path is not None and path.is_file():
            config = OmegaConf.load(path)
            try:
                return OmegaConf.to_yaml(config, resolve=True)
            except OmegaConfBaseException:  # a resolver only the run's own process had
                return OmegaConf.to_yaml(config)
        return OmegaConf.to_yaml(OmegaConf.create(model.run_config or {}))


# --- Files ----------------------------------------------------------------------------------------
class LossCurvePNG(Callback):
    """Writes the loss curve (seed 004's figure) to ``path`` at the end of training, drawn by the
    helper process of backprop_lab/dashboard/render.py."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)
        render.start()

    def on_train_end(self, trainer: pl.Trainer, pl_module: SeedModel) -> None:
        if trainer.is_global_zero and pl_module.history:
            figure = loss_curve_figure(pl_module)
            render.submit(render.Job([figure], files={figure.tag: str(self.path)}))


# --- Console --------------------------------------------------------------------------------------
class ProgressBar(Callback, _ProgressBar):
    """One progress bar for the whole run: epoch, steps, last loss, time left.

    On a terminal (stderr) the bar appears once training has lasted ``delay`` seconds, is redrawn
    at most every ``refresh`` seconds and is erased at the end, so a run of a moment prints only
    its results. When stderr is not a terminal (a log file, a cluster job), a plain line is
    written every ``log_every`` seconds instead. Per step it costs one clock read, and Lightning
    calls only its ``on_train_batch_end`` (backprop_lab.callbacks.Callback).
    """

    def __init__(self, delay: float = 2.0, refresh: float = 0.2, log_every: float = 30.0) -> None:
        super().__init__()
        self.delay, self.refresh, self.log_every = delay, refresh, log_every
        self._enabled = True
        self._tty = False
        self._bar = None
        self._started = self._next = 0.0

    @property
    def is_enabled(self) -> bool:
        return self._enabled

    @property
    def is_disabled(self) -> bool:
        return not self._enabled

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._tty = sys.stderr.isatty()
        self._started = time.monotonic()
        self._next = self._started + (self.delay if self._tty else max(self.delay, self.log_every))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if self._enabled and time.monotonic() >= self._next:
            self._show(trainer, pl_module)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._close()

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        self._close()

    def print(self, *args: Any, **kwargs: Any) -> None:
        if self._bar is not None:
            self._bar.write(kwargs.get("sep", " ").join(map(str, args)), file=sys.stderr)
        else:
            print(*args, **kwargs)

    def _show(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        now = time.monotonic()
        total = trainer.estimated_stepping_batches
        total = int(total) if math.isfinite(total) else None
        step, epoch = trainer.global_step, trainer.current_epoch + 1
        epochs = f"{epoch}/{trainer.max_epochs}" if trainer.max_epochs > 0 else str(epoch)
        last = getattr(pl_module, "last_loss", None)
        loss = f"loss {float(last):.4g}" if last is not None else ""
        if self._tty:
            if self._bar is None:
                from tqdm.auto import tqdm

                self._bar = tqdm(
                    total=total,
                    file=sys.stderr,
                    leave=False,
                    dynamic_ncols=True,
                    unit="step",
                    smoothing=0,
                    delay=max(self.delay, 1e-3),  # no empty first bar; refresh() draws it
                    disable=None,  # off where stderr cannot show it
                )
                self._bar.start_t -= now - self._started  # rate and time left count from the start
            self._bar.set_description(f"epoch {epochs}", refresh=False)
            self._bar.set_postfix_str(loss, refresh=False)
            self._bar.n = step
            self._bar.refresh()
            self._next = now + self.refresh
        else:
            elapsed = now - self._started
            done = f"step {step}/{total}" if total else f"step {step}"
            left = ""
            if total and step:
                left = f", ~{_duration(elapsed * (total - step) / step)} left"
            print(
                f"epoch {epochs}, {done}, {loss}, {_duration(elapsed)} elapsed{left}",
                file=sys.stderr,
                flush=True,
            )
            self._next = now + self.log_every

    def _close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def progress_bar(enabled: bool = True, **kwargs: Any) -> pl.Callback:
    """The :class:`ProgressBar` where ``trainer.enable_progress_bar`` is on; otherwise a callback
    that does nothing, not even per step (Lightning refuses a progress bar with the flag off)."""
    return ProgressBar(**kwargs) if enabled else NoProgressBar()


class NoProgressBar(Callback):
    """Stands in for the progress bar when it is off: no hooks at any batch."""


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, seconds = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s"
