"""The computational graph drawn with its numbers (micrograd's draw_dot, in matplotlib): in every
run's dir and TensorBoard, with explain.py's numbers; seed 000's worked by hand; readable for the
biggest model; explain.py's graph= option; and the Graphs tab's names."""

from __future__ import annotations

import io
import itertools
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from backprop_lab.dashboard import drawn_graph, graph, render
from backprop_lab.errors import ConfigError
from backprop_lab.tools.explain import check_options, explain, graph_data, write_graph
from backprop_lab.training.build import build

from conftest import ROOT

MODELS = sorted(p.stem for p in (ROOT / "conf" / "model").glob("*.yaml"))
BIASES = ("model.hidden_bias=[0.35,0.35]", "model.output_bias=[0.6,0.6]")


def png(data: bytes) -> tuple[int, int]:
    """A PNG that decodes and is not blank: its size."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        image.load()
        pixels = np.asarray(image.convert("RGB"))
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 20, "a (nearly) blank image"
    return image.size


def same_numbers(drawn: dict, derived: dict) -> None:
    """Every node's value and gradient and every edge's local derivative, the same."""
    assert [(n["name"], n["kind"]) for n in drawn["nodes"]] == [
        (n["name"], n["kind"]) for n in derived["nodes"]
    ]
    for a, b in zip(drawn["nodes"], derived["nodes"], strict=True):
        assert a["value"] == pytest.approx(b["value"], rel=1e-6, abs=1e-12), a["name"]
        assert a["grad"] == pytest.approx(b["grad"], rel=1e-6, abs=1e-12), a["name"]
        if "total" in b:  # a parameter's gradient over the whole batch
            assert a["total"] == pytest.approx(b["total"], rel=1e-6, abs=1e-12), a["name"]
    assert [(e["of"], e["by"], e["symbol"]) for e in drawn["edges"]] == [
        (e["of"], e["by"], e["symbol"]) for e in derived["edges"]
    ]
    for a, b in zip(drawn["edges"], derived["edges"], strict=True):
        assert a["value"] == pytest.approx(b["value"], rel=1e-6, abs=1e-12), a["symbol"]
    assert (drawn["step"], drawn["row"], drawn["objective"]) == (
        derived["step"],
        derived["row"],
        derived["objective"],
    )


# --- in every run --------------------------------------------------------------------------------
@pytest.mark.parametrize("model", MODELS)
def test_every_model_leaves_its_graph_with_explains_numbers(run, make_cfg, monkeypatch, model):
    submitted: list[render.Job] = []
    submit = render.submit
    monkeypatch.setattr(render, "submit", lambda job: (submitted.append(job), submit(job)))
    summary = run(f"model={model}", "trainer.max_epochs=1")
    out = Path(summary["output_dir"])
    tag = f"figures/{model}/graph"

    # The file in the run dir and the image in its TensorBoard events.
    assert png((out / "graph.png").read_bytes())[0] > 400
    events = EventAccumulator(str(out), size_guidance={"images": 0})
    events.Reload()
    assert tag in events.Tags()["images"]
    png(events.Images(tag)[-1].encoded_image_string)

    # Drawn from explain.py's numbers at step 0.
    (figure,) = [f for job in submitted for f in job.figures if f.kind == "computational_graph"]
    assert figure.tag == tag
    (drawn,) = figure.args
    derived = graph_data(explain(make_cfg(f"model={model}", config_name="explain")))
    assert drawn["step"] == 0
    same_numbers(drawn, derived)
    # Every node is on a path from the inputs to the loss, and every edge joins two nodes.
    names = {n["name"] for n in drawn["nodes"]}
    assert {e["of"] for e in drawn["edges"]} | {e["by"] for e in drawn["edges"]} == names
    kinds = {n["kind"] for n in drawn["nodes"]}
    assert {"input", "parameter", "target", "loss"} <= kinds

    # The Graphs tab: the seed's names, the loss, no fx names.
    nodes = {n.name for n in events.Graph().node}
    assert {"x", "y_hat", "y", "L"} <= nodes
    assert set(summary["parameters"]) <= nodes or {"W1", "W2"} <= nodes  # the net's matrices
    assert not [n for n in nodes if re.fullmatch(r"(getitem|getattr)(_\d+)?", n)]


def test_a_large_batch_is_drawn_as_its_one_row(run, monkeypatch):
    submitted: list[render.Job] = []
    submit = render.submit
    monkeypatch.setattr(render, "submit", lambda job: (submitted.append(job), submit(job)))
    run(
        "model=linear", "data=synthetic", "data.n=64", "data.batch_size=64", "data.val_fraction=0",
        "trainer.max_epochs=1", "callbacks.graph_figure.max_rows=8",
    )  # fmt: skip
    (figure,) = [f for job in submitted for f in job.figures if f.kind == "computational_graph"]
    (drawn,) = figure.args
    assert drawn["rows"] == 1  # not 64 rows written out for the sake of one


@pytest.mark.parametrize("value", ["0", "abc", "true"])
def test_a_bad_max_rows_is_one_line(run, value):
    with pytest.raises(ConfigError, match=r"graph_figure\.max_rows must be a whole number"):
        run("model=linear", "trainer.max_epochs=1", f"callbacks.graph_figure.max_rows={value}")


def test_a_parameters_share_of_a_batch_and_its_whole_gradient(make_cfg):
    """Seed 002's batch of 3: the figure draws its first row, each parameter with that row's
    share and the whole batch's dL/dw = -10.0049, dL/db = -4.1688."""
    derivation = explain(make_cfg("experiment=seed002", config_name="explain"))
    data = graph_data(derivation)
    nodes = {n["name"]: n for n in data["nodes"]}
    assert (data["rows"], data["row"]) == (3, 0)
    assert round(nodes["w"]["total"], 4) == -10.0049 and round(nodes["b"]["total"], 4) == -4.1688
    shares = [graph_data(derivation, row)["nodes"] for row in range(3)]
    for name in ("w", "b"):
        total = math.fsum(next(n["grad"] for n in row if n["name"] == name) for row in shares)
        assert total == pytest.approx(nodes[name]["total"], rel=1e-6)
    text = _texts(drawn_graph.computational_graph(data))
    assert any("batch -10.0049" in t for t in text)


# --- seed 000 by hand ----------------------------------------------------------------------------
def sigmoid(z: float) -> float:
    return 1 / (1 + math.exp(-z))


def test_seed000s_graph_holds_the_numbers_worked_by_hand(make_cfg):
    """Seed 000's sample and weights, forward and backward with plain Python: the chain rule."""
    x1, x2, y1, y2 = 0.5, 0.3, 0.23, -0.07
    w1, w2, w3, w4, w5, w6, w7, w8 = 0.2, -0.4, 0.5, 0.6, 0.1, -0.5, -0.3, 0.8
    out_h1, out_h2 = sigmoid(w1 * x1 + w3 * x2), sigmoid(w2 * x1 + w4 * x2)
    out_o1, out_o2 = sigmoid(w5 * out_h1 + w7 * out_h2), sigmoid(w6 * out_h1 + w8 * out_h2)
    error = ((out_o1 - y1) ** 2 + (out_o2 - y2) ** 2) / 2  # the mean over the two outputs
    d_out_o1, d_out_o2 = out_o1 - y1, out_o2 - y2  # dE/dout_ok = 2/2 * (out_ok - yk)
    d_in_o1, d_in_o2 = d_out_o1 * out_o1 * (1 - out_o1), d_out_o2 * out_o2 * (1 - out_o2)
    d_out_h1 = d_in_o1 * w5 + d_in_o2 * w6  # out_h1 feeds both outputs
    d_in_h1 = d_out_h1 * out_h1 * (1 - out_h1)
    d_x1 = d_in_h1 * w1 + (d_in_o1 * w7 + d_in_o2 * w8) * out_h2 * (1 - out_h2) * w2

    data = graph_data(explain(make_cfg("model=sigmoid_net", config_name="explain")))
    nodes = {n["name"]: n for n in data["nodes"]}
    edges = {(e["of"], e["by"]): e for e in data["edges"]}
    expected = {
        "out_o1": (out_o1, d_out_o1),
        "out_o2": (out_o2, d_out_o2),
        "in_o1": (w5 * out_h1 + w7 * out_h2, d_in_o1),
        "out_h1": (out_h1, d_out_h1),
        "in_h1": (w1 * x1 + w3 * x2, d_in_h1),
        "w1": (w1, d_in_h1 * x1),
        "w5": (w5, d_in_o1 * out_h1),
        "x1": (x1, d_x1),
        "L": (error, 1.0),
    }
    for name, (value, grad) in expected.items():
        assert nodes[name]["value"] == pytest.approx(value, rel=1e-6), name
        assert nodes[name]["grad"] == pytest.approx(grad, rel=1e-5), name
    assert round(out_o1, 6) == 0.476946 and round(d_out_o1, 6) == 0.246946  # README's numbers
    assert edges[("out_o1", "in_o1")]["symbol"] == "dout_o1/din_o1"
    assert edges[("out_o1", "in_o1")]["value"] == pytest.approx(out_o1 * (1 - out_o1), rel=1e-6)
    assert edges[("in_o1", "out_h1")]["value"] == pytest.approx(w5, rel=1e-6)
    assert edges[("in_h1", "w1")]["value"] == pytest.approx(x1, rel=1e-6)
    assert edges[("L", "out_o1")]["value"] == pytest.approx(d_out_o1, rel=1e-6)
    # Seed 000's names, every one a box of the figure, with its numbers as drawn.
    seed = {"x1", "x2", "in_h1", "in_h2", "out_h1", "out_h2", "in_o1", "in_o2", "out_o1"}
    assert seed | {"out_o2", "y1", "y2", "L"} | {f"w{i}" for i in range(1, 9)} == set(nodes)
    text = _texts(drawn_graph.computational_graph(data))
    assert "out_o1" in text and "value 0.4769\ngrad 0.2469" in text
    assert f"dout_o1/din_o1 = {out_o1 * (1 - out_o1):.4g}" in text


# --- readable ------------------------------------------------------------------------------------
def _texts(fig) -> list[str]:
    return [t.get_text() for t in fig.axes[0].texts]


def _boxes(fig) -> tuple[list, list]:
    """The window extents of every text and of every node's box."""
    renderer = fig.canvas.get_renderer()
    ax = fig.axes[0]
    texts = [(t.get_text(), t.get_window_extent(renderer)) for t in ax.texts if t.get_text()]
    patches = [p.get_window_extent(renderer) for p in ax.patches]
    return texts, patches


@pytest.mark.parametrize(
    "overrides",
    [
        ("model=sigmoid_net", *BIASES),  # the biggest model here
        ("model=sigmoid_net", *BIASES, "loss=weighted", "loss.l2=0.01"),  # and J = L + s
        ("model=cubic",),
        ("experiment=seed002",),
    ],
)
def test_no_label_covers_another_or_a_box(make_cfg, overrides):
    data = graph_data(explain(make_cfg(*overrides, config_name="explain")))
    fig = drawn_graph.computational_graph(data)
    texts, patches = _boxes(fig)
    labels = [(s, b) for s, b in texts if " = " in s and s.split(" = ")[0][:1] == "d"]
    assert len(labels) == len(data["edges"])  # every edge labelled
    for (s1, b1), (s2, b2) in itertools.combinations(texts, 2):
        assert not b1.overlaps(b2), (s1, s2)
    for s, b in labels:
        assert not any(b.overlaps(p) for p in patches), s
    for p1, p2 in itertools.combinations(patches, 2):
        assert not p1.overlaps(p2)
    width, height = fig.bbox.width, fig.bbox.height
    for s, b in texts:
        assert b.x0 >= 0 and b.y0 >= 0 and b.x1 <= width and b.y1 <= height, s


# --- explain.py's graph= option ------------------------------------------------------------------
def test_explain_checks_the_graph_option_before_training(make_cfg, tmp_path):
    cfg = make_cfg("model=linear", f"graph={tmp_path / 'missing' / 'g.png'}", config_name="explain")
    with pytest.raises(ConfigError, match=r"graph=.* cannot be written: the directory .* does not"):
        check_options(cfg)
    cfg = make_cfg("model=linear", f"graph={tmp_path / 'g.jpg'}", config_name="explain")
    with pytest.raises(ConfigError, match=r"must name a \.png, \.svg, \.pdf file"):
        check_options(cfg)


@pytest.mark.parametrize("name", ["graph.png", "graph.svg"])
def test_write_graph_draws_the_derivation(make_cfg, tmp_path, capsys, name):
    derivation = explain(make_cfg("model=quadratic", config_name="explain"))
    write_graph(derivation, str(tmp_path / name))
    data = (tmp_path / name).read_bytes()
    if name.endswith(".png"):
        png(data)
    else:
        assert data.lstrip().startswith(b"<?xml") and b"<svg" in data
    assert capsys.readouterr().out == f"wrote {tmp_path / name}\n"


@pytest.mark.slow
def test_explain_cli_draws_the_graph_of_step_3(tmp_path):
    result = subprocess.run(
        [sys.executable, str(ROOT / "explain.py"), "model=sigmoid_net", "step=3", "graph=g.png"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
        env={**os.environ, "HYDRA_FULL_ERROR": "0"},
    )
    assert result.returncode == 0, result.stderr
    assert "wrote g.png" in result.stdout
    assert png((tmp_path / "g.png").read_bytes())[0] > 400
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.png"]


@pytest.mark.slow
def test_explain_cli_refuses_a_graph_it_cannot_write(tmp_path):
    result = subprocess.run(
        [sys.executable, str(ROOT / "explain.py"), "model=linear", "graph=nowhere/g.png"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
        env={**os.environ, "HYDRA_FULL_ERROR": "0"},
    )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: graph=nowhere/g.png cannot be written")
    assert list(tmp_path.iterdir()) == []


# --- the Graphs tab ------------------------------------------------------------------------------
@pytest.mark.parametrize("overrides", [*([f"model={m}"] for m in MODELS), ["experiment=seed002"]])
def test_the_graphs_tab_names_what_the_math_names(make_cfg, overrides):
    datamodule, model = build(make_cfg(*overrides, "loss=weighted", "loss.l2=0.1"))
    x, y = datamodule.train_xy
    forward = graph.forward_graph(model, x[:1], y[:1])
    nodes = {n.name: n for n in forward.node}
    params = set(model.named_scalars())
    tensors = {n for n, p in model.named_parameters() if p.numel() > 1 and n not in params}
    names = set(nodes)
    # Each parameter by the seed's name, or the net's matrices as W1, W2 (w1..w8 inside).
    assert (params <= names) or (tensors <= names and {"W1", "W2"} <= names), names
    assert {"x", "y_hat", "y", "L.mse", "L.mae", "L", "s", "J"} <= names
    assert not [n for n in names if re.fullmatch(r"(getitem|getattr)(_\d+)?", n)]
    assert nodes["J"].input == ["L", "s"] and nodes["L.mse"].input == ["y_hat", "y"]
    for node in forward.node:  # every node with its shape
        assert "_output_shapes" in node.attr, node.name
    ops = {n.op for n in forward.node}
    assert "add" in ops and ("pow" in ops or "matmul" in ops or "mul" in ops)


def test_the_graphs_tab_of_seed_000():
    from backprop_lab.models import SigmoidNet

    forward = graph.forward_graph(SigmoidNet(), torch.tensor([[0.5, 0.3]]), torch.zeros(1, 2))
    nodes = {n.name: n for n in forward.node}
    assert list(nodes) == [
        "x", "W1", "W1.T", "matmul", "sigmoid", "W2", "W2.T", "matmul_1", "sigmoid_1", "y_hat",
        "y", "L",
    ]  # fmt: skip
    assert nodes["L"].op == "mse_loss" and nodes["L"].input == ["y_hat", "y"]
    assert nodes["sigmoid"].op == "sigmoid" and nodes["matmul"].input == ["x", "W1.T"]
    shape = nodes["sigmoid_1"].attr["_output_shapes"].list.shape[0]
    assert [d.size for d in shape.dim] == [1, 2]
