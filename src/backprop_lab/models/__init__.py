"""The seed models, one LightningModule each, all built on :class:`SeedModel`."""

from backprop_lab.models.base import SeedModel
from backprop_lab.models.linear import LinearRegression
from backprop_lab.models.quadratic import QuadraticRegression
from backprop_lab.models.sigmoid_net import SigmoidNet

__all__ = ["LinearRegression", "QuadraticRegression", "SeedModel", "SigmoidNet"]
