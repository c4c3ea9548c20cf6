"""Seed 004's quadratic model y = w0*x^2 + w1*x + w2."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from backprop_lab.models.base import SeedModel, as_parameter


class QuadraticRegression(SeedModel):
    """y_hat = w0 * x^2 + w1 * x + w2, with w = [w0, w1, w2] starting at the configured values."""

    def __init__(self, w: Sequence[float] = (1.0, 1.0, 1.0), **kwargs) -> None:
        super().__init__(**kwargs)
        if len(w) != 3:
            raise ValueError(
                f"the quadratic model takes 3 coefficients [w0, w1, w2], got {list(w)}"
            )
        self.save_hyperparameters("w")
        self.w = as_parameter(list(w))

    def forward(self, x: Tensor) -> Tensor:
        return self.w[0] * x**2 + self.w[1] * x + self.w[2]

    def named_scalars(self) -> dict[str, Tensor]:
        return {f"w{i}": self.w[i] for i in range(3)}

    def penalised_weights(self) -> list[Tensor]:
        return [self.w]
