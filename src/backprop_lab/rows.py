"""Model inputs and outputs as plain rows: how a config or a CSV gives them, how the console
shows them. Shared by training, the dashboard and predict.py."""

from __future__ import annotations

from typing import Any

from omegaconf import OmegaConf

from backprop_lab.errors import BackpropLabError

#: Significant digits of the numbers the console and the run card show (summary.json: all).
DIGITS = 6


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


def format_row(values: Any, digits: int | None = None) -> str:
    """``[4.0]`` -> ``4.0``, ``[0.5, 0.3]`` -> ``(0.5, 0.3)``, as the console shows an input or a
    prediction: every digit, or with ``digits`` significant digits for reading (:func:`rounded`)."""
    shown = repr if digits is None else (lambda v: rounded(v, digits))
    if isinstance(values, (list, tuple)):
        if len(values) == 1:
            return shown(values[0])
        return "(" + ", ".join(map(shown, values)) + ")"
    return shown(values)


def rounded(value: Any, digits: int = DIGITS) -> str:
    """A number for reading: ``digits`` significant digits, and a float still looks like one
    (``0.666100025177002`` -> ``0.6661``, ``8.544171333312988`` -> ``8.54417``, ``21.0`` ->
    ``21.0``)."""
    if not isinstance(value, float):
        return repr(value)
    text = f"{value:.{digits}g}"
    return text if any(c in text for c in ".enai") else text + ".0"  # 1e-07, inf, nan stay
