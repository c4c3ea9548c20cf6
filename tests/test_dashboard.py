"""What a person sees of a run: a real TensorBoard server over a finished run, the PNG beside
summary.json, the images per model, the graphs, the text card, the progress bar, the console."""

from __future__ import annotations

import functools
import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from test_plots import check_png, png_size
from test_tensorboard import compare_tag_names, tag_groups

from backprop_lab.dashboard import figures, graph, plots, progress
from backprop_lab.models import LinearRegression, QuadraticRegression, SigmoidNet

SERVER_TIMEOUT_S = 120
SEED_004_AT_4 = 8.544171333312988


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TensorBoardServer:
    """HTTP access to a running TensorBoard, loopback only, no proxies."""

    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def get(self, route: str, **params: str) -> bytes:
        url = self.base + route + ("?" + urllib.parse.urlencode(params) if params else "")
        with self._opener.open(url, timeout=30) as response:
            return response.read()

    def json(self, route: str, body: dict | None = None, **params: str):
        if body is None:
            return json.loads(self.get(route, **params))
        request = urllib.request.Request(
            self.base + route,
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with self._opener.open(request, timeout=30) as response:
            return json.loads(response.read())


@contextmanager
def tensorboard(logdir: Path, log: Path, run: str) -> Iterator[TensorBoardServer]:
    """The tensorboard program over ``logdir`` on a free loopback port, until ``run``'s scalars
    are served; always stopped at the end."""
    port = _free_port()
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tensorboard.main",
                "--logdir",
                str(logdir),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--load_fast",
                "false",
                "--reload_interval",
                "1",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        server = TensorBoardServer(port)
        deadline = time.monotonic() + SERVER_TIMEOUT_S
        while True:
            assert process.poll() is None, f"tensorboard exited: {log.read_text()[-2000:]}"
            try:
                if run in server.json("/data/plugin/scalars/tags"):
                    break
            except (urllib.error.URLError, ConnectionError, TimeoutError, ValueError):
                pass
            assert time.monotonic() < deadline, f"tensorboard did not serve {run} in time"
            time.sleep(0.5)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)


@pytest.mark.slow
def test_tensorboard_serves_the_whole_dashboard_of_a_finished_run(run, tmp_path, capsys):
    summary = run("model=quadratic", out="seed004")
    report = capsys.readouterr().out
    name = "seed004"
    with tensorboard(tmp_path, tmp_path / "tensorboard.log", name) as tb:
        assert name in tb.json("/data/runs")

        scalars = tb.json("/data/plugin/scalars/tags")[name]
        assert {
            "Loss/train",
            "Loss/train_step",
            "params/quadratic/w0",
            "grads/quadratic/w0",
            "grads/quadratic/norm",
            "gradcheck/quadratic",
        } <= set(scalars)
        # what Time Series opens on: the Loss group, then the rest
        images = tb.json("/data/plugin/images/tags")[name]
        histograms = tb.json("/data/plugin/histograms/tags")[name]
        assert tag_groups([*scalars, *images, *histograms])[0] == "Loss"
        assert "epoch" not in scalars and not [t for t in scalars if t.startswith("hp")]
        loss = tb.json("/data/plugin/scalars/scalars", run=name, tag="Loss/train")
        assert len(loss) == 100  # [wall time, step, value] per epoch
        final = summary["final_metrics"]["Loss/train"]
        assert loss[-1][2] == pytest.approx(final, rel=1e-6)

        assert set(histograms) == {"weights/quadratic/w0..w2", "weights/quadratic/w0..w2.grad"}

        experiment = tb.json("/data/plugin/hparams/experiment", body={"experimentName": ""})
        hparams = {h["name"] for h in experiment["hparamInfos"]}
        assert {"model", "optimizer.lr", "data.batch_size"} <= hparams
        metrics = {m["name"]["tag"] for m in experiment["metricInfos"]}
        assert metrics == {"Loss/train"}

        assert tb.json("/data/plugin/graphs/info")[name]["run_graph"] is True
        graph = tb.get("/data/plugin/graphs/graph", run=name, conceptual="false").decode()
        for node in ("x", "w0", "pow", "y_hat", "L"):
            assert f'name: "{node}' in graph

        assert set(images) == {
            f"figures/quadratic/{figure}"
            for figure in (
                "loss_curve",
                "parameters",
                "first_step",
                "data_fit",
                "graph",
                "loss_surface/w0_w1",
                "loss_surface/w0_w2",
                "loss_surface/w1_w2",
            )
        }
        for tag in images:
            (entry,) = tb.json("/data/plugin/images/images", run=name, tag=tag)
            assert entry["step"] == 300
            png = tb.get("/data/plugin/images/individualImage?" + entry["query"])
            check_png(png, png_size(png) if tag.endswith("/graph") else (plots.WIDTH, plots.HEIGHT))

        texts = tb.json("/data/plugin/text/tags")[name]
        # SummaryWriter.add_text files a text under <tag>/text_summary; the card sorts first
        card_tag, backward_tag = "card/text_summary", "graph/backward/text_summary"
        assert sorted(texts, key=functools.cmp_to_key(compare_tag_names)) == [
            card_tag,
            backward_tag,
        ]
        (card,) = tb.json("/data/plugin/text/text", run=name, tag=card_tag)
        # the prediction at x=4 before and after, rounded for reading
        assert "<td>4.0</td>" in card["text"] and "<td>8.54417</td>" in card["text"]
        assert "<table>" in card["text"] and "QuadraticRegression" in card["text"]
        (backward,) = tb.json("/data/plugin/text/text", run=name, tag=backward_tag)
        assert "MseLossBackward0" in backward["text"] and "w.grad" in backward["text"]

    # The run's event file, then the figures' and the graph's (written after the run's writer
    # closed), named to sort right after it: TensorBoard reads them in name order.
    out = Path(summary["output_dir"])
    run_events, figures = sorted(p.name for p in out.glob("events.out.tfevents.*"))
    assert figures == run_events + ".figures"
    assert not list(out.glob(".figures-*"))  # every job drawn, its file of numbers removed
    # The console's final table names the plots, the checkpoint and TensorBoard, the run dir last.
    lines = report.strip().splitlines()
    assert f"loss curve: {out / 'loss_curve.png'}" in lines
    assert f"checkpoint: {out / 'checkpoints' / 'last.ckpt'}" in lines
    assert f"tensorboard: uv run tensorboard --logdir {out}" in lines
    assert lines[-1] == f"logs: {out}"
    assert "best epoch: 99 (Loss/train=" in report


def test_the_loss_curve_png_lies_beside_summary_json(run):
    summary = run("model=linear", "trainer.max_epochs=5")
    out = Path(summary["output_dir"])
    assert (out / "summary.json").is_file()
    check_png((out / "loss_curve.png").read_bytes())


def _images(run_dir: Path) -> dict[str, object]:
    events = EventAccumulator(str(run_dir), size_guidance={"images": 0})
    events.Reload()
    return {tag: events.Images(tag)[-1] for tag in events.Tags()["images"]}


@pytest.mark.parametrize(
    ("overrides", "label", "surfaces"),
    [
        (("model=linear", "trainer.max_epochs=5"), "linear", {"loss_surface/w"}),
        (("experiment=seed002",), "seed002", {"loss_surface/w_b"}),
        # 8 weights: slices through the three that moved most (w5, w6, w8 from seed 000's start)
        (
            ("model=sigmoid_net", "trainer.max_epochs=20"),
            "sigmoid_net",
            {"loss_surface/w5_w6", "loss_surface/w5_w8", "loss_surface/w6_w8"},
        ),
        (
            ("model=quadratic", "trainer.max_epochs=3", "callbacks.plots.max_surfaces=0"),
            "quadratic",
            set(),
        ),
    ],
    ids=["one-parameter", "two-parameters", "eight-parameters", "surfaces-off"],
)
def test_images_per_model(run, overrides, label, surfaces):
    summary = run(*overrides)
    images = _images(Path(summary["output_dir"]))
    figures = {"loss_curve", "parameters", "first_step", "data_fit", "graph", *surfaces}
    assert set(images) == {f"figures/{label}/{figure}" for figure in figures}
    for tag, image in images.items():
        # The graph is as large as its nodes need; every other figure WIDTH x HEIGHT.
        size = (plots.WIDTH, plots.HEIGHT) if not tag.endswith("/graph") else None
        size = size or png_size(image.encoded_image_string)
        assert (image.width, image.height) == size
        check_png(image.encoded_image_string, size)


def test_without_tensorboard_the_png_is_still_written(run):
    summary = run("model=linear", "trainer.max_epochs=2", "logger=none")
    out = Path(summary["output_dir"])
    assert not list(out.glob("events.out.tfevents.*"))
    check_png((out / "loss_curve.png").read_bytes())


# --- the parts, in-process ------------------------------------------------------------------------
def test_seed_slots_name_every_scalar_where_it_lives():
    net = SigmoidNet(hidden_bias=[0.1, 0.2], output_bias=[0.3, 0.4])
    slots = net.seed_slots()
    # w1..w4 read hidden_weight column by column: w2 = W1[1, 0], w3 = W1[0, 1]
    assert slots["w2"] == ("W1", 2) and slots["w3"] == ("W1", 1) and slots["w6"] == ("W2", 2)
    assert slots["b_o2"] == ("b2", 1)
    params = dict(net.named_parameters())
    for key, value in net.scalar_values().items():
        name, index = slots[key]
        assert params[name].detach().reshape(-1)[index].item() == pytest.approx(value)


@pytest.mark.parametrize("model", [QuadraticRegression(), SigmoidNet()], ids=["quadratic", "net"])
def test_loss_surface_is_the_objective_at_each_setting(model):
    x = torch.tensor([[1.0, 0.5], [2.0, -0.3], [3.0, 0.1]])[:, : model.in_features]
    y = torch.tensor([[2.0, 0.2], [4.0, 0.3], [6.0, 0.1]])[:, : model.out_features]
    surface = figures.LossSurface(model, x, y)
    a, b = list(model.scalar_values())[:2]
    grid = np.array([[0.1, -0.5], [2.0, 0.3], [-1.0, 1.5]])
    losses = surface.losses({a: grid[:, 0], b: grid[:, 1]})
    slots = model.seed_slots()
    for (va, vb), got in zip(grid, losses, strict=True):
        with torch.no_grad():
            twin = type(model)()
            twin.load_state_dict(model.state_dict())
            for key, value in ((a, va), (b, vb)):
                name, index = slots[key]
                getattr(twin, name).view(-1)[index] = value
            expected = twin.compute_loss((x, y))[1].item()
        assert got == pytest.approx(expected, rel=1e-6)
    assert model.scalar_values() == type(model)().scalar_values()  # the model is left as it was


def test_surface_pairs_take_the_parameters_that_moved_most():
    path = {
        "w1": np.array([0.0, 0.1]),
        "w2": np.array([0.0, 5.0]),
        "w3": np.array([0.0, -3.0]),
        "w4": np.array([0.0, 1.0]),
    }
    assert figures.surface_pairs(path, 3) == [("w2", "w3"), ("w2", "w4"), ("w3", "w4")]
    assert figures.surface_pairs(path, 1) == [("w2", "w3")]
    assert figures.surface_pairs(path, 0) == []
    assert figures.surface_pairs({"w": np.array([1.0, 2.0])}, 3) == [("w",)]


def test_forward_graph_has_each_operation_with_its_shape():
    forward = graph.forward_graph(SigmoidNet(), torch.tensor([[0.5, 0.3]]))
    nodes = {n.name: n for n in forward.node}
    assert {"x", "W1", "matmul", "sigmoid_1", "y_hat"} <= set(nodes)
    assert nodes["y_hat"].input == ["sigmoid_1"]
    shape = nodes["sigmoid_1"].attr["_output_shapes"].list.shape[0]
    assert [d.size for d in shape.dim] == [1, 2]


def test_backward_graph_walks_from_the_loss_to_every_parameter():
    text = graph.backward_graph(LinearRegression(bias=True), (torch.ones(2, 1), torch.ones(2, 1)))
    assert text.count("AccumulateGrad  -> ") == 2
    assert "-> w.grad (1,)" in text and "-> b.grad (1,)" in text
    tree = text.split("```text")[1]
    assert tree.index("MseLossBackward0") < tree.index("AccumulateGrad")


# --- console --------------------------------------------------------------------------------------
def test_progress_bar_follows_trainer_enable_progress_bar():
    assert isinstance(progress.progress_bar(enabled=True), progress.ProgressBar)
    # Lightning refuses a bar with the flag off: no callback at all, whose hooks it would call
    assert progress.progress_bar(enabled=False) is None


def test_progress_bar_writes_plain_lines_when_not_on_a_terminal(run, capfd):
    run(
        "model=linear",
        "trainer.max_epochs=3",
        "trainer.enable_progress_bar=true",
        "callbacks.progress_bar.delay=0",
        "callbacks.progress_bar.log_every=0",
    )
    err = capfd.readouterr().err
    assert "epoch 3/3, step 9/9, loss " in err
    assert "Epoch 0:" not in err  # Lightning's own bar is not added beside ours


def test_a_run_of_a_moment_prints_no_progress(run, capfd):
    run("model=linear", "trainer.max_epochs=3", "trainer.enable_progress_bar=true")
    captured = capfd.readouterr()
    assert "step" not in captured.err and "it/s" not in captured.err
