"""The chain rule with numbers: one forward and backward pass of a model, written out.

For every parameter it lists the paths of local derivatives from the loss to the parameter, their
values, their product, the sum (the gradient by hand) and autograd's value beside it: the
derivation seed 000 wrote by hand, checked the way seed 000 found its mistake.
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from backprop_lab import files
from backprop_lab.data import TensorDataModule
from backprop_lab.errors import BackpropLabError, ConfigError
from backprop_lab.models.base import Batch, SeedModel

FORMATS = ("text", "markdown", "json")


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
class Derivation:
    model: str
    step: int
    rows: int
    loss: str  # the objective in words
    objective: str  # its symbol: L, or J = L + s with an L2 term (seed 003's notation)
    nodes: dict[str, list[float]]
    parameters: list[ParameterDerivation] = field(default_factory=list)


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
    return derivation


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
    output = cfg.get("output")
    if output is None:
        return
    path = Path(str(output)).expanduser()
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
    raise ConfigError(f"output={output} cannot be written: {problem}; e.g. output=derivation.md")


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
