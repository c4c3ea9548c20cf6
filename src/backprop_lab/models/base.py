"""The LightningModule every seed model shares: objective, gradients, metrics, logging, optimiser.

A model subclass holds only its math: its parameters, its forward pass, its gradients by the chain
rule (``backward_by_hand``) and the seed's names for its parameters. Everything else lives here.

``gradients="autograd"`` (the default) trains with ``loss.backward()``; ``gradients="manual"``
trains with the hand-derived gradients through Lightning's manual optimisation.

Logging is kept off the hot path: per-step values go straight to the loggers every
``trainer.log_every_n_steps`` steps, and the epoch's loss and metrics are accumulated on the device
as a few sums and logged once per epoch, also straight to the loggers (``self.log`` costs ~0.25 ms
a call; a 300-step run would spend more time logging than training). benchmarks/ measures it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import partial
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.strategies import Strategy
from torch import Tensor, nn
from torch.optim import Optimizer

from backprop_lab.errors import Diverged
from backprop_lab.training.objective import Objective
from backprop_lab.training.optim import SGD

Batch = tuple[Tensor, Tensor]
#: One path of the chain rule: (symbol of a local derivative, its value per row of the batch).
Path = list[tuple[str, Tensor]]
GRADIENT_MODES = ("autograd", "manual")


class _SplitMetrics(nn.Module):
    """Loss, MSE, MAE and R^2 of one split over an epoch, from a few sums.

    The sums, in one float64 vector: the loss times the rows, |y_hat - y| and, per output column,
    (y_hat - y)^2, y and y^2. Small batches are held and summed together once ``hold_rows`` rows
    have come (a step of one row then costs a list append, not ten tensor operations); a large
    batch is summed at once, taking the squared and absolute errors from the step's own loss
    where it has them (``known``: an MSE or MAE term), so the default MSE objective costs it two
    passes over y and one over y_hat - y. torchmetrics' MeanSquaredError, MeanAbsoluteError and
    R2Score take about twelve passes and ~0.13 ms a step on one row, ~20 ms on 2^18 rows: more
    than the step itself (benchmarks/run.py measures it). ``compute`` gives what those metrics
    give, from the sums of every process under data-parallel training; R^2 only for epochs of two
    rows or more.
    """

    def __init__(self, hold_rows: int = 1024) -> None:
        super().__init__()
        self.register_buffer("sums", torch.zeros(0, dtype=torch.float64), persistent=False)
        self.rows = 0
        self.hold_rows = hold_rows
        self._held: list[tuple[Tensor, Tensor, Tensor]] = []
        self._held_rows = 0
        self._scales: dict[tuple, Tensor] = {}

    def update(
        self, loss: Tensor, y_hat: Tensor, y: Tensor, known: Mapping[str, Tensor] = {}
    ) -> None:
        self.rows += len(y)
        if len(y) >= self.hold_rows:
            self._add(loss.detach(), len(y), y_hat.detach(), y, known)
            return
        self._held.append((loss.detach(), y_hat.detach(), y))
        self._held_rows += len(y)
        if self._held_rows >= self.hold_rows:
            self._add_held()

    def _add_held(self) -> None:
        if not self._held:
            return
        losses, y_hats, ys = zip(*self._held, strict=True)
        loss = torch.stack(losses)
        loss_sum = (loss * loss.new_tensor([len(y) for y in ys])).sum()
        self._add(loss_sum, 1, torch.cat(y_hats), torch.cat(ys))
        self._held, self._held_rows = [], 0

    def _add(
        self,
        loss: Tensor,
        loss_rows: int,
        y_hat: Tensor,
        y: Tensor,
        known: Mapping[str, Tensor] = {},
    ) -> None:
        """Add a batch's sums: ``loss * loss_rows``, then the errors and the targets' moments.

        Means the step already has (the loss, a known MSE or MAE) are added as they are and
        scaled to sums in the one ``addcmul_`` that accumulates, by a vector cached per batch
        shape. Over the batch: one difference, its absolute values summed in place
        (``F.l1_loss`` takes three passes: ~0.1 ms on 2^18 rows, ~1.5 ms on 2^18 x 2), the
        column sums of y, and the columns' sums of squares (a BLAS dot for a single column).
        """
        n, columns = y.shape[0], y.shape[1]
        squares_known = "mse" in known and columns == 1
        diff = None if squares_known and "mae" in known else y_hat - y
        # The step's MSE for one column; else per output column, as R^2 needs them.
        squared_error = known["mse"].detach().view(1) if squares_known else _column_dots(diff)
        abs_error = known["mae"].detach().view(1) if "mae" in known else diff.abs_().sum().view(1)
        sums = torch.cat((loss.view(1), abs_error, squared_error, y.sum(0), _column_dots(y)))
        mae_rows = n * columns if "mae" in known else 1
        key = (loss_rows, mae_rows, n if squares_known else 1, len(sums), sums.device)
        scale = self._scales.get(key)
        if scale is None:
            if len(self._scales) > 16:  # batch shapes come and go (the held path): keep a few
                self._scales.clear()
            scale = torch.ones(len(sums), dtype=torch.float64, device=sums.device)
            scale[:3] = scale.new_tensor([loss_rows, mae_rows, n if squares_known else 1])
            self._scales[key] = scale
        if len(self.sums) != len(sums):
            self.sums = torch.zeros(len(sums), dtype=torch.float64, device=sums.device)
        self.sums.addcmul_(sums, scale)

    def compute(self, prefix: str, strategy: Strategy | None = None) -> dict[str, Tensor]:
        """The epoch's values: loss_epoch, mse, mae and (two rows or more) r2."""
        self._add_held()
        sums, rows = self.sums, self.rows
        if strategy is not None and strategy.world_size > 1:
            sums = strategy.reduce(torch.cat((sums, sums.new_tensor([rows]))), reduce_op="sum")
            sums, rows = sums[:-1], int(sums[-1])
        if not rows:
            return {}
        # A few float64 numbers: plain Python arithmetic (~10 us), not a dozen tensor ops (~0.15 ms
        # at every epoch end, a tenth of a seed epoch).
        values = sums.tolist()
        loss, abs_error, columns = values[0], values[1], values[2:]
        n = len(columns) // 3
        squared_error, y_sum, y_squares = columns[:n], columns[n : 2 * n], columns[2 * n :]
        out = {
            f"{prefix}/loss_epoch": loss / rows,
            f"{prefix}/mse": sum(squared_error) / n / rows,
            f"{prefix}/mae": abs_error / n / rows,
        }
        if rows >= 2:
            total = [sq - s * s / rows for s, sq in zip(y_sum, y_squares, strict=True)]
            out[f"{prefix}/r2"] = _r2(squared_error, total)
        return {name: torch.tensor(value, dtype=torch.float32) for name, value in out.items()}

    def reset(self) -> None:
        self.sums = self.sums[:0]
        self.rows = 0
        self._held, self._held_rows = [], 0

    def state(self) -> dict[str, Any]:
        """The sums so far and the batches held, for a checkpoint: a run resumed from the middle
        of an epoch ends that epoch with the metrics of all its steps, bit for bit."""
        return {"sums": self.sums, "rows": self.rows, "held": [list(h) for h in self._held]}

    def load_state(self, state: Mapping[str, Any]) -> None:
        device = self.sums.device
        self.sums = state["sums"].to(device)
        self.rows = int(state["rows"])
        self._held = [tuple(t.to(device) for t in h) for h in state["held"]]
        self._held_rows = sum(len(h[2]) for h in self._held)


def _column_dots(t: Tensor) -> Tensor:
    """The sum of squares of each column of a 2-D tensor: one BLAS dot for a single column
    (~20 us on 2^18 rows; ``vecdot`` multiplies, then sums: ~5x that)."""
    if t.shape[1] == 1:
        flat = t.reshape(-1)
        return torch.dot(flat, flat).view(1)
    return torch.linalg.vecdot(t, t, dim=0)


def _r2(residual: Sequence[float], total: Sequence[float]) -> float:
    """R^2 = 1 - RSS/TSS per output column, averaged, as torchmetrics' R2Score gives it: 1 where
    RSS is ~0, else 0 where TSS is ~0 (constant targets missed)."""
    per_column = [
        1.0 if abs(rss) <= 1e-4 else 0.0 if abs(tss) <= 1e-4 else 1 - rss / tss
        for rss, tss in zip(residual, total, strict=True)
    ]
    return sum(per_column) / len(per_column)


class SeedModel(pl.LightningModule):
    """Base of every seed model.

    A subclass defines its parameters, ``forward``, ``backward_by_hand``, ``seed_names`` and
    ``penalised`` (the names of the parameters the L2 term covers: weights, not biases).
    """

    #: Number of input and output columns the model takes.
    in_features: int = 1
    out_features: int = 1
    #: Parameters the L2 penalty covers.
    penalised: tuple[str, ...] = ()
    #: The open interval the outputs lie in, where they are bounded (a sigmoid's (0, 1)).
    output_range: tuple[float, float] | None = None

    def __init__(
        self,
        objective: Objective | None = None,
        optimizer: Callable[[Iterable[nn.Parameter]], Optimizer] | None = None,
        gradients: str = "autograd",
    ) -> None:
        super().__init__()
        if gradients not in GRADIENT_MODES:
            raise ValueError(f"model.gradients must be one of {GRADIENT_MODES}, got '{gradients}'")
        self.objective = objective or Objective()
        self.optimizer_factory = optimizer or partial(SGD, lr=0.01)
        self.gradients = gradients
        self.automatic_optimization = gradients == "autograd"
        self.train_metrics = _SplitMetrics()
        self.val_metrics = _SplitMetrics()
        self.last_loss: Tensor | None = None
        #: One row per training epoch: epoch, step and every epoch-level metric (train and val).
        self.history: list[dict[str, float]] = []
        # The same rows as JSON lines, each made once: a checkpoint at every epoch end then holds
        # the whole history for the cost of one join, where copying the rows at each save cost
        # ~7 ms at 5,000 epochs (a seed model's long run saves at every one of them).
        self._history_lines: list[str] = []
        #: The resolved model, loss, optimizer and data config of the run, saved in checkpoints
        #: so a checkpoint can be rebuilt (predict.py) and recognised (resuming).
        self.run_config: dict | None = None
        #: The run's predictions before training ({"predict_at", "predictions"}), kept in its
        #: checkpoints: a resumed run reports those of the whole run.
        self.predictions_before: dict | None = None

    # --- what a subclass provides -------------------------------------------------------------
    def backward_by_hand(self, x: Tensor, grad_output: Tensor) -> dict[str, Tensor]:
        """dL/dtheta for every parameter, by the chain rule, from grad_output = dL/dy_hat."""
        raise NotImplementedError

    def seed_names(self, tensors: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Per-parameter tensors (values or gradients) as 0-d tensors under the seed's names."""
        raise NotImplementedError

    def nodes(self, x: Tensor) -> dict[str, Tensor]:
        """Every node of the forward pass by name, one value per row of x (for explain)."""
        raise NotImplementedError

    def chains(self, x: Tensor, grad_output: Tensor) -> dict[str, list[Path]]:
        """For each seed-named parameter, the chain rule written out: a list of paths from the loss
        to the parameter, each a list of (local derivative, its value per row). dL/dparameter is
        the sum over paths and rows of each path's product (for explain)."""
        raise NotImplementedError

    # --- gradients, both ways -----------------------------------------------------------------
    def trainable(self) -> dict[str, nn.Parameter]:
        return {name: p for name, p in self.named_parameters() if p.requires_grad}

    def penalised_weights(self) -> list[Tensor]:
        return [getattr(self, name) for name in self.penalised]

    def compute_loss(self, batch: Batch) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        x, y = batch
        y_hat = self(x)
        loss, parts = self.objective(y_hat, y, self.penalised_weights())
        return y_hat, loss, parts

    @torch.no_grad()
    def hand_gradients(self, batch: Batch) -> tuple[Tensor, Tensor, dict, dict[str, Tensor]]:
        """(y_hat, loss, parts, gradients) with the gradients derived by hand, no autograd."""
        x, y = batch
        y_hat, loss, parts = self.compute_loss(batch)
        grads = self.backward_by_hand(x, self.objective.grad_output(y_hat, y))
        for name in self.penalised:  # d/dW of l2/2 * ||W||^2 = l2 * W
            if self.objective.l2:
                grads[name] = grads[name] + self.objective.l2 * getattr(self, name)
        return y_hat, loss, parts, {name: grads[name] for name in self.trainable()}

    def autograd_gradients(self, batch: Batch) -> dict[str, Tensor]:
        """The same gradients by autograd, leaving ``.grad`` untouched."""
        params = self.trainable()
        with torch.enable_grad():
            _, loss, _ = self.compute_loss(batch)
            grads = torch.autograd.grad(loss, list(params.values()))
        return dict(zip(params, grads, strict=True))

    # --- training -----------------------------------------------------------------------------
    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        if self.automatic_optimization:
            y_hat, loss, parts = self.compute_loss(batch)
        else:
            y_hat, loss, parts, grads = self.hand_gradients(batch)
            optimizer = self.optimizers()
            for name, param in self.trainable().items():
                param.grad = grads[name]
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        if not math.isfinite(loss.item()):  # .item(): ~1 us on the CPU, torch.isfinite ~6 us
            self._diverged(loss)
        self.train_metrics.update(loss, y_hat, batch[1], self.objective.data_terms(loss, parts))
        self.last_loss = loss.detach()
        if self._is_log_step():
            self._log_now({"train/loss": loss, **{f"train/{k}": v for k, v in parts.items()}})
        return loss

    def _diverged(self, loss: Tensor) -> None:
        if self.global_step == 0:  # before any update: the learning rate played no part yet
            dtype = str(loss.dtype).removeprefix("torch.")
            wider = ", or train in float64 with trainer.precision=64"
            wider = "" if loss.dtype == torch.float64 else wider
            raise Diverged(
                f"the loss is {loss.item()} at step 0, before any update: the model's initial "
                f"values and the data give a loss beyond {dtype} (a value or its square "
                f"overflows). Use smaller initial values or rescale the data{wider}"
            )
        lr = self.trainer.optimizers[0].param_groups[0]["lr"]
        raise Diverged(
            f"training diverged at step {self.global_step} (epoch {self.current_epoch}): the loss "
            f"is {loss.item()}. The likely cause is a learning rate too large for this model and "
            f"data (optimizer.lr={lr:g}); try a smaller one, e.g. optimizer.lr={lr / 10:g}"
        )

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        y_hat, loss, parts = self.compute_loss(batch)
        self.val_metrics.update(loss, y_hat, batch[1], self.objective.data_terms(loss, parts))

    def on_train_epoch_end(self) -> None:
        metrics = self.train_metrics.compute("train", self.trainer.strategy)
        self.train_metrics.reset()
        params = {f"params/{k}": v for k, v in self.scalar_values().items()}
        self._log_epoch(metrics, epoch=self.current_epoch, **params)
        # Validation ran before this hook: callback_metrics hold this epoch's train and val values.
        row = {"epoch": self.current_epoch, "step": self.global_step}
        row.update(
            {k: float(v) for k, v in self.trainer.callback_metrics.items() if v.numel() == 1}
        )
        self.history.append(row)
        self._history_lines.append(json.dumps(row))

    def on_validation_epoch_end(self) -> None:
        self._log_epoch(self.val_metrics.compute("val", self.trainer.strategy))
        self.val_metrics.reset()

    def on_train_end(self) -> None:
        # Under data-parallel training each process saw its share of the last batch: the final
        # loss is their mean (equal shares), the same on every process.
        if self.last_loss is not None and self.trainer.world_size > 1:
            self.last_loss = self.trainer.strategy.reduce(self.last_loss, reduce_op="mean")

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Besides Lightning's state: the run's config, and what a resumed run needs to report as
        the whole run did (history, the epoch's sums so far, the last loss, the predictions
        before training, the data it trains on). Plain values and tensors only."""
        if self.run_config is not None:
            checkpoint["run_config"] = self.run_config
        datamodule = self.trainer.datamodule
        checkpoint["run_state"] = {
            "history": "\n".join(self._history_lines),
            "train_metrics": self.train_metrics.state(),
            "last_loss": None if self.last_loss is None else float(self.last_loss),
            "predictions_before": self.predictions_before,
            "data": datamodule.fingerprint() if hasattr(datamodule, "fingerprint") else None,
        }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint.get("run_state")
        if not state:
            return
        self._history_lines = state["history"].split("\n") if state["history"] else []
        self.history = [json.loads(line) for line in self._history_lines]
        self.train_metrics.load_state(state["train_metrics"])
        if state["last_loss"] is not None:
            self.last_loss = torch.tensor(state["last_loss"], dtype=torch.float64)
        self.predictions_before = state["predictions_before"]

    def configure_optimizers(self) -> Optimizer:
        return self.optimizer_factory(list(self.trainable().values()))

    # --- values by name, predictions ------------------------------------------------------------
    def named_scalars(self) -> dict[str, Tensor]:
        """Every parameter entry as a 0-d tensor, named as the seed names it."""
        return self.seed_names(dict(self.named_parameters()))

    def scalar_values(self) -> dict[str, float]:
        """Parameter values by seed name as Python floats (one device sync)."""
        return _floats(self.named_scalars())

    @torch.no_grad()
    def predict_at(self, inputs: Sequence[float] | Sequence[Sequence[float]]) -> list[list[float]]:
        """Predictions at plain-list inputs, a row per input (a bare number: a 1-feature row)."""
        return self(self.inputs_tensor(inputs)).to(torch.float64).tolist()

    def inputs_tensor(self, inputs: Sequence[float] | Sequence[Sequence[float]]) -> Tensor:
        """Configured inputs as an (n, in_features) tensor on the model's device and dtype."""
        param = next(self.parameters())
        x = torch.as_tensor(inputs, dtype=param.dtype, device=param.device)
        if x.ndim <= 1:
            x = x.reshape(-1, self.in_features)
        if x.ndim != 2 or x.shape[1] != self.in_features:
            raise ValueError(
                f"inputs of shape {tuple(x.shape)} do not fit {type(self).__name__}, which takes "
                f"{self.in_features} feature(s) per row"
            )
        return x

    # --- logging helpers ------------------------------------------------------------------------
    def _is_log_step(self) -> bool:
        every = self.trainer.log_every_n_steps if self._trainer is not None else 0
        return bool(self.loggers) and every > 0 and self.global_step % every == 0

    def _log_now(self, metrics: Mapping[str, Tensor | float]) -> None:
        """Write scalars to every logger at the current step, without ``self.log``'s bookkeeping."""
        if not self.loggers:
            return
        values = {k: float(v.detach()) if isinstance(v, Tensor) else v for k, v in metrics.items()}
        for logger in self.loggers:
            logger.log_metrics(values, step=self.global_step)

    def _log_epoch(self, metrics: dict[str, Tensor], **also: float | Tensor) -> None:
        """An epoch's metrics to the loggers, and into ``trainer.callback_metrics`` as ``self.log``
        would put them there for callbacks (EarlyStopping, ModelCheckpoint's ``monitor``).

        ``self.log`` costs ~0.25 ms a call: with four metrics, more than a seed's three-step epoch.
        The metrics are already the whole epoch's, summed over every process.
        """
        self.trainer.callback_metrics.update(metrics)
        self._log_now({**metrics, **also})


def _floats(scalars: Mapping[str, Tensor]) -> dict[str, float]:
    values = torch.stack([v.detach().to(torch.float64) for v in scalars.values()]).tolist()
    return dict(zip(scalars, values, strict=True))


def as_parameter(values: float | Sequence, *, trainable: bool = True) -> nn.Parameter:
    """A float32 parameter from a config value (a number or nested list).

    A value beyond float32's range (±3.4e38) keeps the parameter in float64, so that
    trainer.precision=64, which converts the model to float64, trains from it rather than from
    inf. schema.py rejects such a value for any other precision, naming its key.
    """
    try:
        exact = torch.as_tensor(values, dtype=torch.float64)
    except (TypeError, ValueError, OverflowError):  # OverflowError: an int beyond float64
        raise ValueError(
            f"parameter values must be numbers or lists of numbers, got {values!r}"
        ) from None
    tensor = exact.to(torch.float32)
    if exact.isfinite().all() and not tensor.isfinite().all():
        tensor = exact
    return nn.Parameter(tensor, requires_grad=trainable)
