"""A split's epoch metrics (loss, MSE, MAE, R^2) as one torchmetrics Metric of a few sums.

torchmetrics' MeanSquaredError, MeanAbsoluteError and R2Score each keep sums like these; one
Metric holding them all updates in one pass where three take about twelve, and gives what the
three give (tests/test_models.py compares them). As any torchmetrics state, the sums are summed
over every process when computed under data-parallel training, move with the module, and, kept
``persistent``, go into its state_dict.

Speed: a small step is held, not summed. Summing a step of one row at once (a stack of its four
terms and three in-place additions) costs ~19 us in a timing loop, but ~50 us a step inside a
training loop, whose other work leaves the caches cold for those nine tensor operations: ~0.1 x a
bare Lightning step (410-580 us), past the project's target of 1.5 x bare Lightning per step
(benchmarks/). Held, a step costs two detaches and a list append, as in the hand-fused class this
replaced (the same per-step ratio, measured side by side). Steps of fewer than ``HOLD_ROWS`` rows
wait and are summed together, in float64, once that many rows have come, and before the states
are computed or gathered from other processes (``sync``). A checkpoint keeps the rows still held,
as they are, in the ``held`` state: a run resumed from the middle of an epoch sums them as the
uninterrupted run does, bit for bit. A larger step is summed at once, a pass per term (2^18 rows of
one column: ~0.3 ms).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor
from torchmetrics import Metric

#: Steps of fewer rows are held and summed together once this many rows have come.
HOLD_ROWS = 256

Step = tuple[Tensor, Tensor, Tensor]  # (loss: a mean, or one per row; y_hat; y)


@dataclass
class _Held:
    """The steps not summed yet. A plain object: setting an nn.Module's attribute costs ~1 us."""

    steps: list[Step] = field(default_factory=list)
    rows: int = 0
    #: Rows at the top of the ``held`` state, loaded from a checkpoint, to be summed first.
    loaded: int = 0


class EpochMetrics(Metric):
    """``Loss/{prefix}``, ``{prefix}/mse``, ``/mae`` and, for two rows or more, ``/r2`` of an epoch.

    ``Loss/{prefix}`` is the row-weighted mean of the steps' losses (the objective, with any L2
    term), in the ``Loss`` group TensorBoard lists first (capitals sort before lower case, as in
    PyTorch's ``Loss/train``); mse and mae are over every element, and r2 is per output column,
    averaged, as torchmetrics' R2Score gives it (R^2 is undefined for a single row).
    ``same_as_loss`` names a metric left out because it is the loss itself (mse, when the
    objective is plain MSE).
    """

    full_state_update = False
    rows: Tensor
    loss_sum: Tensor
    moments: Tensor
    held: Tensor
    held_rows: Tensor

    def __init__(self, prefix: str, outputs: int = 1, same_as_loss: str | None = None) -> None:
        super().__init__()
        self.prefix = prefix
        self.same_as_loss = same_as_loss
        self.outputs = outputs
        # float64 whatever the training dtype: 10^7 float32 rows summed in float32 lose digits.
        zero = torch.zeros((), dtype=torch.float64)
        self.add_state("rows", zero.clone(), dist_reduce_fx="sum", persistent=True)
        self.add_state("loss_sum", zero.clone(), dist_reduce_fx="sum", persistent=True)
        # Per output column: sum |y_hat - y|, sum (y_hat - y)^2, sum y, sum y^2.
        moments = torch.zeros(4, outputs, dtype=torch.float64)
        self.add_state("moments", moments, dist_reduce_fx="sum", persistent=True)
        # The held rows as a checkpoint keeps them, a row each: loss, y_hat, y. Written by
        # state_dict, read back on loading; compute never reads them (no reduction).
        held = torch.zeros(HOLD_ROWS, 1 + 2 * outputs, dtype=torch.float64)
        self.add_state("held", held, dist_reduce_fx=None, persistent=True)
        self.add_state("held_rows", zero.clone(), dist_reduce_fx=None, persistent=True)
        self._held = _Held()
        self.register_load_state_dict_post_hook(EpochMetrics._hold_loaded_rows)

    def update(self, loss: Tensor, y_hat: Tensor, y: Tensor) -> None:
        """Add a step: its loss (a mean over its rows), predictions and targets (rows, outputs)."""
        rows = len(y)
        if rows >= HOLD_ROWS:
            self._add(loss * rows, y_hat - y, y)
            return
        held = self._held
        held.steps.append((loss.detach(), y_hat.detach(), y))
        held.rows += rows
        if held.rows >= HOLD_ROWS:
            self._add_held()

    def _add(self, loss_sum: Tensor, error: Tensor, y: Tensor) -> None:
        """Add rows: their loss sum, ``error`` (y_hat - y, a tensor of ours, made its absolute
        value in place: |e|.|e| is e.e bit for bit, and a second batch-sized tensor a step costs
        a fresh 1 MiB mapping under glibc's defaults, ~0.1 ms at 2^18 rows; benchmarks/run.py
        section data_equal) and y."""
        self.rows.add_(len(y))
        self.loss_sum.add_(loss_sum)
        abs_error = error.abs_()
        terms = (abs_error.sum(0), _squares(abs_error), y.sum(0), _squares(y))
        self.moments.add_(torch.stack(terms))

    def _held_steps(self) -> list[Step]:
        """The held steps, those loaded from a checkpoint (float64 rows of ``held``) first."""
        if not self._held.loaded:
            return self._held.steps
        loaded, outputs = self.held[: self._held.loaded], self.outputs
        return [
            (loaded[:, 0], loaded[:, 1 : 1 + outputs], loaded[:, 1 + outputs :]),
            *self._held.steps,
        ]

    def _add_held(self) -> None:
        """Sum the held steps as one batch, in float64: the same numbers, held or loaded."""
        steps = self._held_steps()
        if steps:
            device = self.moments.device
            losses, y_hat, y = (t.to(device, torch.float64) for t in _rows(steps))
            self._add(losses.sum(), y_hat - y, y)
        self._held = _Held()

    def state_dict(  # torchmetrics' own signature
        self, destination: dict | None = None, prefix: str = "", keep_vars: bool = False
    ) -> dict:
        """The states, with the rows still held written into ``held``, as they are."""
        steps = self._held_steps()
        self.held.zero_()
        if steps:
            losses, y_hat, y = _rows(steps)
            self.held[: len(y)] = torch.cat((losses[:, None], y_hat, y), dim=1)
        self.held_rows.fill_(self._held.rows)
        return super().state_dict(destination=destination, prefix=prefix, keep_vars=keep_vars)

    def _hold_loaded_rows(self, incompatible_keys: object) -> None:
        """After loading a checkpoint (torch's load_state_dict post-hook, called with this
        module): the rows it held, now in ``held``, are held again."""
        rows = int(self.held_rows)
        self._held = _Held(rows=rows, loaded=rows)

    def sync(self, *args, **kwargs) -> None:
        """Sum the held steps into the states first: only states are gathered across processes
        (torchmetrics calls this before ``compute``, with one process too)."""
        self._add_held()
        super().sync(*args, **kwargs)

    def reset(self) -> None:
        super().reset()
        self._held = _Held()

    def compute(self) -> dict[str, Tensor]:
        """The epoch's values, as 0-d float64 tensors on the states' device; none without rows."""
        rows = self.rows
        if not rows:
            return {}
        abs_error, squared_error, y_sum, y_squares = self.moments
        elements = rows * len(squared_error)
        values = {
            "mse": squared_error.sum() / elements,
            "mae": abs_error.sum() / elements,
        }
        if rows >= 2:
            values["r2"] = r2_score(squared_error, y_squares - y_sum * y_sum / rows)
        values.pop(self.same_as_loss or "", None)
        named = {f"{self.prefix}/{name}": value for name, value in values.items()}
        return {f"Loss/{self.prefix}": self.loss_sum / rows, **named}


def _rows(steps: list[Step]) -> tuple[Tensor, Tensor, Tensor]:
    """The steps as one batch: a loss per row, y_hat, y."""
    losses = torch.cat([loss.expand(len(y)) for loss, _, y in steps])
    return losses, torch.cat([y_hat for _, y_hat, _ in steps]), torch.cat([y for *_, y in steps])


def _squares(t: Tensor) -> Tensor:
    """Each column's sum of squares: a BLAS dot for a single column (~20 us on 2^18 rows;
    ``vecdot``, which multiplies, then sums, ~5x that)."""
    if t.shape[1] == 1:
        flat = t.reshape(-1)
        return torch.dot(flat, flat).view(1)
    return torch.linalg.vecdot(t, t, dim=0)


def r2_score(residual: Tensor, total: Tensor) -> Tensor:
    """R^2 = 1 - RSS/TSS per output column, averaged, as torchmetrics' R2Score gives it: 1 where
    RSS is ~0, else 0 where TSS is ~0 (constant targets missed)."""
    near_zero = 1e-4
    fitted = 1 - residual / total
    per_column = torch.where(total.abs() <= near_zero, 0.0, fitted)
    return torch.where(residual.abs() <= near_zero, 1.0, per_column).mean()
