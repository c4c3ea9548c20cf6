"""backprop-lab: backpropagation, hands on, with Lightning, Hydra and TensorBoard."""

__version__ = "0.1.0"
