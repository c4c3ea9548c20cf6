"""What a person finds in TensorBoard: the loss first, then every parameter and gradient by name."""

from __future__ import annotations

import functools
import itertools
import math
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from backprop_lab.config import CONFIG_DIR

MODEL_CONFIGS = sorted(p.stem for p in (CONFIG_DIR / "model").glob("*.yaml"))


def load_events(run_dir: str) -> EventAccumulator:
    events = EventAccumulator(run_dir, size_guidance={"scalars": 0, "histograms": 0})
    events.Reload()
    return events


def compare_tag_names(a: str, b: str) -> int:
    """TensorBoard's order of tags and tag groups (its frontend's ``compareTagNames``): runs of
    digits compare as numbers, '/' and '_' and digits before anything else, then char codes
    (capitals before lower case)."""

    def is_break(c: str) -> bool:
        return c in "/_" or c.isdigit()

    i = j = 0
    while True:
        if i == len(a):
            return 0 if j == len(b) else -1
        if j == len(b):
            return 1
        if a[i].isdigit() and b[j].isdigit():
            si, sj = i, j
            while i < len(a) and (a[i].isdigit() or a[i] == "."):
                i += 1
            while j < len(b) and (b[j].isdigit() or b[j] == "."):
                j += 1
            x, y = float(a[si:i].rstrip(".")), float(b[sj:j].rstrip("."))
            if x != y:
                return -1 if x < y else 1
            continue
        if is_break(a[i]) and not is_break(b[j]):
            return -1
        if is_break(b[j]) and not is_break(a[i]):
            return 1
        if not is_break(a[i]) and a[i] != b[j]:
            return -1 if a[i] < b[j] else 1
        i, j = i + 1, j + 1


def tag_groups(tags) -> list[str]:
    """The tag groups as TensorBoard's Time Series lists them: by the part before the first '/',
    in the order of the sorted tags."""
    ordered = sorted(tags, key=functools.cmp_to_key(compare_tag_names))
    return list(dict.fromkeys(tag.split("/", 1)[0] for tag in ordered))


def test_the_loss_is_the_first_group_and_nothing_clutters_the_charts(run):
    summary = run("model=quadratic", "data=synthetic", "data.n=100", "trainer.max_epochs=2")
    events = load_events(summary["output_dir"])
    tags = events.Tags()
    everything = [*tags["scalars"], *tags["histograms"], *tags["images"]]
    groups = tag_groups(everything)
    assert groups[0] == "Loss"
    assert {"Loss/train", "Loss/val", "Loss/train_step"} <= set(tags["scalars"])
    # histograms after every scalar group
    assert groups[-1] == "weights" and set(tags["histograms"]) <= {
        t for t in everything if t.startswith("weights/")
    }
    # no `epoch` counter, no HParams values among the scalars, no mse that repeats the loss
    assert "epoch" not in tags["scalars"]
    assert not [t for t in tags["scalars"] if t.startswith("hp")]
    assert "train/mse" not in tags["scalars"] and "train/mae" in tags["scalars"]
    # HParams' metrics are those charts' last values, not scalars of their own
    content = events.PluginTagToContent("hparams")["_hparams_/experiment"]
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content).experiment
    assert [m.name.tag for m in experiment.metric_infos] == ["Loss/train", "Loss/val"]


def test_a_weighted_objective_keeps_its_mse(run):
    summary = run("model=linear", "loss=weighted", "trainer.max_epochs=1")
    scalars = set(load_events(summary["output_dir"]).Tags()["scalars"])
    assert {"Loss/train", "train/mse", "train/mae"} <= scalars


@pytest.mark.parametrize("model", MODEL_CONFIGS)
def test_every_parameter_and_its_gradient_from_step_0(run, model):
    summary = run(f"model={model}", "+trainer.max_steps=12", "trainer.log_every_n_steps=5")
    events = load_events(summary["output_dir"])
    first = summary["first_step"]
    for name, value in summary["parameters"].items():  # the seed's names: w1..w8, b_h1, ...
        values = events.Scalars(f"params/{model}/{name}")
        # step 0 (the initial value), the log interval, and the value after the last update
        assert [e.step for e in values] == [0, 5, 10, 12]
        assert values[0].value == pytest.approx(first["parameters"][name], rel=1e-6)
        assert values[-1].value == pytest.approx(value, rel=1e-6)
        grads = events.Scalars(f"grads/{model}/{name}")
        assert [e.step for e in grads] == [0, 5, 10]
        assert grads[0].value == pytest.approx(first["gradients"][name], rel=1e-6)
    norm = events.Scalars(f"grads/{model}/norm")[0].value
    assert norm == pytest.approx(math.hypot(*first["gradients"].values()), rel=1e-6)


def test_no_two_models_share_a_parameter_chart(run):
    scoped = {}
    for model in MODEL_CONFIGS:
        summary = run(f"model={model}", "trainer.max_epochs=1", out=model)
        tags = load_events(summary["output_dir"]).Tags()
        every = [*tags["scalars"], *tags["histograms"]]
        scoped[model] = {t for t in every if not t.startswith(("Loss/", "train/"))}
        assert scoped[model]
    for a, b in itertools.combinations(MODEL_CONFIGS, 2):
        assert not scoped[a] & scoped[b], (a, b)


def test_seed_002_tells_its_one_step(run):
    summary = run("experiment=seed002")
    events = load_events(summary["output_dir"])
    assert [round(e.value, 4) for e in events.Scalars("params/linear/w")] == [-0.2505, -0.1505]
    assert round(events.Scalars("grads/linear/w")[0].value, 4) == -10.0049
    assert round(events.Scalars("grads/linear/b")[0].value, 4) == -4.1688
    # summary.json keeps the step whole: before, dL/dparam, after
    after = summary["first_step"]["after"]
    assert {k: round(v, 6) for k, v in after.items()} == {"w": -0.150451, "b": 0.958288}


def test_histograms_by_the_seeds_names_sampled_through_the_run(run):
    summary = run("model=sigmoid_net")  # seed 000: 100 rounds
    events = load_events(summary["output_dir"])
    histograms = set(events.Tags()["histograms"])
    names = ("w1..w4", "w5..w8")  # seed 000's net has no biases
    assert histograms == {f"weights/sigmoid_net/{n}{g}" for n in names for g in ("", ".grad")}
    steps = [e.step for e in events.Histograms("weights/sigmoid_net/w1..w4.grad")]
    assert steps == list(range(0, 100, 4))  # about 25 a run


def test_the_seed_setups_log_every_step(run):
    summary = run("model=quadratic", "callbacks.histograms.every_n_steps=100")
    events = load_events(summary["output_dir"])
    assert len(events.Scalars("Loss/train_step")) == 300
    assert len(events.Scalars("grads/quadratic/w0")) == 300
    assert len(events.Scalars("Loss/train")) == 100
    assert events.Scalars("params/quadratic/w0")[-1].value == summary["parameters"]["w0"]
    assert [e.step for e in events.Histograms("weights/quadratic/w0..w2.grad")] == [0, 100, 200]


def test_validation_metrics_and_l2_parts(run):
    summary = run(
        "model=linear", "data=synthetic", "data.n=200", "trainer.max_epochs=2", "loss.l2=0.1"
    )
    events = load_events(summary["output_dir"])
    scalars = set(events.Tags()["scalars"])
    assert {"Loss/val", "val/mse", "val/mae", "val/r2", "train/L", "train/s"} <= scalars
    # J = L + s, logged apart.
    loss = {e.step: e.value for e in events.Scalars("Loss/train_step")}
    parts = zip(events.Scalars("train/L"), events.Scalars("train/s"), strict=True)
    for data_loss, penalty in parts:
        assert abs(loss[data_loss.step] - (data_loss.value + penalty.value)) < 1e-6


def test_r2_is_left_out_where_undefined(run):
    # Seed 000 trains on a single sample: R^2 has no meaning there.
    summary = run("model=sigmoid_net", "trainer.max_epochs=3")
    scalars = set(load_events(summary["output_dir"]).Tags()["scalars"])
    assert "train/mae" in scalars
    assert "train/r2" not in scalars


def test_no_run_writes_a_shared_lightning_logs_dir(run, tmp_path):
    run("model=linear", "trainer.max_epochs=1")
    assert not list(Path(tmp_path).rglob("lightning_logs"))
