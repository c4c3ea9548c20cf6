"""Trust: a checkpoint never chooses code; no run's files are lost or half-written."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from backprop_lab import files
from backprop_lab.errors import BackpropLabError, CheckpointError
from backprop_lab.tools.predict import predict, write_csv
from backprop_lab.training.run import train

from conftest import ROOT


@pytest.fixture
def trained(make_cfg) -> Path:
    """A finished one-epoch linear run's checkpoint."""
    summary = train(make_cfg("model=linear", "trainer.max_epochs=1", out="trained"), quiet=True)
    return Path(summary["output_dir"]) / "checkpoints" / "last.ckpt"


class Payload:
    """Runs a shell command when unpickled: what torch.load(weights_only=False) would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def crafted(tmp_path: Path, checkpoint: Path, kind: str) -> tuple[Path, list[Path]]:
    """A checkpoint whose saved model config names other code, and the files that code would
    write or change."""
    state = torch.load(checkpoint, weights_only=True)
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me\n")
    copy = tmp_path / "copied.txt"
    marker = tmp_path / "ran.txt"
    targets = {
        "builtins.open": {"_target_": "builtins.open", "file": str(victim), "mode": "w"},
        "shutil.copyfile": {
            "_target_": "shutil.copyfile",
            "src": "/etc/hostname",
            "dst": str(copy),
        },
        "os.system": {"_target_": "os.system", "command": f"touch {marker}"},
        "a model with a foreign argument": {
            "_target_": "backprop_lab.models.LinearRegression",
            "optimizer": {"_target_": "os.system", "command": f"touch {marker}"},
        },
    }
    path = tmp_path / f"{kind.replace(' ', '_')}.ckpt"
    if kind == "a pickle payload":
        state["run_config"]["model"] = Payload(marker)
        torch.save(state, path)  # loads only with weights_only=False: refused as not ours
    else:
        state["run_config"]["model"] = targets[kind]
        torch.save(state, path)
        torch.load(path, weights_only=True)  # the file itself is plain data
    return path, [victim, copy, marker]


KINDS = [
    "builtins.open",
    "shutil.copyfile",
    "os.system",
    "a model with a foreign argument",
    "a pickle payload",
]


@pytest.mark.parametrize("kind", KINDS)
def test_predict_refuses_a_checkpoint_that_names_other_code(tmp_path, trained, kind):
    path, touched = crafted(tmp_path, trained, kind)
    with pytest.raises(CheckpointError) as refused:
        predict(path, x=[4.0], device="cpu")
    message = str(refused.value)
    assert str(path) in message and "\n" not in message
    assert (tmp_path / "victim.txt").read_text() == "keep me\n"
    assert not any(p.exists() for p in touched[1:])


@pytest.mark.parametrize("kind", KINDS)
def test_resume_refuses_a_checkpoint_that_names_other_code(tmp_path, make_cfg, trained, kind):
    path, touched = crafted(tmp_path, trained, kind)
    with pytest.raises(BackpropLabError):
        train(make_cfg("model=linear", f"ckpt_path={path}", out="resumed"), quiet=True)
    assert (tmp_path / "victim.txt").read_text() == "keep me\n"
    assert not any(p.exists() for p in touched[1:])


@pytest.mark.slow
def test_predict_cli_refuses_a_crafted_checkpoint_in_one_line(tmp_path, trained):
    path, _ = crafted(tmp_path, trained, "builtins.open")
    result = subprocess.run(
        [sys.executable, str(ROOT / "predict.py"), f"ckpt_path={path}", "x=[4.0]"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert result.returncode == 1
    assert result.stderr.startswith("error: ") and len(result.stderr.splitlines()) == 1
    assert "not one of this project's models" in result.stderr
    assert (tmp_path / "victim.txt").read_text() == "keep me\n"


# --- nothing lost or half-written -------------------------------------------------------------


def test_a_run_refuses_a_dir_that_holds_another_runs_files(make_cfg, trained):
    run_dir = trained.parents[1]
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    with pytest.raises(BackpropLabError) as refused:
        train(make_cfg("model=linear", out="trained"), quiet=True)
    assert "already holds another run's files" in str(refused.value)
    assert "summary.json" in str(refused.value)
    assert {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()} == before


def test_the_cli_refuses_an_old_run_dir_before_hydra_writes_into_it(tmp_path, trained):
    run_dir = trained.parents[1]
    (run_dir / ".hydra").mkdir(exist_ok=True)
    (run_dir / ".hydra" / "config.yaml").write_text("the old run's config\n")
    result = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), "model=linear", f"hydra.run.dir={run_dir}"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "already holds another run's files" in result.stderr
    assert (run_dir / ".hydra" / "config.yaml").read_text() == "the old run's config\n"


@pytest.mark.parametrize("key", ["hydra.run.dir", "hydra.sweep.dir"])
def test_a_run_dir_under_a_file_is_one_line(tmp_path, key):
    (tmp_path / "a_file").write_text("")
    multirun = ["-m"] if key == "hydra.sweep.dir" else []
    result = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *multirun, f"{key}={tmp_path / 'a_file' / 'x'}"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.count("error:") == 1 and "is a file" in result.stderr


def test_an_atomic_write_that_fails_leaves_the_previous_file(tmp_path, monkeypatch):
    target = tmp_path / "summary.json"
    files.write_atomic(target, '{"status": "finished"}\n')

    def full(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", full)
    with pytest.raises(OSError):
        files.write_atomic(target, '{"status": "half')
    assert json.loads(target.read_text()) == {"status": "finished"}
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]  # no temporary file left


@pytest.fixture
def small_disk(tmp_path):
    """A 160 KiB tmpfs: a seed run fills it (needs root and mount rights; skipped without)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=160k", "tmpfs", str(mount)]).returncode:
        pytest.skip("cannot mount a tmpfs here")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


def test_a_full_disk_ends_in_one_line_and_leaves_whole_files(make_cfg, small_disk):
    cfg = make_cfg("model=quadratic", f"paths.output_dir={small_disk / 'run'}")
    with pytest.raises(files.DiskFull) as full:
        train(cfg, quiet=True)
    message = str(full.value)
    assert "no space left" in message and str(small_disk / "run") in message
    run_dir = small_disk / "run"
    assert not list(run_dir.rglob("*.partial"))  # no temporary file left behind
    checkpoint = run_dir / "checkpoints" / "last.ckpt"
    if checkpoint.exists():  # the previous complete checkpoint, never a cut one
        assert torch.load(checkpoint, weights_only=True)["global_step"] > 0
    summary = run_dir / "summary.json"
    if summary.exists():
        assert json.loads(summary.read_text())["status"] == "failed"


@pytest.mark.parametrize("delay", [0.15, 0.4, 0.8])
def test_ctrl_c_at_any_moment_of_start_up_is_one_line(tmp_path, delay):
    """Ctrl-C while Hydra, torch and Lightning are still being imported, or as the run starts."""
    worker = subprocess.Popen(
        [sys.executable, str(ROOT / "train.py"), f"paths.log_dir={tmp_path / 'logs'}"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(delay)
    worker.send_signal(signal.SIGINT)
    _, err = worker.communicate(timeout=120)
    assert worker.returncode == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    assert [line for line in err.splitlines() if line.startswith("error:")] == [
        next(line for line in err.splitlines() if "stopped by SIGINT" in line)
    ]


def test_predictions_to_a_path_under_a_file_are_one_line(tmp_path, trained):
    (tmp_path / "a_file").write_text("keep me\n")
    predictions = predict(trained, x=[4.0], device="cpu")
    with pytest.raises(BackpropLabError) as refused:
        write_csv(predictions, tmp_path / "a_file" / "out.csv")
    assert "output_csv=" in str(refused.value) and "cannot be written" in str(refused.value)
    assert (tmp_path / "a_file").read_text() == "keep me\n"
    written = write_csv(predictions, tmp_path / "out.csv")
    assert written.read_text().splitlines()[0] == "x,y_pred"


def test_ctrl_c_while_the_figures_are_drawn_is_recorded(make_cfg, monkeypatch):
    from backprop_lab.dashboard import render
    from backprop_lab.errors import Interrupted

    def ctrl_c():
        raise KeyboardInterrupt

    monkeypatch.setattr(render, "wait", ctrl_c)
    cfg = make_cfg("model=linear", "trainer.max_epochs=2")
    with pytest.raises(Interrupted) as stopped:
        train(cfg, quiet=True)
    assert stopped.value.exit_code == 130 and "drawing the figures" in str(stopped.value)
    summary = json.loads((Path(cfg.paths.output_dir) / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["steps"] == 6
    assert "stopped by SIGINT" in summary["figures"]


def test_a_loss_beyond_the_precision_before_any_update_is_not_blamed_on_the_lr(make_cfg):
    from backprop_lab.errors import Diverged

    # 1e30 fits float32, but w0 * x^2 and its square at x = 3 do not.
    with pytest.raises(Diverged) as diverged:
        train(make_cfg("model=quadratic", "model.w=[1e30,1,1]"), quiet=True)
    message = str(diverged.value)
    assert "at step 0, before any update" in message and "trainer.precision=64" in message
    assert "learning rate" not in message


@pytest.mark.slow
def test_an_interpolated_run_dir_is_checked_too(tmp_path):
    """The default run dir is made of ${hydra:...} and ${run_name}: it resolves for the check."""
    command = [
        sys.executable,
        str(ROOT / "train.py"),
        "model=linear",
        "trainer.max_epochs=1",
        f"paths.log_dir={tmp_path / 'logs'}",
        "hydra.run.dir=${paths.log_dir}/runs/${run_name}/fixed",
    ]
    first = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path)
    assert first.returncode == 0 and "RunDirGuard" not in first.stderr, first.stderr
    second = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path)
    assert second.returncode == 1 and "RunDirGuard" not in second.stderr
    assert f"{tmp_path}/logs/runs/linear/fixed already holds another run's files" in second.stderr


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        (["logger.tensorboard.save_dir=/proc/none"], ["cannot write /proc/none", "paths.log_dir"]),
        (["callbacks.model_checkpoint.dirpath=/proc/none"], ["cannot write /proc/none"]),
        (["trainer.accelerator=tpu"], ["trainer:", "torch_xla"]),  # a package not installed
        (["data.x_columns=[x]", "data.y_columns=[x]"], ["both name ['x']", "not both"]),
        (["data.x_columns=[x,x]"], ["data.x_columns names ['x'] more than once"]),
        (["data.y_columns=[]"], ["data.y_columns must be a list of column names"]),
        (["data=synthetic", "data.x_range=[1,0]"], ["data.x_range must be", "low < high"]),
        (["data=synthetic", "data.coefficients=[]"], ["data.coefficients must be"]),
        (["data=synthetic", "data.noise_std=1e39"], ["data.noise_std", "float32"]),
        (
            ["data=synthetic", "data.coefficients=[1e30,0,0]", "data.x_range=[0,1e10]"],
            ["synthetic targets overflow float32"],
        ),
    ],
)
def test_settings_lightning_or_the_os_refuse_are_one_line(make_cfg, overrides, words):
    with pytest.raises(BackpropLabError) as refused:
        train(make_cfg("model=linear", "trainer.max_epochs=1", *overrides), quiet=True)
    message = str(refused.value)
    assert all(word in message for word in words), message
    assert "\n" not in message


def test_predictions_at_inputs_beyond_the_models_precision_are_refused(trained):
    with pytest.raises(BackpropLabError) as refused:
        predict(trained, x=[1e39], device="cpu")
    assert "1e+39 does not fit the model's float32" in str(refused.value)


def test_a_checkpoint_path_that_is_not_a_file_says_so(make_cfg):
    with pytest.raises(CheckpointError) as refused:
        predict("/dev/null", x=[4.0], device="cpu")
    assert "/dev/null is not a regular file" in str(refused.value)


def test_explain_to_a_place_it_cannot_write_is_one_line(make_cfg, tmp_path):
    from backprop_lab.tools.explain import explain, write

    derivation = explain(make_cfg("model=linear", config_name="explain"))
    with pytest.raises(BackpropLabError) as refused:
        write(derivation, "text", "/proc/derivation.md")
    assert "output=/proc/derivation.md cannot be written" in str(refused.value)
    write(derivation, "json", str(tmp_path / "d.json"))
    assert json.loads((tmp_path / "d.json").read_text())["model"] == "LinearRegression"


MISSHAPEN = {
    "run_config is a string": (("run_config",), "x", "run_config is of type str"),
    "run_state is a number": (("run_state",), 5, "run_state is of type int"),
    "history is a number": (("run_state", "history"), 5, "run_state.history is of type int"),
    "history is not JSON": (("run_state", "history"), "{not json", "not JSON lines"),
    "metric sums are text": (("state_dict", "train_metrics.moments"), "x", "not tensors"),
    "data is text": (("run_state", "data"), "zz", "run_state.data is of type str"),
    "a weight is text": (("state_dict", "w"), "x", "values that are not tensors"),
}


@pytest.mark.parametrize("case", list(MISSHAPEN))
def test_a_misshapen_checkpoint_is_one_line_for_predict_and_resume(
    tmp_path, make_cfg, trained, case
):
    keys, value, words = MISSHAPEN[case]
    state = torch.load(trained, weights_only=True)
    node = state
    for key in keys[:-1]:
        node = node[key]
    node[keys[-1]] = value
    path = tmp_path / "misshapen.ckpt"
    torch.save(state, path)
    with pytest.raises(CheckpointError) as for_predict:
        predict(path, x=[4.0], device="cpu")
    with pytest.raises(CheckpointError) as for_resume:
        train(make_cfg("model=linear", f"ckpt_path={path}", out="resumed"), quiet=True)
    for refused in (for_predict, for_resume):
        assert words in str(refused.value) and "not a checkpoint as this project" in str(
            refused.value
        )
