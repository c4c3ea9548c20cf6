"""The run card: Text tab ``card``, the run's results, first step and chosen config on one page."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl

from backprop_lab.callbacks import best_epoch, tensorboards
from backprop_lab.callbacks.stopping import stopped_early
from backprop_lab.config import PROJECT_ROOT, task_overrides
from backprop_lab.models import SeedModel
from backprop_lab.rows import DIGITS, as_rows, format_row, rounded
from backprop_lab.training.evaluation import rows_tested


class RunCard(pl.Callback):
    """Text tab, tag ``card`` (it sorts first), once at the end of training: the run's story on
    one page, in Markdown tables with named columns.

    - a heading: the run's ``label`` (``${run_label:${run_name}}``), model, epochs, steps, device;
    - the results: last step's loss, best and final epoch metrics, an early stop and why;
    - every parameter before training, its gradient dL/dparam at step 0 (``model.first_step``)
      and after training;
    - the predictions at ``predict_at`` before and after;
    - the config the user chose: the command line's overrides and the resolved model, loss,
      optimizer and data sections (each with the group option it came from), without Hydra's
      internal keys and with the machine's absolute paths cut.

    A run with a test split (``data.test_fraction`` / ``data.test_csv``) writes its card once the
    test after training is done, with the test's metrics at its end.

    Numbers are rounded to 6 significant digits for reading; summary.json keeps every digit.
    """

    TAG = "card"

    def __init__(self, metric: str = "Loss/train", mode: str = "min", label: str = "") -> None:
        self.metric, self.mode, self.label = metric, mode, label
        self._started = 0.0
        self._before: list[list[float]] | None = None
        self._text: str | None = None  # made at the end of training, not written yet

    def on_train_start(self, trainer: pl.Trainer, pl_module: SeedModel) -> None:
        self._started = time.perf_counter()
        inputs = self._inputs(pl_module)
        self._before = pl_module.predict_at(inputs) if inputs and trainer.is_global_zero else None

    def on_train_end(self, trainer: pl.Trainer, pl_module: SeedModel) -> None:
        if not tensorboards(trainer):
            return
        self._text = self.card(trainer, pl_module)
        if getattr(trainer.datamodule, "test_xy", None) is None:  # type: ignore[attr-defined]
            self._write(trainer)  # else once the test after training has its metrics

    def on_test_end(self, trainer: pl.Trainer, pl_module: SeedModel) -> None:
        if self._text is not None and pl_module.test_results:
            values = [(name, _num(value)) for name, value in pl_module.test_results.items()]
            rows = rows_tested(trainer, trainer.datamodule)  # type: ignore[attr-defined]
            head = f"**test** after training ({rows} rows)"
            self._text += f"\n\n{head}\n\n" + table(("metric", "value"), values)
        self._write(trainer)

    def on_exception(self, trainer: pl.Trainer, pl_module: SeedModel, error: BaseException) -> None:
        self._write(trainer)  # a test that failed: the card without it

    def _write(self, trainer: pl.Trainer) -> None:
        if self._text is None:
            return
        for writer in tensorboards(trainer):
            writer.add_text(self.TAG, self._text, trainer.global_step)
        self._text = None

    def card(self, trainer: pl.Trainer, model: SeedModel) -> str:
        """The card in Markdown: a heading line, the tables, the config."""
        seconds = time.perf_counter() - self._started
        kind = type(model).__name__
        name = f"**{self.label}** · {kind}" if self.label else f"**{kind}**"
        head = (
            f"{name}: {trainer.current_epoch} epoch(s), {trainer.global_step} step(s) in "
            f"{seconds:.2f} s on {trainer.strategy.root_device}"
        )
        parts = [head, self._results(trainer, model), self._parameters(model)]
        predictions = self._predictions(model)
        if predictions:
            parts.append(predictions)
        parts.append(
            "**config**: the command line's overrides, then the model, loss, optimizer and data "
            f"sections\n\n```yaml\n{self._config(model)}```"
        )
        return "\n\n".join(parts)

    def _results(self, trainer: pl.Trainer, model: SeedModel) -> str:
        rows = []
        if model.last_loss is not None:
            rows.append(("final loss (last step)", _num(float(model.last_loss))))
        best = best_epoch(model.history, self.metric, self.mode)
        if best:
            rows.append((f"best {self.metric}", f"{_num(best['value'])} (epoch {best['epoch']})"))
        final = model.history[-1] if model.history else {}
        rows += [(f"final {k}", _num(v)) for k, v in final.items() if "/" in k]
        lr = model.learning_rates()
        if lr:
            changed = f"{_num(lr['first'])} -> {_num(lr['last'])}"
            rows.append(
                ("learning rate", changed if lr["last"] != lr["first"] else _num(lr["last"]))
            )
        stopped = stopped_early(trainer)
        if stopped:
            rows.append(("stopped early", f"at epoch {stopped['epoch']}: {stopped['reason']}"))
        return table(("result", "value"), rows)

    @staticmethod
    def _parameters(model: SeedModel) -> str:
        first = model.first_step or {}
        before, gradients = first.get("parameters") or {}, first.get("gradients") or {}
        rows = [
            (f"`{k}`", _num(before.get(k)), _num(gradients.get(k)), _num(v))
            for k, v in model.scalar_values().items()
        ]
        return table(
            ("parameter", "before training", "dL/dparam at step 0", "after training"), rows
        )

    def _predictions(self, model: SeedModel) -> str | None:
        inputs = self._inputs(model)
        if not inputs:
            return None
        after = model.predict_at(inputs)
        before: Sequence[list[float] | None] = self._before or [None] * len(inputs)
        saved = model.predictions_before or {}
        if saved.get("predict_at") == inputs and saved.get("predictions") is not None:
            before = saved["predictions"]  # a resumed run's are those of the whole run
        rows = [
            (format_row(x, DIGITS), _row(b), format_row(a, DIGITS))
            for x, b, a in zip(inputs, before, after, strict=True)
        ]
        return table(("x", "prediction before training", "prediction after training"), rows)

    @staticmethod
    def _inputs(model: SeedModel) -> list[list[float]] | None:
        return as_rows((model.run_config or {}).get("predict_at"))

    @staticmethod
    def _config(model: SeedModel) -> str:
        """The overrides and the config sections the user chose, as YAML, each section headed by
        the option of its group (``model:  # model=linear``)."""
        from omegaconf import OmegaConf

        chosen = _choices()
        overrides = [
            _override(o) for o in task_overrides() if not o.lstrip("+~").startswith("paths.")
        ]
        text = OmegaConf.to_yaml({"overrides": overrides})
        for key in SECTIONS:
            section = (model.run_config or {}).get(key)
            if section is None:
                continue
            body = OmegaConf.to_yaml({key: _shown(section)})
            if key in chosen:
                first, _, rest = body.partition("\n")
                body = f"{first}  # {key}={chosen[key]}\n{rest}"
            text += body
        return text


#: The config sections the card shows (model.run_config holds them resolved).
SECTIONS = ("model", "loss", "optimizer", "data")


def table(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table: named columns (an unnamed header renders as an empty row)."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _row(values: list[float] | None) -> str:
    return "-" if values is None else format_row(values, DIGITS)


def _num(value: float | None) -> str:
    return "-" if value is None else rounded(float(value), DIGITS)


def _choices() -> dict[str, str]:
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return {}
    choices = HydraConfig.get().runtime.choices
    return {k: str(choices[k]) for k in SECTIONS if choices.get(k) is not None}


def _shown(value: Any) -> Any:
    """A config value as the card shows it: keys like ``_target_`` and ``_partial_`` (how Hydra
    builds it, not what the user chose) left out, absolute paths cut (:func:`_path`)."""
    if isinstance(value, dict):
        return {k: _shown(v) for k, v in value.items() if not str(k).startswith("_")}
    if isinstance(value, list):
        return [_shown(v) for v in value]
    if isinstance(value, str):
        return _path(value)
    return value


def _override(override: str) -> str:
    key, eq, value = override.partition("=")
    return f"{key}{eq}{_path(value)}" if eq else override


def _path(text: str) -> str:
    """An absolute path as the card shows it: relative to the project checkout where it lies
    inside it (``data/y_equals_2x.csv``), else ``.../<file name>``; other text as it is."""
    if not os.path.isabs(text):
        return text
    path = Path(text)
    try:
        return path.relative_to(PROJECT_ROOT).as_posix()
    except ValueError:
        return f".../{path.name}"
