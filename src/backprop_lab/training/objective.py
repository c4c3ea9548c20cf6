"""The training objective J = L + s: a weighted sum of data losses L, plus an optional L2 penalty s.

Seed 003 writes the objective as J = L + s with s = lambda/2 * ||W||^2; seed 002 mixes losses as a
plain sum. Both are this one class. Every seed's loss is MSE: seed 000's 1/2 * sum((o - y)^2) over
two outputs is their mean.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable, Iterable, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor


def _mse_grad(y_hat: Tensor, y: Tensor) -> Tensor:
    """d/dy_hat of mean((y_hat - y)^2) = 2/n * (y_hat - y), n the number of elements."""
    return (2.0 / y_hat.numel()) * (y_hat - y)


def _mae_grad(y_hat: Tensor, y: Tensor) -> Tensor:
    """d/dy_hat of mean(|y_hat - y|) = sign(y_hat - y) / n (0 where they are equal, as autograd)."""
    return torch.sign(y_hat - y) / y_hat.numel()


LossFn = Callable[[Tensor, Tensor], Tensor]

#: Data losses by name: (loss, its derivative by y_hat). Each loss is a mean over all elements.
DATA_LOSSES: dict[str, tuple[LossFn, LossFn]] = {
    "mse": (F.mse_loss, _mse_grad),
    "mae": (F.l1_loss, _mae_grad),
}


class Objective:
    """J = sum_i weight_i * loss_i(y_hat, y) + l2/2 * sum ||W||^2 over the model's weights."""

    def __init__(self, terms: Mapping[str, float] | None = None, l2: float = 0.0) -> None:
        terms = dict(terms) if terms is not None else {"mse": 1.0}
        unknown = sorted(set(terms) - set(DATA_LOSSES))
        if unknown or not terms:
            raise ValueError(
                f"unknown loss term(s) {unknown or '(none given)'}; "
                f"choose from {sorted(DATA_LOSSES)}"
            )
        self.terms = {name: float(weight) for name, weight in terms.items()}
        self.l2 = float(l2)
        # One plain term with weight 1 is the common case: skip the bookkeeping of the sum.
        self._single = len(self.terms) == 1 and next(iter(self.terms.values())) == 1.0

    def __call__(
        self, y_hat: Tensor, y: Tensor, weights: Iterable[Tensor] = ()
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Return J and its named parts: each term when there are several; L and s with L2."""
        parts: dict[str, Tensor] = {}
        if self._single:
            (name,) = self.terms
            data_loss = DATA_LOSSES[name][0](y_hat, y)
        else:
            data_loss = torch.zeros((), dtype=y_hat.dtype, device=y_hat.device)
            for name, weight in self.terms.items():
                parts[name] = DATA_LOSSES[name][0](y_hat, y)
                data_loss = data_loss + weight * parts[name]
        if not self.l2:
            return data_loss, parts
        penalty = self.l2 / 2 * sum(((w * w).sum() for w in weights), start=y_hat.new_zeros(()))
        parts["L"] = data_loss
        parts["s"] = penalty
        return data_loss + penalty, parts

    @property
    def plain_term(self) -> str | None:
        """The data loss's name where it is the whole objective (one term, weight 1, no L2)."""
        return next(iter(self.terms)) if self._single and not self.l2 else None

    def grad_output(self, y_hat: Tensor, y: Tensor) -> Tensor:
        """dL/dy_hat of the data loss L (the L2 term does not depend on y_hat)."""
        grads = []
        for name, weight in self.terms.items():
            term = DATA_LOSSES[name][1](y_hat, y)
            grads.append(term if weight == 1.0 else weight * term)
        return functools.reduce(operator.add, grads)

    def describe(self) -> str:
        """The objective in words, e.g. ``mse`` or ``1*mse + 0.5*mae + l2/2*||W||^2 (l2=0.01)``."""
        if self._single:
            text = next(iter(self.terms))
        else:
            text = " + ".join(f"{w:g}*{name}" for name, w in self.terms.items())
        return text + (f" + l2/2*||W||^2 (l2={self.l2:g})" if self.l2 else "")

    def __repr__(self) -> str:
        return f"Objective(terms={self.terms}, l2={self.l2})"
