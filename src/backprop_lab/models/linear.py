"""Linear regression y = w*x (+ b): seed 003's model, and with a bias seed 002's nn.Linear(1, 1)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

import torch
from torch import Tensor

from backprop_lab.models.base import Path, SeedModel, as_parameter
from backprop_lab.schema import Numbers


class LinearRegression(SeedModel):
    """y_hat = w * x, or w * x + b with ``bias=True``; w and b start at the configured values."""

    penalised = ("w",)
    #: The config's values, checked by schema.py when the config is composed.
    config_values: ClassVar[dict[str, Numbers | type]] = {
        "w": Numbers((), "the slope"),
        "bias": bool,
        "b": Numbers((), "the intercept"),
    }

    def __init__(self, w: float = 3.0, bias: bool = False, b: float = 0.0, **kwargs) -> None:
        super().__init__(**kwargs)
        self.save_hyperparameters("w", "bias", "b")
        self.w = as_parameter([w])
        self.b = as_parameter([b]) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        y_hat = x * self.w
        return y_hat + self.b if self.b is not None else y_hat

    def backward_by_hand(self, x: Tensor, grad_output: Tensor) -> dict[str, Tensor]:
        # dL/dw = sum_i dL/dy_hat_i * dy_hat_i/dw = sum_i g_i * x_i;  dy_hat_i/db = 1.
        # For MSE, g_i = 2/n * (y_hat_i - y_i), so dL/dw = mean(2 * (y_hat - y) * x).
        grads = {"w": (grad_output * x).sum(0)}
        if self.b is not None:
            grads["b"] = grad_output.sum(0)
        return grads

    def nodes(self, x: Tensor) -> dict[str, Tensor]:
        return {"x": x[:, 0], "y_hat": self(x)[:, 0]}

    def chains(self, x: Tensor, grad_output: Tensor) -> dict[str, list[Path]]:
        # y_hat = w*x + b: dy_hat/dw = x, dy_hat/db = 1, and for the input dy_hat/dx = w.
        g = grad_output[:, 0]
        chains = {"w": [[("dL/dy_hat", g), ("dy_hat/dw", x[:, 0])]]}
        if self.b is not None:
            chains["b"] = [[("dL/dy_hat", g), ("dy_hat/db", torch.ones_like(g))]]
        chains["x"] = [[("dL/dy_hat", g), ("dy_hat/dx", self.w * torch.ones_like(g))]]
        return chains

    def seed_names(self, tensors: Mapping[str, Tensor]) -> dict[str, Tensor]:
        names = {"w": tensors["w"][0]}
        if "b" in tensors:
            names["b"] = tensors["b"][0]
        return names
