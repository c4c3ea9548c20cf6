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

from collections.abc import Mapping, Sequence
from typing import ClassVar

import torch
from torch import Tensor, nn

from backprop_lab.models.base import Path, SeedModel, as_parameter
from backprop_lab.schema import Numbers

Matrix = Sequence[Sequence[float]]


class SigmoidNet(SeedModel):
    """h = sigmoid(x W1^T + b1), o = sigmoid(h W2^T + b2); biases optional and optionally fixed."""

    penalised = ("W1", "W2")
    output_range = (0.0, 1.0)
    #: The config's values, checked by schema.py when the config is composed. The sizes by name
    #: tie them together: as many rows in hidden_weight as columns in output_weight, and so on.
    config_values: ClassVar[dict[str, Numbers | type]] = {
        "hidden_weight": Numbers(("hidden", "input"), "a row per hidden unit, a column per input"),
        "output_weight": Numbers(
            ("output", "hidden"), "a row per output, a column per hidden unit"
        ),
        "hidden_bias": Numbers(("hidden",), "one per hidden unit", nullable=True),
        "output_bias": Numbers(("output",), "one per output", nullable=True),
        "train_bias": bool,
    }

    def __init__(
        self,
        hidden_weight: Matrix = ((0.2, 0.5), (-0.4, 0.6)),
        output_weight: Matrix = ((0.1, -0.3), (-0.5, 0.8)),
        hidden_bias: Sequence[float] | None = None,
        output_bias: Sequence[float] | None = None,
        train_bias: bool = True,
        **kwargs,
    ) -> None:
        # The epoch metrics keep sums per output: one output per row of output_weight.
        super().__init__(outputs=len(output_weight), **kwargs)
        self.save_hyperparameters(
            "hidden_weight", "output_weight", "hidden_bias", "output_bias", "train_bias"
        )
        # schema.py has checked that the shapes fit together (config_values' named sizes).
        self.W1 = as_parameter(hidden_weight)
        self.W2 = as_parameter(output_weight)
        self.in_features = self.W1.shape[1]
        self.out_features = self.W2.shape[0]
        self.b1 = _bias(hidden_bias, train_bias)
        self.b2 = _bias(output_bias, train_bias)

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

    def backward_by_hand(self, x: Tensor, grad_output: Tensor) -> dict[str, Tensor]:
        _, out_h, _, out_o = self.layers(x)
        # Output layer: delta_o = dL/din_o = dL/dout_o * dout_o/din_o, and sigmoid' = o * (1 - o).
        delta_o = grad_output * (1 - out_o) * out_o
        # din_o/dW2 = out_h: one outer product per row, summed over the batch.
        grads = {"W2": delta_o.T @ out_h}
        # Hidden layer: dL/dout_h sums over every output the unit feeds (delta_o W2), then sigmoid'.
        # Using in_h here instead of out_h, or one output's path only, is the classic mistake.
        delta_h = (delta_o @ self.W2) * (1 - out_h) * out_h
        grads["W1"] = delta_h.T @ x
        if self.b2 is not None:
            grads["b2"] = delta_o.sum(0)
        if self.b1 is not None:
            grads["b1"] = delta_h.sum(0)
        return grads

    def nodes(self, x: Tensor) -> dict[str, Tensor]:
        nodes = {f"x{i + 1}": x[:, i] for i in range(x.shape[1])}
        for name, layer in zip(("in_h", "out_h", "in_o", "out_o"), self.layers(x), strict=True):
            nodes.update({f"{name}{j + 1}": layer[:, j] for j in range(layer.shape[1])})
        return nodes

    def chains(self, x: Tensor, grad_output: Tensor) -> dict[str, list[Path]]:
        """Seed 000's derivation: e.g. dL/dw1 sums the paths through out_o1 and out_o2,
        dL/dout_ok * dout_ok/din_ok * din_ok/dout_h1 * dout_h1/din_h1 * din_h1/dw1; and the
        inputs' paths, dL/dx1 through every hidden unit and output."""
        _, out_h, _, out_o = self.layers(x)
        hidden, inputs = self.W1.shape
        outputs = self.out_features
        ones = torch.ones_like(out_h[:, 0])

        def to_output(k: int) -> Path:  # dL/dout_ok * dout_ok/din_ok
            o = out_o[:, k]
            return [
                (f"dL/dout_o{k + 1}", grad_output[:, k]),
                (f"dout_o{k + 1}/din_o{k + 1}", o * (1 - o)),
            ]

        def to_hidden(k: int, j: int) -> Path:  # ... * din_ok/dout_hj * dout_hj/din_hj
            h = out_h[:, j]
            return [
                *to_output(k),
                (f"din_o{k + 1}/dout_h{j + 1}", self.W2[k, j] * ones),
                (f"dout_h{j + 1}/din_h{j + 1}", h * (1 - h)),
            ]

        chains: dict[str, list[Path]] = {}
        for j in range(hidden):
            for i in range(inputs):  # W1[j, i] is seed weight w(i * hidden + j + 1)
                w = f"w{i * hidden + j + 1}"
                chains[w] = [
                    [*to_hidden(k, j), (f"din_h{j + 1}/d{w}", x[:, i])] for k in range(outputs)
                ]
            if self.b1 is not None:
                b = f"b_h{j + 1}"
                chains[b] = [
                    [*to_hidden(k, j), (f"din_h{j + 1}/d{b}", ones)] for k in range(outputs)
                ]
        for k in range(outputs):
            for j in range(hidden):  # W2[k, j] is seed weight w(hidden*inputs + j*outputs + k + 1)
                w = f"w{hidden * inputs + j * outputs + k + 1}"
                chains[w] = [[*to_output(k), (f"din_o{k + 1}/d{w}", out_h[:, j])]]
            if self.b2 is not None:
                b = f"b_o{k + 1}"
                chains[b] = [[*to_output(k), (f"din_o{k + 1}/d{b}", ones)]]
        for i in range(inputs):  # the inputs too: din_hj/dxi = W1[j, i], through every unit
            chains[f"x{i + 1}"] = [
                [*to_hidden(k, j), (f"din_h{j + 1}/dx{i + 1}", self.W1[j, i] * ones)]
                for j in range(hidden)
                for k in range(outputs)
            ]
        return chains

    def seed_names(self, tensors: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """w1..w8 (each matrix read column by column, as seed 000 numbers them), b_h*, b_o*."""
        weights = torch.cat([tensors["W1"].T.reshape(-1), tensors["W2"].T.reshape(-1)])
        names = {f"w{i + 1}": w for i, w in enumerate(weights)}
        for layer, key in (("h", "b1"), ("o", "b2")):
            if key in tensors:
                names.update({f"b_{layer}{i + 1}": b for i, b in enumerate(tensors[key])})
        return names


def _bias(values: Sequence[float] | None, trainable: bool) -> nn.Parameter | None:
    return None if values is None else as_parameter(values, trainable=trainable)
