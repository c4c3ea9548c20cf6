"""The model's graphs: the forward pass and the loss as a TensorBoard GraphDef (Graphs tab), the
graph ``loss.backward()`` walks, grad_fn by grad_fn, as text (seed 001's subject), and the
computational graph of the first step drawn with its numbers (Images tab and ``graph.png``)."""

from __future__ import annotations

import logging
import operator
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import lightning.pytorch as pl
import torch
from torch import Tensor

from backprop_lab.callbacks import tensorboard_loggers
from backprop_lab.dashboard import render
from backprop_lab.dashboard.figures import training_rows, training_xy
from backprop_lab.models import SeedModel
from backprop_lab.models.base import Batch
from backprop_lab.tools.explain import Derivation, derive, graph_data
from backprop_lab.training.objective import DATA_LOSSES

if TYPE_CHECKING:
    from tensorboard.compat.proto.graph_pb2 import GraphDef
    from tensorboard.compat.proto.node_def_pb2 import NodeDef

log = logging.getLogger(__name__)


class ComputationGraph(pl.Callback):
    """The model's computational graph, once, at the end of training.

    Graphs tab: the forward pass on one batch of training data, traced with ``torch.fx``, and
    its loss (``forward_graph``). SummaryWriter has no public call for a GraphDef of one's own,
    so the graph goes to render.py, which writes it after ``fit`` into the event file that also
    holds the figures. Text tab, ``graph/backward``: the graph that ``loss.backward()`` walks for
    that batch, from the loss back through each ``grad_fn`` to the ``AccumulateGrad`` nodes that
    write ``.grad``.
    """

    def __init__(self, max_lines: int = 200) -> None:
        self.max_lines = max_lines

    def on_train_end(self, trainer: pl.Trainer, pl_module: SeedModel) -> None:
        loggers = tensorboard_loggers(trainer)
        xy = training_xy(trainer) if loggers else None
        if xy is None:
            return
        batch_size = getattr(getattr(trainer, "datamodule", None), "batch_size", 1)
        batch = training_rows(xy, pl_module, batch_size)
        try:
            graph = forward_graph(pl_module, *batch).SerializeToString()
        except (torch.fx.proxy.TraceError, TypeError, RuntimeError, NotImplementedError) as e:
            log.warning(
                "no graph in TensorBoard: torch.fx cannot trace %s (%s)",
                type(pl_module).__name__,
                e,
            )
            graph = b""
        text = backward_graph(pl_module, batch, self.max_lines)
        for logger in loggers:
            logger.experiment.add_text("graph/backward", text, trainer.global_step)
        if graph:
            logdirs = [lg.log_dir for lg in loggers]
            render.submit(render.Job([], logdirs=logdirs, step=trainer.global_step, graph=graph))


class GraphFigure(pl.Callback):
    """The computational graph of the run's first step, drawn with its numbers as explain.py
    derives them: each node's value and gradient, each edge's local derivative, for one row of
    the batch (dashboard/drawn_graph.py). TensorBoard's Images tab shows it as
    ``figures/<label>/graph``; ``path`` (if given) is a PNG of it in the run dir.

    The first training batch and a copy of the parameters before its update are all that is kept
    while training; after it, those parameters are put back for a moment, the step is derived
    (``explain.derive``, the numbers of ``explain.py step=0``) and render.py draws it after
    ``fit``. A resumed run draws the first step it trains. Under data-parallel training rank 0
    draws its share of the batch. A batch of more than ``max_rows`` rows is drawn as its one row
    alone (explain writes out every row: a 2^18-row batch would cost seconds).
    """

    def __init__(
        self, path: str | None = None, label: str = "run", row: int = 0, max_rows: int = 1024
    ) -> None:
        for name, value, least in (("row", row, 0), ("max_rows", max_rows, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ValueError(
                    f"graph_figure.{name} must be a whole number >= {least}, got {value!r}"
                )
        self.path, self.label, self.row, self.max_rows = path, label, row, max_rows
        self._first: tuple[int, dict[str, Tensor], Batch] | None = None

    @property
    def tag(self) -> str:
        return f"figures/{self.label}/graph"

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: SeedModel, batch: Batch, batch_idx: int
    ) -> None:
        if self._first is None:
            initial = {n: p.detach().clone() for n, p in pl_module.named_parameters()}
            x, y = batch
            if len(x) > self.max_rows:  # a large batch: the graph of its one row, not its sums
                row = min(self.row, len(x) - 1)
                x, y = x[row : row + 1].clone(), y[row : row + 1].clone()
            self._first = (trainer.global_step, initial, (x, y))

    def on_train_end(self, trainer: pl.Trainer, pl_module: SeedModel) -> None:
        first, self._first = self._first, None
        if first is None or not trainer.is_global_zero:
            return
        step, initial, batch = first
        try:
            derivation = derive_with(pl_module, initial, batch, step)
        except NotImplementedError:
            log.warning("no graph figure: %s has no chains()", type(pl_module).__name__)
            return
        data = graph_data(derivation, min(self.row, derivation.rows - 1))
        figure = render.Figure(self.tag, "computational_graph", (data,))
        logdirs = [lg.log_dir for lg in tensorboard_loggers(trainer)]
        files = {self.tag: str(self.path)} if self.path else {}
        if logdirs or files:
            render.submit(render.Job([figure], files=files, logdirs=logdirs, step=step))


def derive_with(
    model: SeedModel, parameters: dict[str, Tensor], batch: Batch, step: int
) -> Derivation:
    """explain's derivation of ``batch`` at the given parameter values; the model's own are
    back in place afterwards."""
    params = dict(model.named_parameters())
    current = {n: p.detach().clone() for n, p in params.items()}
    x, y = batch
    first = next(iter(params.values()))
    batch = (x.to(first.device, first.dtype), y.to(first.device, first.dtype))
    with torch.no_grad():
        for n, p in params.items():
            p.copy_(parameters[n])
    try:
        return derive(model, batch, step)
    finally:
        with torch.no_grad():
            for n, p in params.items():
                p.copy_(current[n])


def forward_graph(model: SeedModel, x: Tensor, y: Tensor | None = None) -> GraphDef:
    """The forward pass at input ``x`` and, with the targets ``y``, the loss, as a TensorBoard
    GraphDef named as the math is: the input ``x``; the parameters by the seed's names (``w0``,
    ``w1``, ``w2`` of the quadratic's ``w``; ``W1``, ``b1``, ... of the net); each operation by
    its name (``pow``, ``mul``, ``add``, ``matmul``, ``sigmoid``; ``W1.T``, a ``transpose``);
    ``y_hat``; then the target ``y``, each loss term and ``L`` (``s`` and ``J`` with an L2
    term). Every node holds its shape and the expression it computes."""
    from tensorboard.compat.proto.graph_pb2 import GraphDef
    from tensorboard.compat.proto.versions_pb2 import VersionDef
    from torch.fx.passes.shape_prop import ShapeProp

    traced = torch.fx.symbolic_trace(model)
    with torch.no_grad():
        ShapeProp(traced).propagate(x)
    params = dict(model.named_parameters())
    by_slot = {slot: seed for seed, slot in model.seed_slots().items()}
    graph = _Graph()
    names: dict[torch.fx.Node, str] = {}
    for node in traced.graph.nodes:
        shape = getattr(node.meta.get("tensor_meta"), "shape", None)
        entry = _entry(node, params, by_slot)
        if (
            node.op == "get_attr"
            and node.users
            and all(_entry(user, params, by_slot) for user in node.users)
        ):
            continue  # a parameter read entry by entry (the quadratic's w[0]): its entries
        if node.op == "placeholder":
            names[node] = graph.add(node.name, "input", [], shape)
        elif node.op == "get_attr":
            target = str(node.target)
            seed = by_slot.get((target, 0)) if params[target].numel() == 1 else None
            names[node] = graph.add(seed or target, "parameter", [], shape)
        elif entry is not None:
            names[node] = graph.add(entry, "parameter", [], shape)
        elif node.op == "output":
            (value,) = node.all_input_nodes
            names[node] = graph.add("y_hat", "output", [names[value]], shape, names[value])
        else:
            inputs = [names[a] for a in node.all_input_nodes]
            if node.target is getattr and node.args[1:] == ("T",):
                expression = f"transpose({inputs[0]})"
                names[node] = graph.add(f"{inputs[0]}.T", "transpose", inputs, shape, expression)
                continue
            op = _op_name(node)
            args = [names[a] if isinstance(a, torch.fx.Node) else repr(a) for a in node.args]
            names[node] = graph.add(op, op, inputs, shape, f"{op}({', '.join(args)})")
    if y is not None:
        weights = []  # the L2 term's: each penalised parameter's node, or its entries' nodes
        for w in model.penalised:
            read = [names[n] for n in names if n.op == "get_attr" and n.target == w]
            weights += read or [seed for (param, _), seed in by_slot.items() if param == w]
        graph.loss(model, names[next(n for n in names if n.op == "output")], y, weights)
    return GraphDef(node=graph.nodes, versions=VersionDef(producer=22))


class _Graph:
    """The nodes of a GraphDef, each name used once."""

    def __init__(self) -> None:
        self.nodes: list[NodeDef] = []
        self.taken: set[str] = set()

    def add(
        self, name: str, op: str, inputs: list[str], shape: Any = None, expression: str = ""
    ) -> str:
        unique, n = name, 1
        while unique in self.taken:
            unique, n = f"{name}_{n}", n + 1
        self.taken.add(unique)
        self.nodes.append(_node_def(unique, op, inputs, shape, expression))
        return unique

    def loss(self, model: SeedModel, y_hat: str, y: Tensor, weights: list[str]) -> None:
        """The objective's nodes after ``y_hat``: the target, each data loss term, L; the L2
        term s of the ``weights`` and J = L + s where there is one."""
        objective = model.objective
        target = self.add("y", "target", [], tuple(y.shape))
        terms = {n: (DATA_LOSSES[n][0].__name__, w) for n, w in objective.terms.items()}
        if len(terms) == 1:
            ((fn, weight),) = terms.values()
            scale = "" if weight == 1 else f"{weight:g}*"
            data_loss = self.add("L", fn, [y_hat, target], (), f"{scale}{fn}({y_hat}, {target})")
        else:
            parts = [
                self.add(f"L.{n}", fn, [y_hat, target], (), f"{fn}({y_hat}, {target})")
                for n, (fn, _) in terms.items()
            ]
            weighted = zip(parts, terms.values(), strict=True)
            expression = " + ".join(f"{w:g}*{part}" for part, (_, w) in weighted)
            data_loss = self.add("L", "add", parts, (), expression)
        if objective.l2:
            norms = " + ".join(f"||{w}||^2" for w in weights)
            expression = f"{objective.l2:g}/2 * ({norms})"
            penalty = self.add("s", "l2_penalty", weights, (), expression)
            self.add("J", "add", [data_loss, penalty], (), f"{data_loss} + {penalty}")


def _entry(
    node: torch.fx.Node, params: Mapping[str, Tensor], by_slot: Mapping[tuple[str, int], str]
) -> str | None:
    """The seed's name of ``node`` where it reads one entry of a parameter (``w[0]``: w0)."""
    if node.op != "call_function" or node.target is not operator.getitem:
        return None
    source, index = node.args[0], node.args[1]
    if not isinstance(source, torch.fx.Node) or source.op != "get_attr":
        return None
    param = params[str(source.target)]
    flat = torch.arange(param.numel()).view(param.shape)[index]  # type: ignore[index]
    return by_slot.get((str(source.target), int(flat))) if flat.dim() == 0 else None


def _node_def(name: str, op: str, inputs: list[str], shape: Any, expr: str) -> NodeDef:
    from tensorboard.compat.proto.attr_value_pb2 import AttrValue
    from tensorboard.compat.proto.node_def_pb2 import NodeDef
    from tensorboard.compat.proto.tensor_shape_pb2 import TensorShapeProto

    attr = {}
    if shape is not None:
        dims = [TensorShapeProto.Dim(size=int(d)) for d in shape]
        attr["_output_shapes"] = AttrValue(
            list=AttrValue.ListValue(shape=[TensorShapeProto(dim=dims)])
        )
    if expr:
        attr["expression"] = AttrValue(s=expr.encode())
    return NodeDef(name=name, op=op, input=inputs, attr=attr)


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
