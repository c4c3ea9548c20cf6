"""Linear regression y = w*x (+ b): seed 003's model, and with a bias seed 002's nn.Linear(1, 1)."""

from __future__ import annotations

from torch import Tensor

from backprop_lab.models.base import SeedModel, as_parameter


class LinearRegression(SeedModel):
    """y_hat = w * x, or w * x + b with ``bias=True``; w and b start at the configured values."""

    def __init__(self, w: float = 3.0, bias: bool = False, b: float = 0.0, **kwargs) -> None:
        super().__init__(**kwargs)
        self.save_hyperparameters("w", "bias", "b")
        self.w = as_parameter([w])
        self.b = as_parameter([b]) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        y_hat = x * self.w
        return y_hat + self.b if self.b is not None else y_hat

    def named_scalars(self) -> dict[str, Tensor]:
        scalars = {"w": self.w[0]}
        if self.b is not None:
            scalars["b"] = self.b[0]
        return scalars

    def penalised_weights(self) -> list[Tensor]:
        return [self.w]
