"""Errors a user can act on. The entry points print their message in a line or two and exit
non-zero; anything else is a bug and keeps its traceback."""


class BackpropLabError(Exception):
    """Base of the errors whose message names the problem and the fix."""


class GradientCheckError(BackpropLabError):
    """Hand-derived and autograd gradients disagree beyond the tolerance."""
