"""Model inputs and outputs as plain rows: how a config or a CSV gives them, how the console
shows them. Shared by training, the dashboard and predict.py."""

from __future__ import annotations

from typing import Any

from omegaconf import OmegaConf

from backprop_lab.errors import BackpropLabError


def as_rows(inputs: Any) -> list[list[float]] | None:
    """``4.0`` or ``[4.0]`` -> ``[[4.0]]``; ``[[0.5, 0.3]]`` stays: one list of features per row."""
    if inputs is None:
        return None
    if OmegaConf.is_config(inputs):
        inputs = OmegaConf.to_container(inputs)
    if isinstance(inputs, (int, float)):
        inputs = [inputs]
    try:
        if isinstance(inputs, str):
            raise TypeError
        return [
            [float(v) for v in r] if isinstance(r, (list, tuple)) else [float(r)] for r in inputs
        ]
    except (TypeError, ValueError):
        raise BackpropLabError(
            f"inputs must be numbers: one per row, x=[4.0, 5.0], or a list of features per row, "
            f"x=[[0.5, 0.3]]; got {inputs!r}"
        ) from None


def format_row(values: Any) -> str:
    """``[4.0]`` -> ``4.0``, ``[0.5, 0.3]`` -> ``(0.5, 0.3)``, as the console shows an input or a
    prediction."""
    if isinstance(values, (list, tuple)):
        if len(values) == 1:
            return repr(values[0])
        return "(" + ", ".join(map(repr, values)) + ")"
    return repr(values)
