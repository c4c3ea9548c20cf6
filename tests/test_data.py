"""The DataModules: CSV reading, batching, shuffling, splitting, the synthetic generator."""

from __future__ import annotations

import pytest
import torch

from backprop_lab.data import (
    CSVDataModule,
    DataError,
    SyntheticDataModule,
    TensorBatches,
    read_csv,
)
from backprop_lab.errors import ConfigError
from backprop_lab.training.build import build

from conftest import ROOT


def write(tmp_path, text: str, name: str = "d.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_reads_named_columns_in_any_order(tmp_path):
    path = write(tmp_path, "y,noise,x\n2,9,1\n4,9,2\n")
    x, y = read_csv(path, ["x"], ["y"])
    assert x.tolist() == [[1.0], [2.0]]
    assert y.tolist() == [[2.0], [4.0]]
    assert x.dtype == y.dtype == torch.float32


def test_an_unused_text_column_is_fine(tmp_path):
    path = write(tmp_path, "name,x,y\na,1,2\nb,2,4\n")
    x, y = read_csv(path, ["x"], ["y"])
    assert x.tolist() == [[1.0], [2.0]] and y.tolist() == [[2.0], [4.0]]


def test_seed000_csv_gives_two_inputs_and_two_targets():
    x, y = read_csv(ROOT / "data" / "seed000_sigmoid.csv", ["x1", "x2"], ["y1", "y2"])
    assert x.tolist() == [[0.5, pytest.approx(0.3)]]
    assert y.tolist() == [[pytest.approx(0.23), pytest.approx(-0.07)]]


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("", ["empty"]),
        ("x,y\n", ["no data rows"]),
        ("a,b\n1,2\n", ["no column", "['x', 'y']", "x_columns"]),
        ("x,y\n1,2\n2,oops\n", ["row 3", "'y'", "'oops' is not a number"]),
        ("x,y\n1,2\n2\n", ["row 3", "1 field"]),
        ("x,y\n1,2\n2,4,6\n", ["row 3", "3 field"]),
        ("x,y\n1,2\nnan,4\n", ["row 3", "'x'", "not finite"]),
        ("x,y\n1,inf\n", ["row 2", "'y'", "not finite"]),
    ],
)
def test_bad_csv_names_file_and_place(tmp_path, text, words):
    path = write(tmp_path, text)
    with pytest.raises(DataError) as error:
        read_csv(path, ["x"], ["y"])
    message = str(error.value)
    assert str(path) in message
    for word in words:
        assert word in message


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        read_csv(tmp_path / "nope.csv", ["x"], ["y"])


def test_batches_in_order_by_default():
    x = torch.arange(5.0).reshape(-1, 1)
    batches = list(TensorBatches(x, x * 2, batch_size=2))
    assert [b[0].flatten().tolist() for b in batches] == [[0, 1], [2, 3], [4]]
    assert len(TensorBatches(x, x, batch_size=2)) == 3


def test_shuffle_is_seeded_per_epoch():
    x = torch.arange(10.0).reshape(-1, 1)
    a, b = (
        TensorBatches(x, x, 10, shuffle=True, seed=3),
        TensorBatches(x, x, 10, shuffle=True, seed=3),
    )
    epoch0_a, epoch1_a = next(iter(a))[0], next(iter(a))[0]
    epoch0_b = next(iter(b))[0]
    assert torch.equal(epoch0_a, epoch0_b)  # same seed, same order
    assert not torch.equal(epoch0_a, epoch1_a)  # a new order each epoch
    assert sorted(epoch0_a.flatten().tolist()) == list(range(10))
    # x and y stay paired under shuffling.
    xb, yb = next(iter(TensorBatches(x, x * 2, 4, shuffle=True, seed=0)))
    assert torch.equal(yb, xb * 2)


def test_validation_split_and_file(tmp_path):
    path = write(tmp_path, "x,y\n" + "".join(f"{i},{2 * i}\n" for i in range(10)))
    split = CSVDataModule(str(path), ["x"], ["y"], val_fraction=0.3)
    split.setup()
    assert len(split.train_xy[0]) == 7 and len(split.val_xy[0]) == 3
    both = torch.cat([split.train_xy[0], split.val_xy[0]]).flatten().sort().values
    assert both.tolist() == list(range(10))
    separate = CSVDataModule(str(path), ["x"], ["y"], val_csv=str(path))
    separate.setup()
    assert len(separate.val_xy[0]) == 10


def test_synthetic_is_seeded_and_follows_its_polynomial():
    a = SyntheticDataModule(n=500, coefficients=[3.0, -1.0, 2.0], noise_std=0.0, seed=1)
    b = SyntheticDataModule(n=500, coefficients=[3.0, -1.0, 2.0], noise_std=0.0, seed=1)
    a.setup(), b.setup()
    x, y = a.train_xy
    assert torch.equal(x, b.train_xy[0])
    assert torch.allclose(y, 3 * x**2 - x + 2, atol=1e-5)
    noisy = SyntheticDataModule(n=20000, coefficients=[0.0], noise_std=0.5, seed=1)
    noisy.setup()
    assert noisy.train_xy[1].std().item() == pytest.approx(0.5, rel=0.05)


@pytest.mark.parametrize(
    ("override", "words"),
    [
        ("data.batch_size=0", "data.batch_size must be a whole number >= 1, got 0"),
        ("data.val_fraction=1.0", "data.val_fraction must be a number in [0, 1), got 1.0"),
        ("data.n=0", "data.n must be a whole number >= 1, got 0"),
    ],
)
def test_bad_settings_are_named_before_any_data_is_made(make_cfg, override, words):
    with pytest.raises(ConfigError) as refused:
        build(make_cfg("data=synthetic", override))
    assert str(refused.value).startswith(words)


def test_a_split_that_leaves_no_rows_is_named(make_cfg):
    # What the settings alone cannot show: 0.1 of the seed's 3 rows is no row.
    with pytest.raises(DataError, match=r"val_fraction=0.1 of 3 rows leaves no rows"):
        build(make_cfg("data.val_fraction=0.1"))


@pytest.mark.parametrize("precision", ["32", "64"])
def test_synthetic_data_is_the_same_draws_in_either_precision(precision):
    """x and the noise are drawn in float32 in every precision; a float64 run computes its
    targets from them in float64."""
    dtype = {"32": torch.float32, "64": torch.float64}[precision]
    settings = dict(n=50, coefficients=[0.3, -1.1, 0.7], noise_std=0.1, seed=4)
    ours = SyntheticDataModule(**settings, dtype=dtype)
    ours.setup()
    reference = SyntheticDataModule(**settings, dtype=torch.float32)
    reference.setup()
    x, y = ours.train_xy
    assert x.dtype == y.dtype == dtype
    assert torch.equal(x, reference.train_xy[0].to(dtype))
    generator = torch.Generator().manual_seed(4)
    torch.empty(50, 1).uniform_(-1.0, 1.0, generator=generator)
    noise = torch.randn(50, 1, generator=generator).to(dtype)
    assert torch.equal(y, ((0.3 * x - 1.1) * x + 0.7).add_(noise, alpha=0.1))


@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_data_moves_once_to_an_accelerator_and_stays_put_on_the_cpu(device):
    from types import SimpleNamespace

    dm = SyntheticDataModule(n=10, batch_size=4, val_fraction=0.2)
    dm.setup("fit")
    on_cpu = dm.train_xy
    dm.trainer = SimpleNamespace(
        strategy=SimpleNamespace(root_device=torch.device(device)), global_rank=0, world_size=1
    )
    train, val = dm.train_dataloader(), dm.val_dataloader()
    assert train.x.device.type == val.x.device.type == train.y.device.type == device
    if device == "cpu":  # the same tensors: nothing copied
        assert train.x is on_cpu[0] and train.y is on_cpu[1]
    else:  # "meta" stands in for a GPU here; the next loader reuses what was moved
        assert dm.train_dataloader().x is train.x
