"""The model's graphs: the forward pass traced with ``torch.fx`` as a TensorBoard GraphDef (Graphs
tab), and the graph ``loss.backward()`` walks, grad_fn by grad_fn, as text (seed 001's subject)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import lightning.pytorch as pl
import torch
from torch import Tensor

from backprop_lab.callbacks import tensorboard_loggers
from backprop_lab.dashboard import render
from backprop_lab.dashboard.figures import training_rows, training_xy
from backprop_lab.models import SeedModel

if TYPE_CHECKING:
    from tensorboard.compat.proto.graph_pb2 import GraphDef

log = logging.getLogger(__name__)


class ComputationGraph(pl.Callback):
    """The model's computational graph, once, at the end of training.

    Graphs tab: the forward pass on one batch of training data, traced with ``torch.fx`` (every
    operation with its output shape; ``torch.jit.trace``, which ``SummaryWriter.add_graph`` uses,
    is deprecated). SummaryWriter has no public call for a GraphDef of one's own, so the graph
    goes to render.py, which writes it after ``fit`` into the event file that also holds the
    figures. Text tab, ``graph/backward``: the graph that ``loss.backward()`` walks for that
    batch, from the loss back through each ``grad_fn`` to the ``AccumulateGrad`` nodes that
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
            graph = forward_graph(pl_module, batch[0]).SerializeToString()
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


def forward_graph(model: torch.nn.Module, x: Tensor) -> GraphDef:
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
