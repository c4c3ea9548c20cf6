"""The training objective J = L + s: a weighted sum of data losses L, plus an optional L2 penalty s.

Seed 003 writes the objective as J = L + s with s = lambda/2 * ||W||^2; seed 002 mixes losses as a
plain sum. Both are this one class. Every seed's loss is MSE: seed 000's 1/2 * sum((o - y)^2) over
two outputs is their mean.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor

#: Data losses by name: each maps (prediction, target) to a scalar mean over all elements.
DATA_LOSSES: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "mse": F.mse_loss,
    "mae": F.l1_loss,
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
            data_loss = DATA_LOSSES[name](y_hat, y)
        else:
            data_loss = torch.zeros((), dtype=y_hat.dtype, device=y_hat.device)
            for name, weight in self.terms.items():
                parts[name] = DATA_LOSSES[name](y_hat, y)
                data_loss = data_loss + weight * parts[name]
        if not self.l2:
            return data_loss, parts
        penalty = self.l2 / 2 * sum((w * w).sum() for w in weights)
        parts["L"] = data_loss
        parts["s"] = penalty
        return data_loss + penalty, parts

    def __repr__(self) -> str:
        return f"Objective(terms={self.terms}, l2={self.l2})"
