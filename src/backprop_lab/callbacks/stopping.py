"""Early stopping: Lightning's own EarlyStopping, off unless a patience is given, and what it did
in words for the report and summary.json."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import EarlyStopping
from lightning.pytorch.callbacks.early_stopping import EarlyStoppingReason


def early_stopping(
    monitor: str,
    mode: str = "min",
    patience: int | None = None,
    min_delta: float = 0.0,
    **options: Any,
) -> EarlyStopping | None:
    """``EarlyStopping(monitor, mode, patience, min_delta, **options)``, or None (no callback: the
    run trains its max_epochs) when ``patience`` is null, as conf/callbacks/default.yaml has it.
    ``options`` are EarlyStopping's other arguments (``+callbacks.early_stopping.
    stopping_threshold=1e-3``)."""
    if patience is None:
        return None
    return EarlyStopping(
        monitor=monitor, mode=mode, patience=patience, min_delta=min_delta, **options
    )


def stopped_early(trainer: pl.Trainer) -> dict[str, Any] | None:
    """``{"epoch": 37, "reason": "..."}`` when an EarlyStopping callback ended this fit at epoch
    37 (the epoch numbers of metrics.csv, from 0), else None."""
    for callback in trainer.callbacks:  # type: ignore[attr-defined]
        if not isinstance(callback, EarlyStopping):
            continue
        reason = callback.stopping_reason
        # stopped_epoch survives a resume; it is this fit's stop only at its last epoch
        if reason is EarlyStoppingReason.NOT_STOPPED:
            continue
        if callback.stopped_epoch != trainer.current_epoch - 1:
            continue
        return {"epoch": int(callback.stopped_epoch), "reason": _reason(callback, trainer)}
    return None


def _reason(callback: EarlyStopping, trainer: pl.Trainer) -> str:
    monitor = callback.monitor
    best = float(callback.best_score)
    if callback.stopping_reason is EarlyStoppingReason.PATIENCE_EXHAUSTED:
        # Checked once an epoch, or after each validation where that runs less often.
        sparse = (trainer.check_val_every_n_epoch or 1) > 1 and trainer.num_val_batches
        every = "validation checks" if sparse else "epochs"
        return (
            f"{monitor} did not improve by more than {abs(callback.min_delta):g} for "
            f"{callback.wait_count} {every} (best {best:.6g})"
        )
    if callback.stopping_reason is EarlyStoppingReason.NON_FINITE_METRIC:
        return f"{monitor} was not finite (best before it {best:.6g})"
    return " ".join(str(callback.stopping_reason_message or callback.stopping_reason).split())
