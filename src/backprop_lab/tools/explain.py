"""The chain rule with numbers: one forward and backward pass of a model, written out.

For every parameter it lists the paths of local derivatives from the loss to the parameter, their
values, their product, the sum (the gradient by hand) and autograd's value beside it: the
derivation seed 000 wrote by hand, checked the way seed 000 found its mistake.

The same numbers make the computational graph (``graph_data``): each local derivative
``d<of>/d<by>`` of the model's ``chains()`` is an edge from node ``by`` to node ``of``, and each
node's gradient is the sum over the paths from the loss to it. dashboard/drawn_graph.py draws it,
for explain.py's ``graph=`` option and for a run's ``graph.png``.
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from backprop_lab import files
from backprop_lab.data import TensorDataModule
from backprop_lab.errors import BackpropLabError, ConfigError
from backprop_lab.models.base import Batch, SeedModel
from backprop_lab.models.base import Path as Chain

FORMATS = ("text", "markdown", "json")
#: The files explain's ``graph=`` option draws the computational graph into, by suffix.
GRAPH_FORMATS = (".png", ".svg", ".pdf")
#: A local derivative's symbol in ``chains()``: d<of>/d<by>, optionally `` = <its formula>``.
SYMBOL = re.compile(r"d(?P<of>[^/\s]+)/d(?P<by>[^\s=]+)(?: = .+)?")


@dataclass
class Term:
    """One path of the chain rule: its local derivatives, their values per row, the product."""

    factors: list[tuple[str, list[float]]]
    value: float  # the product of the factors, summed over the rows of the batch


@dataclass
class ParameterDerivation:
    name: str
    value: float
    terms: list[Term]
    penalty: float | None  # d/dw of the L2 term, l2 * w, where the parameter is penalised
    by_hand: float
    autograd: float

    @property
    def difference(self) -> float:
        return self.by_hand - self.autograd


@dataclass
class Edge:
    """One local derivative of the graph, d<of>/d<by>: an edge from node ``by`` to node ``of``."""

    of: str
    by: str
    symbol: str  # as chains() writes it, e.g. "dout_o1/din_o1" or "dy_hat/dw0 = x^2"
    values: list[float]  # per row of the batch (one value where it is the batch's)


@dataclass
class Derivation:
    model: str
    step: int
    rows: int
    loss: str  # the objective in words
    objective: str  # its symbol: L, or J = L + s with an L2 term (seed 003's notation)
    nodes: dict[str, list[float]]
    parameters: list[ParameterDerivation] = field(default_factory=list)
    #: The computational graph: every local derivative, from the inputs to the objective.
    edges: list[Edge] = field(default_factory=list)
    #: Each node of the graph by kind, inputs first: input, parameter, fixed (a parameter that
    #: does not train, e.g. model.train_bias=false), node, target or loss (L, s, J).
    kinds: dict[str, str] = field(default_factory=dict)
    #: The fixed parameters' values (the trained ones' are in ``parameters``).
    fixed: dict[str, float] = field(default_factory=dict)
    #: d(objective)/d(node) by the chain rule, per row: each input's and intermediate node's own,
    #: each parameter's share from that row's paths (its gradient is their sum, with the L2
    #: term's), the targets' by autograd; the objective and its parts (L, s) one value each.
    gradients: dict[str, list[float]] = field(default_factory=dict)


def derive(model: SeedModel, batch: Batch, step: int = 0) -> Derivation:
    """Write out dL/dparameter for every trainable parameter on one batch."""
    x, y = batch
    with torch.no_grad():
        y_hat, loss, parts = model.compute_loss(batch)
        chains = model.chains(x, model.objective.grad_output(y_hat, y))
        nodes = {k: v.tolist() for k, v in model.nodes(x).items()}
    targets = (
        {"y": y[:, 0]} if y.shape[1] == 1 else {f"y{k + 1}": y[:, k] for k in range(y.shape[1])}
    )
    nodes.update({k: v.tolist() for k, v in targets.items()})
    l2 = model.objective.l2
    objective = "J" if l2 else "L"
    nodes.update({k if k in ("L", "s") else f"L.{k}": [v.item()] for k, v in parts.items()})
    nodes[objective] = [loss.item()]

    penalties = (
        model.seed_names({n: l2 * getattr(model, n).detach() for n in model.penalised})
        if l2
        else {}
    )
    autograd = model.seed_names(model.autograd_gradients(batch))
    values = model.seed_names({n: p.detach() for n, p in model.trainable().items()})
    derivation = Derivation(
        type(model).__name__, step, len(x), model.objective.describe(), objective, nodes
    )
    for name, value in values.items():
        terms = []
        for path in chains[name]:
            product = torch.stack([v for _, v in path]).prod(0).sum()
            terms.append(Term([(s, v.tolist()) for s, v in path], product.item()))
        penalty = penalties[name].item() if name in penalties else None
        by_hand = math.fsum(t.value for t in terms) + (penalty or 0.0)
        derivation.parameters.append(
            ParameterDerivation(name, value.item(), terms, penalty, by_hand, autograd[name].item())
        )
    _graph(derivation, model, chains, (y_hat, y), list(targets), penalties)
    return derivation


def _graph(
    derivation: Derivation,
    model: SeedModel,
    chains: dict[str, list[Chain]],
    outputs: Batch,
    targets: list[str],
    penalties: dict[str, torch.Tensor],
) -> None:
    """The derivation's graph: an edge per local derivative of every path (to the parameters and
    to the inputs), and each node's gradient, the sum of the products of the distinct paths from
    the loss to it (a path's prefixes are the paths to the nodes on its way)."""
    edges: dict[tuple[str, str], Edge] = {}
    grads: dict[str, torch.Tensor] = {}
    seen: set[tuple[str, ...]] = set()
    for path in (p for paths in chains.values() for p in paths):
        prefixes = torch.stack([v for _, v in path]).cumprod(0)
        for k, (symbol, value) in enumerate(path):
            match = SYMBOL.fullmatch(symbol)
            if match is None:
                raise ValueError(
                    f"{type(model).__name__}.chains(): the local derivative {symbol!r} does not "
                    "read d<node>/d<node> (e.g. 'dout_o1/din_o1', 'dy_hat/dw0 = x^2')"
                )
            of, by = match["of"], match["by"]
            edges.setdefault((of, by), Edge(of, by, symbol, value.tolist()))
            key = tuple(s for s, _ in path[: k + 1])
            if key not in seen:  # a path from the loss to `by`, counted once
                seen.add(key)
                grads[by] = grads[by] + prefixes[k] if by in grads else prefixes[k]
    gradients = {name: g.tolist() for name, g in grads.items()}
    # The targets feed the data loss L too. Their derivative (autograd's: no model derives it)
    # completes the graph: the data's side of dL/dy_hat.
    y_hat, y = outputs
    y = y.detach().clone().requires_grad_()
    with torch.enable_grad():
        (dy,) = torch.autograd.grad(model.objective(y_hat.detach(), y)[0], y)
    for k, name in enumerate(targets):
        edges[("L", name)] = Edge("L", name, f"dL/d{name}", dy[:, k].tolist())
        gradients[name] = dy[:, k].tolist()
    losses = ["L"]
    if derivation.objective == "J":  # J = L + s, s = l2/2 * ||W||^2: ds/dw = l2 * w
        losses += ["s", "J"]
        edges[("J", "L")] = Edge("J", "L", "dJ/dL", [1.0])
        edges[("J", "s")] = Edge("J", "s", "dJ/ds", [1.0])
        for name, penalty in penalties.items():
            edges[("s", name)] = Edge("s", name, f"ds/d{name} = l2*{name}", [penalty.item()])
    gradients.update({name: [1.0] for name in losses})

    trained = [p.name for p in derivation.parameters]
    fixed = {
        k: v.item() for k, v in model.named_scalars().items() if k not in trained and k in grads
    }
    heads = {e.of for e in edges.values()}
    named = list(dict.fromkeys([*derivation.nodes, *grads]))  # the model's order first
    leaves = [n for n in named if n in grads and n not in heads]
    kinds = {n: "input" for n in leaves if n not in trained and n not in fixed}
    kinds.update({n: "parameter" for n in trained if n in grads})
    kinds.update({n: "fixed" for n in fixed})
    kinds.update({n: "node" for n in named if n in heads and n not in losses})
    kinds.update({n: "target" for n in targets})
    kinds.update({n: "loss" for n in losses})
    derivation.edges = list(edges.values())
    derivation.kinds = kinds
    derivation.fixed = fixed
    derivation.gradients = gradients


def graph_data(derivation: Derivation, row: int = 0) -> dict[str, Any]:
    """The computational graph at one row of the derivation's batch as plain numbers and
    strings, what dashboard/drawn_graph.py draws: each node's kind, value and gradient (a
    parameter's also over the whole batch, ``total``), each edge's local derivative."""
    if not 0 <= row < derivation.rows:
        raise ValueError(f"row must be in 0..{derivation.rows - 1}, got {row}")

    def at(values: list[float]) -> float:
        return values[row] if len(values) == derivation.rows else values[0]

    parameters = {p.name: p for p in derivation.parameters}
    nodes = []
    for name, kind in derivation.kinds.items():
        node: dict[str, Any] = {"name": name, "kind": kind}
        if name in parameters:
            node.update(value=parameters[name].value, total=parameters[name].by_hand)
        elif name in derivation.fixed:
            node["value"] = derivation.fixed[name]
        else:
            node["value"] = at(derivation.nodes[name])
        node["grad"] = at(derivation.gradients[name])
        nodes.append(node)
    edges = [
        {"of": e.of, "by": e.by, "symbol": e.symbol, "value": at(e.values)}
        for e in derivation.edges
    ]
    return {
        "model": derivation.model,
        "step": derivation.step,
        "row": row,
        "rows": derivation.rows,
        "objective": derivation.objective,
        "loss": derivation.loss,
        "nodes": nodes,
        "edges": edges,
    }


def batch_at(datamodule: TensorDataModule, step: int) -> Batch:
    """The batch that training step ``step`` (0-based) sees: batch ``step % n`` of epoch
    ``step // n``, for n batches an epoch."""
    loader = datamodule.train_dataloader()
    epoch, batch = divmod(step, len(loader))
    loader.load_state_dict({"epoch": epoch, "batch": batch})
    return next(iter(loader))


def check_options(cfg: DictConfig) -> None:
    """step, format and output, checked before anything trains: each mistake one line naming it."""
    step = cfg.step
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise ConfigError(
            f"step must be a whole number >= 0 (the updates before the one explained), got "
            f"{step!r}; e.g. step=99"
        )
    if cfg.format not in FORMATS:
        raise ConfigError(
            f"format must be one of {', '.join(FORMATS)}, got {cfg.format!r}; e.g. format=markdown"
        )
    _check_file("output", cfg.get("output"), "derivation.md")
    graph = cfg.get("graph")
    if graph is not None and Path(str(graph)).suffix.lower() not in GRAPH_FORMATS:
        raise ConfigError(
            f"graph={graph} must name a {', '.join(GRAPH_FORMATS)} file (the figure's format); "
            "e.g. graph=graph.png"
        )
    _check_file("graph", graph, "graph.png")


def _check_file(option: str, value: object, example: str) -> None:
    """That the file an option names can be written: in a directory that exists."""
    if value is None:
        return
    path = Path(str(value)).expanduser()
    folder = next(p for p in (path.parent, *path.parent.parents) if p.exists())
    if path.is_dir():
        problem = "it is a directory"
    elif not folder.is_dir():
        problem = f"{folder} is a file, not a directory"
    elif folder != path.parent:
        problem = f"the directory {path.parent} does not exist"
    elif not os.access(folder, os.W_OK):
        problem = f"the directory {folder} is not writable"
    else:
        return
    raise ConfigError(f"{option}={value} cannot be written: {problem}; e.g. {option}={example}")


def explain(cfg: DictConfig) -> Derivation:
    """Train ``cfg.step`` steps (none by default), then derive the gradients of the next batch."""
    from backprop_lab.training.build import build

    check_options(cfg)
    step = cfg.step
    datamodule, model = build(cfg)
    if step:
        # Lightning's start-up notes would land in the middle of the derivation.
        logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)
        trainer = instantiate(
            cfg.trainer,
            max_steps=step,
            max_epochs=-1,
            logger=False,
            callbacks=[],
            enable_checkpointing=False,
            enable_progress_bar=False,
            limit_val_batches=0,
        )
        trainer.fit(model, datamodule=datamodule)
    param = next(model.parameters())
    x, y = (t.to(param.device, param.dtype) for t in batch_at(datamodule, step))
    return derive(model, (x, y), step)


def render(derivation: Derivation, fmt: str = "text") -> str:
    if fmt == "json":
        data = asdict(derivation)
        for p, d in zip(derivation.parameters, data["parameters"], strict=True):
            d["difference"] = p.difference
        return json.dumps(data, indent=2)
    return _markdown(derivation) if fmt == "markdown" else _text(derivation)


def write(derivation: Derivation, fmt: str, output: str | None) -> None:
    text = render(derivation, fmt)
    if output is None:
        print(text)
    else:
        try:
            files.write_atomic(Path(output), text + "\n")
        except OSError as error:
            raise BackpropLabError(
                f"output={output} cannot be written ({error.strerror}); e.g. output=derivation.md"
            ) from None
        print(f"wrote {output}")


def write_graph(derivation: Derivation, path: str, row: int = 0) -> None:
    """Draw the computational graph of the batch's row ``row`` into ``path`` (.png, .svg or
    .pdf, by its suffix)."""
    from backprop_lab.dashboard.drawn_graph import DPI, computational_graph

    figure = computational_graph(graph_data(derivation, row))
    buffer = io.BytesIO()
    figure.savefig(buffer, format=Path(path).suffix.lower().lstrip("."), dpi=DPI)
    try:
        files.write_atomic(Path(path).expanduser(), buffer.getvalue())
    except OSError as error:
        raise BackpropLabError(
            f"graph={path} cannot be written ({error.strerror}); e.g. graph=graph.png"
        ) from None
    print(f"wrote {path}")


def _num(values: list[float] | float) -> str:
    if isinstance(values, list):
        return _num(values[0]) if len(values) == 1 else "[" + ", ".join(map(_num, values)) + "]"
    return f"{values:.6g}"


def _signed_sum(values: list[float]) -> str:
    text = _num(values[0])
    for v in values[1:]:
        text += f" - {_num(-v)}" if v < 0 else f" + {_num(v)}"
    return text


def _header(d: Derivation) -> str:
    rows = "1 row" if d.rows == 1 else f"{d.rows} rows (each path is summed over them)"
    return (
        f"{d.model} at step {d.step} (the state after {d.step} updates); "
        f"a batch of {rows}; {d.objective} = {d.loss}"
    )


def _text(d: Derivation) -> str:
    width = max(map(len, d.nodes))
    lines = [_header(d), "", "Forward pass"]
    lines += [f"  {name:<{width}} = {_num(v)}" for name, v in d.nodes.items()]
    lines += ["", "Backward pass: each gradient by the chain rule, then by autograd"]
    for p in d.parameters:
        lead = f"  d{d.objective}/d{p.name} = "
        pad = " " * (len(lead) - 2) + "+ "
        symbols = [" * ".join(s for s, _ in t.factors) for t in p.terms]
        numbers = [" * ".join(f"({_num(v)})" for _, v in t.factors) for t in p.terms]
        lines.append(lead + symbols[0])
        lines += [pad + s for s in symbols[1:]]
        if p.penalty is not None:
            lines.append(pad + f"ds/d{p.name} = l2 * {p.name}   (the L2 term s)")
        blank = " " * (len(lead) - 2) + "= "
        lines.append(blank + " + ".join(numbers) + (f" + ({_num(p.penalty)})" if p.penalty else ""))
        if len(p.terms) > 1 or p.penalty is not None:
            parts = [t.value for t in p.terms] + ([p.penalty] if p.penalty is not None else [])
            lines.append(blank + _signed_sum(parts))
        lines.append(blank + f"{p.by_hand:<15.8g} by hand")
        lines.append(
            " " * len(blank) + f"{p.autograd:<15.8g} by autograd (difference {p.difference:.2g})"
        )
        lines.append("")
    return "\n".join(lines).rstrip()


def _markdown(d: Derivation) -> str:
    lines = [
        f"# {d.model}: the chain rule with numbers",
        "",
        _header(d),
        "",
        "## Forward pass",
        "",
        "| node | value |",
        "|---|---|",
    ]
    lines += [f"| `{name}` | {_num(v)} |" for name, v in d.nodes.items()]
    lines += ["", "## Backward pass", ""]
    for p in d.parameters:
        lines += [
            f"### d{d.objective}/d{p.name}  (value {_num(p.value)})",
            "",
            "| path | local derivatives | values | product |",
            "|---|---|---|---|",
        ]
        for i, t in enumerate(p.terms, 1):
            symbols = " · ".join(f"`{s}`" for s, _ in t.factors)
            numbers = " · ".join(_num(v) for _, v in t.factors)
            lines.append(f"| {i} | {symbols} | {numbers} | {_num(t.value)} |")
        if p.penalty is not None:
            lines.append(f"| L2 | `ds/d{p.name} = l2 * {p.name}` | | {_num(p.penalty)} |")
        lines += [
            "",
            f"By hand **{p.by_hand:.8g}**, by autograd **{p.autograd:.8g}**, "
            f"difference {p.difference:.2g}.",
            "",
        ]
    return "\n".join(lines).rstrip()
