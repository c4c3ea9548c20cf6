"""A cubic y = w0*x^3 + w1*x^2 + w2*x + w3: the worked example of adding a model (README).

No seed ran it. It is seed 004's quadratic with one more power of x, so its chain rule is the
quadratic's with one more term.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import ClassVar

import torch
from torch import Tensor

from backprop_lab.models.base import Path, SeedModel, as_parameter
from backprop_lab.schema import Numbers

#: The power of x each coefficient multiplies: y_hat = sum_i w_i * x^(3 - i).
POWERS = (3, 2, 1, 0)


class CubicRegression(SeedModel):
    """y_hat = w0 * x^3 + w1 * x^2 + w2 * x + w3, with w = [w0, w1, w2, w3] from the config."""

    penalised = ("w",)
    #: The config's values, checked by schema.py when the config is composed.
    config_values: ClassVar[dict[str, Numbers | type]] = {
        "w": Numbers((4,), "the 4 coefficients [w0, w1, w2, w3]")
    }

    def __init__(self, w: Sequence[float] = (1.0, 1.0, 1.0, 1.0), **kwargs) -> None:
        super().__init__(**kwargs)
        self.save_hyperparameters("w")
        self.w = as_parameter(w)

    def forward(self, x: Tensor) -> Tensor:
        return self.w[0] * x**3 + self.w[1] * x**2 + self.w[2] * x + self.w[3]

    def backward_by_hand(self, x: Tensor, grad_output: Tensor) -> dict[str, Tensor]:
        # dy_hat/dw_i = x^(3 - i): x^3, x^2, x, 1; each times dL/dy_hat, summed over rows.
        g = grad_output
        return {"w": torch.stack([(g * x**p).sum() for p in POWERS])}

    def nodes(self, x: Tensor) -> dict[str, Tensor]:
        column = x[:, 0]
        return {"x": column, "x^2": column**2, "x^3": column**3, "y_hat": self(x)[:, 0]}

    def chains(self, x: Tensor, grad_output: Tensor) -> dict[str, list[Path]]:
        # dy_hat/dw_i = x^(3 - i); x reaches y_hat through x^3 and x^2 (dx^p/dx = p*x^(p-1))
        # and directly (dy_hat/dx = w2).
        g, x = grad_output[:, 0], x[:, 0]
        symbols = {3: "x^3", 2: "x^2", 1: "x", 0: "1"}
        chains = {
            f"w{i}": [[("dL/dy_hat", g), (f"dy_hat/dw{i} = {symbols[p]}", x**p)]]
            for i, p in enumerate(POWERS)
        }
        ones = torch.ones_like(x)
        chains["x"] = [
            [
                ("dL/dy_hat", g),
                ("dy_hat/dx^3 = w0", self.w[0] * ones),
                ("dx^3/dx = 3x^2", 3 * x**2),
            ],
            [("dL/dy_hat", g), ("dy_hat/dx^2 = w1", self.w[1] * ones), ("dx^2/dx = 2x", 2 * x)],
            [("dL/dy_hat", g), ("dy_hat/dx = w2", self.w[2] * ones)],
        ]
        return chains

    def seed_names(self, tensors: Mapping[str, Tensor]) -> dict[str, Tensor]:
        return {f"w{i}": tensors["w"][i] for i in range(len(POWERS))}
