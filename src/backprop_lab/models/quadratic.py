"""Seed 004's quadratic model y = w0*x^2 + w1*x + w2."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import ClassVar

import torch
from torch import Tensor

from backprop_lab.models.base import Path, SeedModel, as_parameter
from backprop_lab.schema import Numbers


class QuadraticRegression(SeedModel):
    """y_hat = w0 * x^2 + w1 * x + w2, with w = [w0, w1, w2] starting at the configured values."""

    penalised = ("w",)
    #: The config's values, checked by schema.py when the config is composed.
    config_values: ClassVar[dict[str, Numbers | type]] = {
        "w": Numbers((3,), "the 3 coefficients [w0, w1, w2]")
    }

    def __init__(self, w: Sequence[float] = (1.0, 1.0, 1.0), **kwargs) -> None:
        super().__init__(**kwargs)
        self.save_hyperparameters("w")
        self.w = as_parameter(w)

    def forward(self, x: Tensor) -> Tensor:
        return self.w[0] * x**2 + self.w[1] * x + self.w[2]

    def backward_by_hand(self, x: Tensor, grad_output: Tensor) -> dict[str, Tensor]:
        # dy_hat/dw0 = x^2, dy_hat/dw1 = x, dy_hat/dw2 = 1; each times dL/dy_hat, summed over rows.
        g = grad_output
        return {"w": torch.stack([(g * x**2).sum(), (g * x).sum(), g.sum()])}

    def nodes(self, x: Tensor) -> dict[str, Tensor]:
        return {"x": x[:, 0], "x^2": x[:, 0] ** 2, "y_hat": self(x)[:, 0]}

    def chains(self, x: Tensor, grad_output: Tensor) -> dict[str, list[Path]]:
        # y_hat = w0*x^2 + w1*x + w2: each coefficient's local derivative is its power of x, and
        # x reaches y_hat twice, through x^2 (dx^2/dx = 2x) and directly.
        g, x = grad_output[:, 0], x[:, 0]
        ones = torch.ones_like(x)
        local = {"w0": ("x^2", x**2), "w1": ("x", x), "w2": ("1", ones)}
        chains = {
            w: [[("dL/dy_hat", g), (f"dy_hat/d{w} = {sym}", val)]]
            for w, (sym, val) in local.items()
        }
        w0, w1 = self.w[0] * ones, self.w[1] * ones
        chains["x"] = [
            [("dL/dy_hat", g), ("dy_hat/dx^2 = w0", w0), ("dx^2/dx = 2x", 2 * x)],
            [("dL/dy_hat", g), ("dy_hat/dx = w1", w1)],
        ]
        return chains

    def seed_names(self, tensors: Mapping[str, Tensor]) -> dict[str, Tensor]:
        return {f"w{i}": tensors["w"][i] for i in range(3)}
