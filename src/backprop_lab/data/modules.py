"""Data: a CSV file or a seeded synthetic set, held in memory and served as sliced batches.

The seeds' data sets have three rows; the synthetic generator makes millions. Both live in memory as
two tensors, and :class:`TensorBatches` cuts batches straight out of them: no per-row collate and
no worker processes, which a data set already in memory does not need.
"""

from __future__ import annotations

import hashlib
import math
import secrets
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from torch import Tensor

from backprop_lab.data import csvfile
from backprop_lab.errors import BackpropLabError


class DataError(BackpropLabError, ValueError):
    """A data file or data setting that cannot be used; the message names the file and the fix."""


def take_rows(t: Tensor, index: Tensor) -> Tensor:
    """``t[index]`` for a 2-D tensor: the rows ``index`` names. A one-column tensor is gathered as
    a vector, 2-4x faster on the CPU than indexing its rows (a shuffled batch of 2^18 rows out of
    8M: 2.4 ms, not 5-10 ms)."""
    if t.shape[1] == 1:
        return t.reshape(-1).index_select(0, index).view(-1, 1)
    return t.index_select(0, index)


class TensorBatches:
    """Batches of (x, y) sliced from in-memory tensors, in order or shuffled by a seeded generator.

    The shuffle order of epoch e depends only on (seed, e), so a run is reproducible and a resumed
    run sees the same order as an uninterrupted one: ``state_dict`` is the epoch and the batch to
    serve next. Under data-parallel training each of
    ``world_size`` processes takes every ``world_size``-th row of each global batch, so N processes
    step on exactly the global batches one process would.
    """

    def __init__(
        self,
        x: Tensor,
        y: Tensor,
        batch_size: int,
        shuffle: bool = False,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if world_size > 1 and (batch_size % world_size or len(x) % batch_size % world_size):
            last = len(x) % batch_size or batch_size
            raise DataError(
                f"with {world_size} processes every global batch must split evenly: make "
                f"data.batch_size ({batch_size}) and the last batch ({last} of {len(x)} rows) "
                f"multiples of {world_size}"
            )
        self.x, self.y = x, y
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.rank, self.world_size = rank, world_size
        self.epoch = 0  # the epoch the next __iter__ serves
        self._served = 0  # batches handed out by the current __iter__
        self._resume_at = 0  # batches to skip on the next __iter__ (after load_state_dict)

    def __len__(self) -> int:
        return math.ceil(len(self.x) / self.batch_size)

    def state_dict(self) -> dict[str, int]:
        """Where the data stands: the epoch being served and how many of its batches went out.

        Lightning saves this in every checkpoint and hands it back on resume, so a run resumed
        from the middle of an epoch sees exactly the batches an uninterrupted run would.
        """
        if self._served == len(self):  # the epoch is done: resume at the start of the next one
            return {"epoch": self.epoch, "batch": 0}
        return {"epoch": self.epoch - 1 if self._served else self.epoch, "batch": self._served}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self._resume_at = state["epoch"], state["batch"]

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        n, size = len(self.x), self.batch_size
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(n, generator=generator).to(self.x.device)
        self.epoch += 1
        skip, self._resume_at, self._served = self._resume_at, 0, 0
        shard = slice(self.rank, None, self.world_size)
        for start in range(skip * size, n, size):
            self._served = start // size + 1
            if self.shuffle:
                index = order[start : start + size][shard]
                yield take_rows(self.x, index), take_rows(self.y, index)
            else:
                rows = slice(start + self.rank, start + size, self.world_size)
                yield self.x[rows], self.y[rows]


class TensorDataModule(pl.LightningDataModule):
    """Shared DataModule: a subclass provides ``load() -> (x, y)``; this splits and serves it."""

    def __init__(
        self,
        batch_size: int = 1,
        shuffle: bool = False,
        val_fraction: float = 0.0,
        seed: int | None = 0,
        dtype: torch.dtype = torch.float32,
        test_fraction: float = 0.0,
    ) -> None:
        super().__init__()
        # schema.py checks the settings' ranges; what needs the data is checked where it is read.
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        # seed=null: a fresh seed for this run's data (split, noise, shuffle), kept in its
        # checkpoints so a resumed run continues with the same data and order.
        self.seed = seed if seed is not None else secrets.randbits(32)
        self.dtype = dtype  # the training precision's: a value it cannot hold is an error
        self.train_xy: tuple[Tensor, Tensor] | None = None
        self.val_xy: tuple[Tensor, Tensor] | None = None
        #: The test split, evaluated once after training (trainer.test); None without one.
        self.test_xy: tuple[Tensor, Tensor] | None = None
        self._train_batches: TensorBatches | None = None
        self._resume_position: dict[str, int] | None = None
        self._fingerprint: dict[str, int | bool | str | None] | None = None

    def load(self) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def load_val(self) -> tuple[Tensor, Tensor] | None:
        """A separate validation set, if the subclass has one."""
        return None

    def load_test(self) -> tuple[Tensor, Tensor] | None:
        """A separate test set, if the subclass has one."""
        return None

    @property
    def in_features(self) -> int:
        return self._shapes()[0]

    @property
    def out_features(self) -> int:
        return self._shapes()[1]

    def _shapes(self) -> tuple[int, int]:
        self.setup("fit")
        assert self.train_xy is not None  # setup made it
        x, y = self.train_xy
        return x.shape[1], y.shape[1]

    def setup(self, stage: str | None = None) -> None:
        if self.train_xy is not None:
            return
        x, y = self.load()
        val, test = self.load_val(), self.load_test()
        # Held-out rows drawn by one seeded permutation: the test rows first, then the
        # validation rows; both fractions are of the whole file (or synthetic set).
        n_val = self._held_out(len(x), "val_fraction", "validation") if val is None else 0
        n_test = self._held_out(len(x), "test_fraction", "testing") if test is None else 0
        if n_val or n_test:
            if n_val + n_test >= len(x):
                raise DataError(
                    f"data.val_fraction={self.val_fraction} and data.test_fraction="
                    f"{self.test_fraction} of {len(x)} rows leave no rows for training"
                )
            order = torch.randperm(len(x), generator=torch.Generator().manual_seed(self.seed))
            test_rows, val_rows = order[:n_test], order[n_test : n_test + n_val]
            if n_test:
                test = take_rows(x, test_rows), take_rows(y, test_rows)
            if n_val:
                val = take_rows(x, val_rows), take_rows(y, val_rows)
            train_rows = order[n_test + n_val :]
            x, y = take_rows(x, train_rows), take_rows(y, train_rows)
        self.train_xy, self.val_xy, self.test_xy = (x, y), val, test

    def _held_out(self, rows: int, key: str, purpose: str) -> int:
        """The number of rows ``data.<key>`` (a fraction of ``rows``) holds out: 0 for 0."""
        fraction = getattr(self, key)
        if fraction <= 0:
            return 0
        n = round(rows * fraction)
        if n < 1 or n >= rows:
            raise DataError(
                f"data.{key}={fraction} of {rows} rows leaves no rows for training or none for "
                f"{purpose}"
            )
        return n

    def fingerprint(self) -> dict[str, int | bool | str | None]:
        """What a resumed run must share with the run it resumes: the rows and how they are
        batched. ``digest`` hashes up to 4096 evenly spaced rows of each split (constant cost,
        where a hash of 10^7 rows would take ~60 ms): it tells another file or another ordering
        apart, not every edited cell of a large file. Made once (the rows do not change once
        set up): a checkpoint holds it, and a seed model's long run saves ~200 of them."""
        if self._fingerprint is not None:
            return dict(self._fingerprint)
        self.setup("fit")
        assert self.train_xy is not None  # setup made it
        digest = hashlib.blake2b(digest_size=12)
        for split in (self.train_xy, self.val_xy):
            for t in split or ():
                sample = t[:: max(1, len(t) // 4096)].detach().cpu().contiguous()
                digest.update(sample.numpy().tobytes())
        self._fingerprint = {
            "train_rows": len(self.train_xy[0]),
            "val_rows": len(self.val_xy[0]) if self.val_xy is not None else 0,
            "batch_size": self.batch_size,
            "shuffle": self.shuffle,
            "seed": self.seed,
            "digest": digest.hexdigest(),
        }
        return dict(self._fingerprint)

    def train_dataloader(self) -> TensorBatches:
        assert self.train_xy is not None  # Lightning calls setup first
        self.train_xy = self._on_device(self.train_xy)
        self._train_batches = TensorBatches(
            *self.train_xy, self.batch_size, self.shuffle, self.seed, **self._shard()
        )
        if self._resume_position is not None:
            self._train_batches.load_state_dict(self._resume_position)
            self._resume_position = None
        return self._train_batches

    # Lightning restores a loader's own state_dict only when a run resumes from the middle of an
    # epoch; a datamodule's always. So the position, and with it the epoch whose shuffle order
    # comes next, is also kept here: a run resumed from an epoch-end checkpoint then serves the
    # next epoch's order, not epoch 0's.
    def state_dict(self) -> dict[str, dict[str, int]]:
        if self._train_batches is None:
            return {}
        return {"train_batches": self._train_batches.state_dict()}

    def load_state_dict(self, state_dict: dict[str, dict[str, int]]) -> None:
        self._resume_position = state_dict.get("train_batches")

    def val_dataloader(self) -> TensorBatches | list:
        if self.val_xy is None:
            return []
        self.val_xy = self._on_device(self.val_xy)
        return TensorBatches(*self.val_xy, self.batch_size, **self._shard())

    def test_dataloader(self) -> TensorBatches | list:
        if self.test_xy is None:
            return []
        self.test_xy = self._on_device(self.test_xy)
        return TensorBatches(*self.test_xy, self.batch_size, **self._shard())

    def _on_device(self, xy: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        """The data moved once to the training device when that is an accelerator: batches are
        then sliced where they are used, not copied from host memory at every step."""
        device = self.trainer.strategy.root_device if self.trainer is not None else None
        if device is None or device.type == "cpu" or xy[0].device == device:
            return xy
        return xy[0].to(device), xy[1].to(device)

    def _shard(self) -> dict[str, Any]:
        trainer = self.trainer
        return {"rank": trainer.global_rank, "world_size": trainer.world_size} if trainer else {}


class CSVDataModule(TensorDataModule):
    """Reads any CSV with a header row; the input and target columns are named in the config."""

    def __init__(
        self,
        train_csv: str,
        x_columns: Sequence[str],
        y_columns: Sequence[str],
        val_csv: str | None = None,
        test_csv: str | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.train_csv = train_csv
        self.val_csv = val_csv
        self.test_csv = test_csv
        self.x_columns = list(x_columns)
        self.y_columns = list(y_columns)

    def load(self) -> tuple[Tensor, Tensor]:
        return read_csv(self.train_csv, self.x_columns, self.y_columns, self.dtype)

    def load_val(self) -> tuple[Tensor, Tensor] | None:
        if self.val_csv is None:
            return None
        return read_csv(self.val_csv, self.x_columns, self.y_columns, self.dtype)

    def load_test(self) -> tuple[Tensor, Tensor] | None:
        if self.test_csv is None:
            return None
        return read_csv(self.test_csv, self.x_columns, self.y_columns, self.dtype)


class SyntheticDataModule(TensorDataModule):
    """y = c_0 x^d + ... + c_d + noise over n rows of x uniform in [low, high], seeded.

    ``coefficients`` are highest power first, as numpy.polyval takes them: [2.0, 0.0] is y = 2x.
    """

    def __init__(
        self,
        n: int = 1000,
        coefficients: Sequence[float] = (2.0, 0.0),
        noise_std: float = 0.1,
        x_range: Sequence[float] = (-1.0, 1.0),
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.n = n
        self.coefficients = list(coefficients)
        self.noise_std = noise_std
        self.x_range = tuple(x_range)

    def load(self) -> tuple[Tensor, Tensor]:
        """x and the noise drawn in float32, so every precision trains on the same draws; y
        computed from them in float64 for a float64 run (float32 for the narrower dtypes)."""
        generator = torch.Generator().manual_seed(self.seed)
        low, high = self.x_range
        x = torch.empty(self.n, 1).uniform_(low, high, generator=generator)
        x = x.to(torch.promote_types(self.dtype, torch.float32))
        y = torch.zeros_like(x)
        for c in self.coefficients:  # Horner's rule, in place: no temporaries of n rows per power
            y.mul_(x).add_(c)
        if self.noise_std:
            y.add_(torch.randn(self.n, 1, generator=generator), alpha=self.noise_std)
        x, y = x.to(self.dtype), y.to(self.dtype)
        if not torch.isfinite(y).all():
            raise DataError(
                f"the synthetic targets overflow {str(self.dtype).removeprefix('torch.')} "
                f"(coefficients {self.coefficients} over x in {list(self.x_range)}, noise_std "
                f"{self.noise_std}); use smaller ones"
            )
        return x, y


def read_csv(
    path: str | Path,
    x_columns: Sequence[str],
    y_columns: Sequence[str],
    dtype: torch.dtype = torch.float32,
    source: csvfile.Source | None = None,
) -> tuple[Tensor, Tensor]:
    """The named columns of a headed CSV as (x, y) tensors of ``dtype``. csvfile.py reads it, as
    it reads predict.py's inputs; a bad file raises DataError naming the file, row, column and fix
    (``source``: how the messages name the file, by default as training data)."""
    source = source or csvfile.Source(
        what="data file",
        setting="data.train_csv / data.val_csv / data.test_csv",
        columns_fix="Set data.x_columns and data.y_columns to columns it has.",
        error=DataError,
    )
    data = csvfile.read_columns(path, [*x_columns, *y_columns], source, dtype)
    return data[:, : len(x_columns)].contiguous(), data[:, len(x_columns) :].contiguous()
