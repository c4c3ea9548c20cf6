"""The LightningModule every seed model shares: objective, gradients, metrics, logging, optimiser.

A model subclass holds only its math: its parameters, its forward pass, its gradients by the chain
rule (``backward_by_hand``) and the seed's names for its parameters. Everything else lives here.

``gradients="autograd"`` (the default) trains with ``loss.backward()``; ``gradients="manual"``
trains with the hand-derived gradients through Lightning's manual optimisation.

Logging is kept off the hot path: per-step values go straight to the loggers every
``trainer.log_every_n_steps`` steps (``self.log`` costs ~0.25-0.75 ms a call; a 300-step run
would spend more time logging than training), and the epoch's loss and metrics are summed on the
device by a torchmetrics Metric (training/metrics.py), then go to the loggers and to
``trainer.callback_metrics`` once an epoch. benchmarks/ measures it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import partial
from typing import cast

import lightning.pytorch as pl
import torch
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.core.optimizer import LightningOptimizer
from lightning.pytorch.utilities.types import LRSchedulerConfigType, OptimizerLRSchedulerConfig
from torch import Tensor, nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler, ReduceLROnPlateau

from backprop_lab.errors import Diverged
from backprop_lab.training.metrics import EpochMetrics
from backprop_lab.training.objective import Objective
from backprop_lab.training.optim import SGD

Batch = tuple[Tensor, Tensor]
#: One path of the chain rule: (symbol of a local derivative, its value per row of the batch).
Path = list[tuple[str, Tensor]]


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
        outputs: int = 1,
        scheduler: Callable[[Optimizer], LRScheduler] | None = None,
        monitor: str = "Loss/train",
    ) -> None:
        """``gradients`` is "autograd" or "manual" (schema.py checks a config's); ``outputs`` is
        the number of output columns, which the epoch metrics keep sums for; ``scheduler``, a
        learning-rate scheduler factory (``scheduler=step``; None: a constant rate), stepped once
        an epoch, and ``monitor`` the metric a ReduceLROnPlateau one watches (objective.metric)."""
        super().__init__()
        self.objective = objective or Objective()
        self.optimizer_factory = optimizer or partial(SGD, lr=0.01)
        self.scheduler_factory = scheduler
        self.monitor = monitor
        self.gradients = gradients
        self.automatic_optimization = gradients != "manual"
        # No epoch metric that repeats the loss (train/mse under a plain MSE objective).
        same = self.objective.plain_term
        self.train_metrics = EpochMetrics("train", outputs, same_as_loss=same)
        self.val_metrics = EpochMetrics("val", outputs, same_as_loss=same)
        # The test split's every metric (test/mse too), computed in one trainer.test after fit,
        # so never kept in checkpoints: its states stay out of the state_dict.
        self.test_metrics = EpochMetrics("test", outputs)
        self.test_metrics.persistent(False)
        #: The last trainer.test's metrics as floats (Loss/test, test/mse, ...); None before one.
        self.test_results: dict[str, float] | None = None
        self.last_loss: Tensor | None = None
        self._flat_places: tuple[list[str], dict[str, int]] | None = None  # (seed_values)
        #: The last validation's epoch metrics, for the epoch's row of ``history``.
        self.val_values: dict[str, Tensor] = {}
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
        #: The run's first step by seed name: the parameters before it, their gradients at it and
        #: the parameters after it ({"parameters", "gradients", "after"}; a one-step seed run is
        #: all about these), kept in its checkpoints so a resumed run reports the whole run's.
        self.first_step: dict[str, dict[str, float]] | None = None

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
            optimizer = cast(LightningOptimizer, self.optimizers())  # this module makes one
            for name, param in self.trainable().items():
                param.grad = grads[name]
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        if not math.isfinite(loss.item()):  # .item(): ~1 us on the CPU, torch.isfinite ~6 us
            self._diverged(loss)
        self.train_metrics.update(loss, y_hat, batch[1])
        self.last_loss = loss.detach()
        if self._is_log_step():
            self._log_now({"Loss/train_step": loss, **{f"train/{k}": v for k, v in parts.items()}})
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

    def on_before_optimizer_step(self, optimizer: Optimizer) -> None:
        if self.first_step is None and self.global_step == 0:
            grads = {n: p.grad for n, p in self.trainable().items() if p.grad is not None}
            self.first_step = {
                "parameters": self.scalar_values(),
                "gradients": self.seed_values(grads) if grads else {},
            }

    def on_train_batch_end(self, outputs: object, batch: Batch, batch_idx: int) -> None:
        if self.global_step == 1 and self.first_step and "after" not in self.first_step:
            self.first_step["after"] = self.scalar_values()

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        y_hat, loss, _ = self.compute_loss(batch)
        self.val_metrics.update(loss, y_hat, batch[1])

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        y_hat, loss, _ = self.compute_loss(batch)
        self.test_metrics.update(loss, y_hat, batch[1])

    def on_test_epoch_end(self) -> None:
        values = self._log_epoch(self.test_metrics)
        self.log_dict(values, sync_dist=True, logger=False)  # what trainer.test returns
        self.test_results = {k: float(v) for k, v in values.items()}

    def on_train_epoch_end(self) -> None:
        train = self._log_epoch(self.train_metrics)
        # Validation ran before this hook; callback_metrics add what callbacks logged (lr-SGD).
        row: dict[str, float] = {"epoch": self.current_epoch, "step": self.global_step}
        row.update({k: float(v) for k, v in {**self.val_values, **train}.items()})
        callbacks = self.trainer.callback_metrics.items()
        row.update({k: float(v) for k, v in callbacks if v.numel() == 1 and k not in row})
        self.history.append(row)
        self._history_lines.append(json.dumps(row))
        if not self.automatic_optimization:
            self._step_scheduler()
        elif self.trainer.fit_loop.restarting:
            self._step_scheduler(plateau_only=True)

    def _step_scheduler(self, plateau_only: bool = False) -> None:
        """Under manual optimisation Lightning steps no scheduler: step it here, once an epoch, as
        Lightning would (after the epoch's metrics are in ``callback_metrics``, before the
        epoch-end checkpoint). ``plateau_only``: the end of an epoch a run resumed in the middle
        of, where Lightning steps the other schedulers but no ReduceLROnPlateau (it does not keep
        the metric in its checkpoints, and skips the step; the uninterrupted run took it)."""
        scheduler = self.lr_schedulers()
        if isinstance(scheduler, ReduceLROnPlateau):
            scheduler.step(self._monitored())
        elif scheduler is not None and not plateau_only:
            cast(LRScheduler, scheduler).step()

    def on_train_start(self) -> None:
        """A ReduceLROnPlateau step that a resumed run owes: Lightning steps a plateau scheduler
        after the epoch-end checkpoint is saved, and on resuming from that checkpoint skips the
        step (it does not keep the metric). The epoch's row of ``history`` does: step it here
        with that value, as the uninterrupted run did."""
        for config in self.trainer.lr_scheduler_configs:
            scheduler = config.scheduler
            progress = self.trainer.fit_loop.epoch_progress.total
            epochs = progress.processed  # type: ignore[attr-defined]  # a _ProcessedTracker
            if isinstance(scheduler, ReduceLROnPlateau) and scheduler.last_epoch < epochs:
                value = self.history[-1].get(self.monitor) if self.history else None
                if value is not None and scheduler.last_epoch == epochs - 1:
                    scheduler.step(value)

    def _monitored(self) -> Tensor:
        value = self.trainer.callback_metrics.get(self.monitor)
        if value is None:
            available = ", ".join(sorted(self.trainer.callback_metrics)) or "none"
            raise MisconfigurationException(
                f"ReduceLROnPlateau watches {self.monitor} (objective.metric), which this run "
                f"does not log; the metrics it logs: {available}"
            )
        return value

    def on_validation_epoch_end(self) -> None:
        values = self._log_epoch(self.val_metrics)
        if not self.trainer.sanity_checking:
            self.val_values = values

    def on_train_end(self) -> None:
        # Under data-parallel training each process saw its share of the last batch: the final
        # loss is their mean (equal shares), the same on every process.
        if self.last_loss is not None and self.trainer.world_size > 1:
            self.last_loss = self.trainer.strategy.reduce(self.last_loss, reduce_op="mean")

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Besides Lightning's state: the run's config, and what a resumed run needs to report as
        the whole run did (history, the last loss, the predictions before training, the data it
        trains on). Plain values and tensors only; the epoch's metric sums so far are in the
        state_dict, as persistent torchmetrics states."""
        if self.run_config is not None:
            checkpoint["run_config"] = self.run_config
        datamodule = self.trainer.datamodule  # type: ignore[attr-defined]  # set by fit
        checkpoint["run_state"] = {
            "history": "\n".join(self._history_lines),
            "last_loss": None if self.last_loss is None else float(self.last_loss),
            "predictions_before": self.predictions_before,
            "first_step": self.first_step,
            "data": datamodule.fingerprint() if hasattr(datamodule, "fingerprint") else None,
        }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint.get("run_state")
        if not state:
            return
        self._history_lines = state["history"].split("\n") if state["history"] else []
        self.history = [json.loads(line) for line in self._history_lines]
        if state["last_loss"] is not None:
            self.last_loss = torch.tensor(state["last_loss"], dtype=torch.float64)
        self.predictions_before = state["predictions_before"]
        self.first_step = state.get("first_step")

    def configure_optimizers(self) -> Optimizer | OptimizerLRSchedulerConfig:
        """The optimizer alone, or with a scheduler Lightning's dict form, stepped every epoch
        (under manual gradients by :meth:`_step_scheduler`)."""
        optimizer = self.optimizer_factory(list(self.trainable().values()))
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer)
        for group in optimizer.param_groups:  # the rate before any step, kept in checkpoints
            group.setdefault("initial_lr", group["lr"])  # (ReduceLROnPlateau sets none)
        config: LRSchedulerConfigType = {"scheduler": scheduler, "interval": "epoch"}
        if isinstance(scheduler, ReduceLROnPlateau) and self.automatic_optimization:
            config["monitor"] = self.monitor  # (under manual gradients _step_scheduler reads it)
        return {"optimizer": optimizer, "lr_scheduler": config}

    def learning_rates(self) -> dict[str, float] | None:
        """The learning rate before training and now, ``{"first", "last"}`` (equal without a
        scheduler); None before the Trainer has made the optimizer."""
        try:
            trainer = self.trainer
        except RuntimeError:  # not attached to a Trainer (a run that stopped before fit)
            return None
        if not trainer.optimizers:
            return None
        group = trainer.optimizers[0].param_groups[0]
        return {"first": float(group.get("initial_lr", group["lr"])), "last": float(group["lr"])}

    # --- values by name, predictions ------------------------------------------------------------
    def named_scalars(self) -> dict[str, Tensor]:
        """Every parameter entry as a 0-d tensor, named as the seed names it."""
        return self.seed_names(dict(self.named_parameters()))

    def seed_slots(self) -> dict[str, tuple[str, int]]:
        """Where each seed-named scalar lives: (parameter name, index into the flattened
        parameter). Found by handing ``seed_names`` tensors that hold their own flat positions."""
        params = dict(self.named_parameters())
        starts, codes, offset = {}, {}, 0
        for name, p in params.items():
            starts[name] = offset
            codes[name] = torch.arange(offset, offset + p.numel(), dtype=torch.float64)
            codes[name] = codes[name].view(p.shape)
            offset += p.numel()
        slots = {}
        for key, code in self.seed_names(codes).items():
            flat = int(code)
            name = next(n for n, s in starts.items() if s <= flat < s + params[n].numel())
            slots[key] = (name, flat - starts[name])
        return slots

    def seed_groups(self) -> dict[str, list[str]]:
        """The seed names each parameter tensor holds, in the seed's order (``W1``: w1..w4)."""
        groups: dict[str, list[str]] = {name: [] for name, _ in self.named_parameters()}
        for seed, (name, _) in self.seed_slots().items():
            groups[name].append(seed)
        return groups

    def seed_values(self, tensors: Mapping[str, Tensor]) -> dict[str, float]:
        """Per-parameter tensors (values or gradients) as Python floats under the seed's names,
        in one copy from the device.

        Speed: for every parameter (the values, or all their gradients), one flat copy read at
        the seed names' places; ``seed_names`` indexes each name out of its tensor, ~100 us for
        sigmoid_net's twelve, twice a step of a seed run. (benchmarks/run.py, section long:
        "project model=sigmoid_net, default callbacks".)"""
        if self._flat_places is None:
            self._flat_places = self._places()
        names, places = self._flat_places
        if list(tensors) != names:  # some of the parameters: each name indexed out
            return _floats(self.seed_names(tensors))
        flat = torch.cat([t.detach().reshape(-1) for t in tensors.values()]).tolist()
        return {seed: flat[i] for seed, i in places.items()}

    def _places(self) -> tuple[list[str], dict[str, int]]:
        """The parameters' names in order, and each seed name's place in their flattened
        concatenation."""
        offsets: dict[str, int] = {}
        offset = 0
        for name, p in self.named_parameters():
            offsets[name], offset = offset, offset + p.numel()
        slots = self.seed_slots().items()
        return list(offsets), {seed: offsets[name] + index for seed, (name, index) in slots}

    def scalar_values(self) -> dict[str, float]:
        """Parameter values by seed name as Python floats (one device sync)."""
        return self.seed_values(dict(self.named_parameters()))

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
        """Every ``trainer.log_every_n_steps`` steps, counted across epochs, when there are loggers
        (none without a trainer)."""
        if not self.loggers:
            return False
        every = self.trainer.log_every_n_steps  # type: ignore[attr-defined]  # set by __init__
        return every > 0 and self.global_step % every == 0

    def _log_now(self, metrics: Mapping[str, Tensor | float]) -> None:
        """Scalars to every logger at the current step, without ``self.log``'s bookkeeping: the
        per-step values at an interval and the parameters once an epoch, as Lightning's own
        LearningRateMonitor writes its values."""
        if not self.loggers:
            return
        values = {k: float(v.detach()) if isinstance(v, Tensor) else v for k, v in metrics.items()}
        for logger in self.loggers:
            logger.log_metrics(values, step=self.global_step)

    def _log_epoch(self, metrics: EpochMetrics) -> dict[str, Tensor]:
        """An epoch's metrics, to the loggers and to ``trainer.callback_metrics`` (where
        EarlyStopping, ModelCheckpoint's ``monitor`` and ReduceLROnPlateau read them), then reset
        for the next epoch. The values are already the whole epoch's over every process
        (torchmetrics sums the states).

        They go into ``callback_metrics`` as Lightning's own LearningRateMonitor puts its rates
        there, and to the loggers directly, as the per-step values do. Through ``self.log`` each
        would cost ~0.75 ms at an epoch's end (Lightning moves its record of the value to the
        value's device at every call), where an epoch of a seed model's long run is one to three
        steps of ~0.2 ms; and Lightning would add an ``epoch`` scalar beside them, a chart no
        learner looks for. (benchmarks/run.py, section long: "project model=sigmoid_net,
        default callbacks".)"""
        values = metrics.compute()
        metrics.reset()
        self.trainer.callback_metrics.update(values)
        self._log_now(values)
        return values


def _floats(scalars: Mapping[str, Tensor]) -> dict[str, float]:
    values = torch.stack([v.detach().to(torch.float64) for v in scalars.values()]).tolist()
    return dict(zip(scalars, values, strict=True))


def as_parameter(values: float | Sequence, *, trainable: bool = True) -> nn.Parameter:
    """A parameter made from a config value (a number or nested list) in the default dtype.

    The training dtype is the default one where the model is built (``trainer.init_module()``
    sets float64 under trainer.precision=64), so 0.35 becomes the float64 nearest 0.35, not a
    float32 widened (0.3499999940395355). schema.py has checked that the values fit that dtype.
    """
    tensor = torch.tensor(values, dtype=torch.get_default_dtype())
    return nn.Parameter(tensor, requires_grad=trainable)
