"""Small Lightning callbacks, one concern each: the gradients (gradients.py), how a run begins and
ends (lifecycle.py), the epoch-end checkpoints (checkpoints.py), and the TensorBoard logger and
writers callbacks write to (tensorboard.py)."""

from backprop_lab.callbacks.checkpoints import EpochCheckpoint
from backprop_lab.callbacks.gradients import GradientCheck, ParameterHistograms, ParameterScalars
from backprop_lab.callbacks.lifecycle import HParamsSummary, StopOnSignal, best_epoch
from backprop_lab.callbacks.tensorboard import tensorboard_loggers, tensorboards

__all__ = [
    "EpochCheckpoint",
    "GradientCheck",
    "HParamsSummary",
    "ParameterHistograms",
    "ParameterScalars",
    "StopOnSignal",
    "best_epoch",
    "tensorboard_loggers",
    "tensorboards",
]
