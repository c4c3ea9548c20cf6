"""explain: the chain rule with numbers, checked against autograd."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from backprop_lab.tools.explain import derive, explain, render
from backprop_lab.training.build import build

from conftest import ROOT


def seed000_autograd_gradients() -> list[float]:
    """Seed 000's network at its initial weights, differentiated by plain autograd."""
    w = [torch.tensor(v, requires_grad=True) for v in (0.2, -0.4, 0.5, 0.6, 0.1, -0.5, -0.3, 0.8)]
    x1, x2, y1, y2 = 0.5, 0.3, 0.23, -0.07
    h1 = torch.sigmoid(w[0] * x1 + w[2] * x2)
    h2 = torch.sigmoid(w[1] * x1 + w[3] * x2)
    o1 = torch.sigmoid(w[4] * h1 + w[6] * h2)
    o2 = torch.sigmoid(w[5] * h1 + w[7] * h2)
    (0.5 * (o1 - y1) ** 2 + 0.5 * (o2 - y2) ** 2).backward()
    return [v.grad.item() for v in w]


def test_seed000_step0_matches_autograd(make_cfg):
    derivation = explain(make_cfg("model=sigmoid_net", config_name="explain"))
    expected = seed000_autograd_gradients()
    assert [p.name for p in derivation.parameters] == [f"w{i}" for i in range(1, 9)]
    for p, grad in zip(derivation.parameters, expected, strict=True):
        assert p.autograd == pytest.approx(grad, rel=1e-6)
        assert p.by_hand == pytest.approx(grad, rel=1e-6)
    # w1..w4 sit behind both outputs: two paths each; w5..w8 one.
    assert [len(p.terms) for p in derivation.parameters] == [2, 2, 2, 2, 1, 1, 1, 1]
    text = render(derivation)
    for p in derivation.parameters:
        assert f"{p.autograd:<15.8g} by autograd" in text
    assert "dL/dout_o1 * dout_o1/din_o1 * din_o1/dout_h1 * dout_h1/din_h1 * din_h1/dw1" in text
    assert "out_o1 = 0.476946" in text


SEED000_ROUND99_GRADIENTS = [-0.0031, -0.0015, -0.0019, -0.0009, 0.0010, 0.0067, 0.0007, 0.0052]


def test_seed000_round_99_as_the_seed_prints_it(make_cfg):
    derivation = explain(make_cfg("model=sigmoid_net", "step=99", config_name="explain"))
    nodes = derivation.nodes
    assert (round(nodes["out_o1"][0], 4), round(nodes["out_o2"][0], 4)) == (0.2378, 0.0736)
    assert round(nodes["L"][0], 4) == 0.0103
    assert [round(p.autograd, 4) for p in derivation.parameters] == SEED000_ROUND99_GRADIENTS
    assert [round(p.by_hand, 4) for p in derivation.parameters] == SEED000_ROUND99_GRADIENTS


#: Every model config alone, and seed 002's linear model with its bias: a model added to
#: conf/model/ is explained here with no edit.
MODEL_RUNS = [
    *(f"model={p.stem}" for p in sorted((ROOT / "conf" / "model").glob("*.yaml"))),
    "experiment=seed002",
]


@pytest.mark.parametrize("model_run", MODEL_RUNS)
def test_chain_sums_equal_the_vectorised_derivation_for_every_model(make_cfg, model_run):
    cfg = make_cfg(model_run, "loss=weighted", "loss.l2=0.2")
    datamodule, model = build(cfg)
    batch = datamodule.train_xy
    derivation = derive(model, batch)
    vectorised = model.seed_names(model.hand_gradients(batch)[3])
    assert [p.name for p in derivation.parameters] == list(vectorised)
    for p in derivation.parameters:
        assert p.terms  # every parameter's derivative is written out, path by path
        assert p.by_hand == pytest.approx(vectorised[p.name].item(), rel=1e-6)
        assert p.by_hand == pytest.approx(p.autograd, rel=1e-6)
    assert derivation.objective == "J" and {"L", "s", "J", "L.mse", "L.mae"} <= set(
        derivation.nodes
    )


def test_biases_are_explained_too(make_cfg):
    cfg = make_cfg(
        "model=sigmoid_net",
        "model.hidden_bias=[0.35,0.35]",
        "model.output_bias=[0.6,0.6]",
        config_name="explain",
    )
    derivation = explain(cfg)
    names = [p.name for p in derivation.parameters]
    assert names[-4:] == ["b_h1", "b_h2", "b_o1", "b_o2"]
    for p in derivation.parameters:
        assert p.by_hand == pytest.approx(p.autograd, rel=1e-6)


def test_markdown_and_json_render_seed004s_first_gradient(make_cfg):
    derivation = explain(make_cfg("model=quadratic", config_name="explain"))
    markdown = render(derivation, "markdown")
    assert markdown.startswith("# QuadraticRegression: the chain rule with numbers")
    assert "### dL/dw0" in markdown and "| `y_hat` | 3 |" in markdown
    data = json.loads(render(derivation, "json"))
    # Seed 004's first gradient: tensor([2., 2., 2.]).
    assert [p["autograd"] for p in data["parameters"]] == [2.0, 2.0, 2.0]
    assert all(p["difference"] == 0 for p in data["parameters"])


@pytest.mark.slow
def test_explain_cli_writes_only_its_output(tmp_path):
    out = tmp_path / "derivation.md"
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "explain.py"),
            "model=sigmoid_net",
            "format=markdown",
            f"output={out}",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
        env={**os.environ, "HYDRA_FULL_ERROR": "0"},
    )
    assert result.returncode == 0, result.stderr
    assert "### dL/dw8" in out.read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["derivation.md"]


@pytest.mark.slow
def test_explain_rejects_a_bad_format(tmp_path):
    result = subprocess.run(
        [sys.executable, str(ROOT / "explain.py"), "format=pdf"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert result.returncode == 1
    assert "format must be one of" in result.stderr and "Traceback" not in result.stderr
