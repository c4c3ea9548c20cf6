"""The LightningModule every seed model shares: objective, gradients, metrics, logging, optimiser.

A model subclass holds only its math: its parameters, its forward pass, its gradients by the chain
rule (``backward_by_hand``) and the seed's names for its parameters. Everything else lives here.

``gradients="autograd"`` (the default) trains with ``loss.backward()``; ``gradients="manual"``
trains with the hand-derived gradients through Lightning's manual optimisation.

Logging is kept off the hot path: per-step values go straight to the loggers every
``trainer.log_every_n_steps`` steps, and the epoch's loss and metrics are accumulated on the device
and logged once per epoch (``self.log`` costs ~0.25 ms a call; a 300-step run would spend more time
logging than training).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import partial

import lightning.pytorch as pl
import torch
from torch import Tensor, nn
from torch.optim import Optimizer
from torchmetrics import MeanAbsoluteError, MeanSquaredError, R2Score

from backprop_lab.errors import Diverged
from backprop_lab.losses import Objective
from backprop_lab.optim import SGD

Batch = tuple[Tensor, Tensor]
#: One path of the chain rule: (symbol of a local derivative, its value per row of the batch).
Path = list[tuple[str, Tensor]]
GRADIENT_MODES = ("autograd", "manual")


class _SplitMetrics(nn.Module):
    """MSE, MAE and R^2 of one split, updated every step and computed once per epoch.

    R^2 needs at least two samples; it is reported only for epochs that saw two or more.
    """

    def __init__(self) -> None:
        super().__init__()
        self.mse = MeanSquaredError()
        self.mae = MeanAbsoluteError()
        self.r2 = R2Score()
        self.register_buffer("loss_sum", torch.zeros((), dtype=torch.float64), persistent=False)
        self.samples = 0

    def update(self, loss: Tensor, y_hat: Tensor, y: Tensor) -> None:
        y_hat, y = y_hat.detach(), y.detach()
        self.mse.update(y_hat, y)
        self.mae.update(y_hat, y)
        self.r2.update(y_hat, y)
        self.loss_sum += loss.detach() * len(y)
        self.samples += len(y)

    def compute(self, prefix: str) -> dict[str, Tensor]:
        if not self.samples:
            return {}
        out = {
            f"{prefix}/loss_epoch": self.loss_sum / self.samples,
            f"{prefix}/mse": self.mse.compute(),
            f"{prefix}/mae": self.mae.compute(),
        }
        if self.samples >= 2:
            out[f"{prefix}/r2"] = self.r2.compute()
        return out

    def reset(self) -> None:
        for metric in (self.mse, self.mae, self.r2):
            metric.reset()
        self.loss_sum.zero_()
        self.samples = 0


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
        #: The resolved model, loss, optimizer and data config of the run, saved in checkpoints
        #: so a checkpoint can be rebuilt (predict.py) and recognised (resuming).
        self.run_config: dict | None = None

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
        if not torch.isfinite(loss):
            self._diverged(loss)
        self.train_metrics.update(loss, y_hat, batch[1])
        self.last_loss = loss.detach()
        if self._is_log_step():
            self._log_now({"train/loss": loss, **{f"train/{k}": v for k, v in parts.items()}})
        return loss

    def _diverged(self, loss: Tensor) -> None:
        lr = self.trainer.optimizers[0].param_groups[0]["lr"]
        raise Diverged(
            f"training diverged at step {self.global_step} (epoch {self.current_epoch}): the loss "
            f"is {loss.item()}. The likely cause is a learning rate too large for this model and "
            f"data (optimizer.lr={lr:g}); try a smaller one, e.g. optimizer.lr={lr / 10:g}"
        )

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        y_hat, loss, _ = self.compute_loss(batch)
        self.val_metrics.update(loss, y_hat, batch[1])

    def on_train_epoch_end(self) -> None:
        self.log_dict(self.train_metrics.compute("train"), sync_dist=True)
        self.train_metrics.reset()
        self._log_now({f"params/{k}": v for k, v in self.scalar_values().items()})
        # Validation ran before this hook: callback_metrics hold this epoch's train and val values.
        row = {"epoch": self.current_epoch, "step": self.global_step}
        row.update(
            {k: float(v) for k, v in self.trainer.callback_metrics.items() if v.numel() == 1}
        )
        self.history.append(row)

    def on_validation_epoch_end(self) -> None:
        self.log_dict(self.val_metrics.compute("val"), sync_dist=True)
        self.val_metrics.reset()

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        if self.run_config is not None:
            checkpoint["run_config"] = self.run_config

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


def _floats(scalars: Mapping[str, Tensor]) -> dict[str, float]:
    values = torch.stack([v.detach().to(torch.float64) for v in scalars.values()]).tolist()
    return dict(zip(scalars, values, strict=True))


def as_parameter(values: float | Sequence, *, trainable: bool = True) -> nn.Parameter:
    """A float32 parameter from a config value (a number or nested list)."""
    try:
        tensor = torch.as_tensor(values, dtype=torch.float32)
    except (TypeError, ValueError):
        raise ValueError(
            f"parameter values must be numbers or lists of numbers, got {values!r}"
        ) from None
    return nn.Parameter(tensor, requires_grad=trainable)
