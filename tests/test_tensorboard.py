"""What a person finds in TensorBoard: losses, metrics, parameters, gradients."""

from __future__ import annotations

from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def load_events(run_dir: str) -> EventAccumulator:
    events = EventAccumulator(run_dir, size_guidance={"scalars": 0, "histograms": 0})
    events.Reload()
    return events


def test_seed_run_logs_losses_parameters_and_histograms(run):
    summary = run("model=quadratic", "callbacks.histograms.every_n_steps=100")
    events = load_events(summary["output_dir"])
    scalars = set(events.Tags()["scalars"])
    expected = {
        "train/loss",
        "train/loss_epoch",
        "train/mse",
        "train/mae",
        "train/r2",
        "grad/norm",
        "params/w0",
        "params/w1",
        "params/w2",
    }
    assert expected <= scalars
    # Per step (every step for the seeds) and per epoch.
    assert len(events.Scalars("train/loss")) == 300
    assert len(events.Scalars("train/loss_epoch")) == 100
    assert events.Scalars("params/w0")[-1].value == summary["parameters"]["w0"]
    # Histograms at their own interval: steps 0, 100, 200.
    histograms = set(events.Tags()["histograms"])
    assert {"weights/w", "grads/w"} <= histograms
    assert [e.step for e in events.Histograms("grads/w")] == [0, 100, 200]


def test_validation_metrics_and_l2_parts(run):
    summary = run(
        "model=linear", "data=synthetic", "data.n=200", "trainer.max_epochs=2", "loss.l2=0.1"
    )
    events = load_events(summary["output_dir"])
    scalars = set(events.Tags()["scalars"])
    assert {"val/loss_epoch", "val/mse", "val/mae", "val/r2", "train/L", "train/s"} <= scalars
    # J = L + s, logged apart.
    loss = {e.step: e.value for e in events.Scalars("train/loss")}
    parts = zip(events.Scalars("train/L"), events.Scalars("train/s"), strict=True)
    for data_loss, penalty in parts:
        assert abs(loss[data_loss.step] - (data_loss.value + penalty.value)) < 1e-6


def test_r2_is_left_out_where_undefined(run):
    # Seed 000 trains on a single sample: R^2 has no meaning there.
    summary = run("model=sigmoid_net", "trainer.max_epochs=3")
    scalars = set(load_events(summary["output_dir"]).Tags()["scalars"])
    assert "train/mse" in scalars
    assert "train/r2" not in scalars


def test_no_run_writes_a_shared_lightning_logs_dir(run, tmp_path):
    run("model=linear", "trainer.max_epochs=1")
    assert not list(Path(tmp_path).rglob("lightning_logs"))
