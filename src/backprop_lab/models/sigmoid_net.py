"""Seed 000's 2-2-2 network: two inputs, two sigmoid hidden units, two sigmoid outputs.

Weight matrices follow nn.Linear's layout, one row per unit of the layer and one column per input
to it, so seed 000's eight weights map onto them as

    in_h1 = w1*x1 + w3*x2        hidden_weight = [[w1, w3],
    in_h2 = w2*x1 + w4*x2                         [w2, w4]]
    in_o1 = w5*out_h1 + w7*out_h2
    in_o2 = w6*out_h1 + w8*out_h2  output_weight = [[w5, w7],
                                                    [w6, w8]]

that is, w1..w4 are hidden_weight read column by column, and w5..w8 likewise output_weight.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from backprop_lab.models.base import SeedModel, as_parameter

Matrix = Sequence[Sequence[float]]


class SigmoidNet(SeedModel):
    """h = sigmoid(x W1^T + b1), o = sigmoid(h W2^T + b2); biases optional and optionally fixed."""

    def __init__(
        self,
        hidden_weight: Matrix = ((0.2, 0.5), (-0.4, 0.6)),
        output_weight: Matrix = ((0.1, -0.3), (-0.5, 0.8)),
        hidden_bias: Sequence[float] | None = None,
        output_bias: Sequence[float] | None = None,
        train_bias: bool = True,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.save_hyperparameters(
            "hidden_weight", "output_weight", "hidden_bias", "output_bias", "train_bias"
        )
        self.W1 = as_parameter(_matrix(hidden_weight, "hidden_weight"))
        self.W2 = as_parameter(_matrix(output_weight, "output_weight"))
        hidden, self.in_features = self.W1.shape
        self.out_features, w2_in = self.W2.shape
        if w2_in != hidden:
            raise ValueError(
                f"output_weight has {w2_in} column(s) but there are {hidden} hidden units: "
                "it needs one column per hidden unit"
            )
        self.b1 = _bias(hidden_bias, hidden, "hidden_bias", train_bias)
        self.b2 = _bias(output_bias, self.out_features, "output_bias", train_bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)[-1]

    def layers(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Every node of the forward pass: (in_h, out_h, in_o, out_o)."""
        in_h = x @ self.W1.T
        if self.b1 is not None:
            in_h = in_h + self.b1
        out_h = torch.sigmoid(in_h)
        in_o = out_h @ self.W2.T
        if self.b2 is not None:
            in_o = in_o + self.b2
        return in_h, out_h, in_o, torch.sigmoid(in_o)

    def named_scalars(self) -> dict[str, Tensor]:
        weights = torch.cat([self.W1.T.reshape(-1), self.W2.T.reshape(-1)])
        scalars = {f"w{i + 1}": w for i, w in enumerate(weights)}
        for layer, bias in (("h", self.b1), ("o", self.b2)):
            if bias is not None:
                scalars.update({f"b_{layer}{i + 1}": b for i, b in enumerate(bias)})
        return scalars

    def penalised_weights(self) -> list[Tensor]:
        return [self.W1, self.W2]


def _matrix(values: Matrix, name: str) -> list[list[float]]:
    rows = [list(row) for row in values]
    if not rows or any(len(row) != len(rows[0]) or not row for row in rows):
        raise ValueError(
            f"{name} must be a non-empty rectangular matrix (a list of rows), got {values}"
        )
    return rows


def _bias(values: Sequence[float] | None, size: int, name: str, trainable: bool):
    if values is None:
        return None
    if len(values) != size:
        raise ValueError(f"{name} needs {size} value(s), one per unit, got {list(values)}")
    return as_parameter(list(values), trainable=trainable)
