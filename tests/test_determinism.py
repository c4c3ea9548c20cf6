"""The same command with the same seed gives the same numbers."""

from __future__ import annotations

from test_tensorboard import load_events

SHUFFLED = (
    "model=quadratic",
    "data=synthetic",
    "data.n=256",
    "data.batch_size=16",
    "trainer.max_epochs=3",
    "optimizer.lr=0.05",
)


def logged(run_dir: str, tag: str) -> list[tuple[int, float]]:
    return [(e.step, e.value) for e in load_events(run_dir).Scalars(tag)]


def test_same_seed_same_numbers(run):
    first = run(*SHUFFLED, "seed=7", out="a")
    second = run(*SHUFFLED, "seed=7", out="b")
    assert first["parameters"] == second["parameters"]  # bit for bit
    assert first["final_loss"] == second["final_loss"]
    for tag in ("Loss/train_step", "Loss/train", "Loss/val"):
        series = logged(first["output_dir"], tag)
        assert series and series == logged(second["output_dir"], tag)


def test_seed_zero_is_a_seed(run):
    # seed=0 must seed (a falsy check would skip it) and differ from another seed.
    zero_a = run(*SHUFFLED, "seed=0", out="a")
    zero_b = run(*SHUFFLED, "seed=0", out="b")
    one = run(*SHUFFLED, "seed=1", out="c")
    assert zero_a["parameters"] == zero_b["parameters"]
    assert zero_a["parameters"] != one["parameters"]
