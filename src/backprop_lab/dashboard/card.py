"""The run card: Text tab ``run/card``, the run's results and composed config on one page."""

from __future__ import annotations

import time
from pathlib import Path

import lightning.pytorch as pl

from backprop_lab.callbacks import best_epoch, tensorboards
from backprop_lab.config import task_overrides
from backprop_lab.models import SeedModel
from backprop_lab.rows import as_rows, format_row


class RunCard(pl.Callback):
    """Text tab, ``run/card``, once at the end of training: the run's final results (loss, best
    epoch, metrics, parameters, predictions before and after) and its composed config.

    The config is ``config_file`` (Hydra's ``.hydra/config.yaml`` of the run) resolved, or, when
    there is none, the model, loss, optimizer and data config the checkpoint also holds.
    """

    def __init__(
        self,
        metric: str = "train/loss_epoch",
        mode: str = "min",
        config_file: str | None = None,
    ) -> None:
        self.metric, self.mode, self.config_file = metric, mode, config_file
        self._started = 0.0
        self._before: list[list[float]] | None = None

    def on_train_start(self, trainer: pl.Trainer, pl_module: SeedModel) -> None:
        self._started = time.perf_counter()
        inputs = self._inputs(pl_module)
        self._before = pl_module.predict_at(inputs) if inputs and trainer.is_global_zero else None

    def on_train_end(self, trainer: pl.Trainer, pl_module: SeedModel) -> None:
        writers = tensorboards(trainer)
        if writers:
            text = self.card(trainer, pl_module)
            for writer in writers:
                writer.add_text("run/card", text, trainer.global_step)

    def card(self, trainer: pl.Trainer, model: SeedModel) -> str:
        """The card in Markdown: a heading line, a table of results, the config."""
        seconds = time.perf_counter() - self._started
        head = (
            f"**{type(model).__name__}**: {trainer.current_epoch} epoch(s), "
            f"{trainer.global_step} step(s) in {seconds:.2f} s on {trainer.strategy.root_device}"
        )
        overrides = task_overrides()
        if overrides:
            head += "  \noverrides: " + " ".join(f"`{o}`" for o in overrides)
        rows = []
        if model.last_loss is not None:
            rows.append(("final loss (last step)", f"{float(model.last_loss):.6g}"))
        best = best_epoch(model.history, self.metric, self.mode)
        if best:
            rows.append((f"best {self.metric}", f"{best['value']:.6g} (epoch {best['epoch']})"))
        final = model.history[-1] if model.history else {}
        rows += [(f"final {k}", f"{v:.6g}") for k, v in final.items() if "/" in k]
        rows += [(k, f"{v:.6g}") for k, v in model.scalar_values().items()]
        inputs = self._inputs(model)
        if inputs:
            after = model.predict_at(inputs)
            before: list[list[float] | None] = [None] * len(inputs)
            if self._before:
                before = list(self._before)
            for x, b, a in zip(inputs, before, after, strict=True):
                shown = format_row(a) if b is None else (f"{format_row(b)} -> {format_row(a)}")
                rows.append((f"prediction at x={format_row(x)}", shown))
        table = "| | |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in rows)
        return f"{head}\n\n{table}\n\n**config**\n\n```yaml\n{self._config(model)}```"

    @staticmethod
    def _inputs(model: SeedModel) -> list[list[float]] | None:
        return as_rows((model.run_config or {}).get("predict_at"))

    def _config(self, model: SeedModel) -> str:
        from omegaconf import OmegaConf
        from omegaconf.errors import OmegaConfBaseException

        path = Path(self.config_file) if self.config_file else None
        if path is not None and path.is_file():
            config = OmegaConf.load(path)
            try:
                return OmegaConf.to_yaml(config, resolve=True)
            except OmegaConfBaseException:  # a resolver only the run's own process had
                return OmegaConf.to_yaml(config)
        return OmegaConf.to_yaml(OmegaConf.create(model.run_config or {}))
