"""The HParams tab of a sweep, read through a real TensorBoard server: the swept key first and
typed, the loss as the metric, each job named by its short dir name."""

from __future__ import annotations

import pytest
from test_dashboard import tensorboard
from test_sweeps import cli, sweep_dir

STATUSES = ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"]


@pytest.mark.slow
def test_a_sweeps_hparams_list_the_swept_keys_first_with_their_types(tmp_path):
    result = cli(
        "train.py", "-m", "model=linear", "optimizer.lr=0.01,0.1", "trainer.max_epochs=2",
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    sweep = sweep_dir(tmp_path)
    jobs = sorted(p.name for p in sweep.iterdir() if p.is_dir())
    assert jobs == ["0_lr=0.01", "1_lr=0.1"]  # what sets the jobs apart, short enough to read
    with tensorboard(sweep, tmp_path / "tensorboard.log", jobs[1]) as tb:
        experiment = tb.json("/data/plugin/hparams/experiment", body={"experimentName": ""})
        infos = experiment["hparamInfos"]
        # the swept key comes first, so the tab shows it before any is ticked; the rest by name
        assert [h["name"] for h in infos[:3]] == ["optimizer.lr", "data", "data.batch_size"]
        types = {h["name"]: h["type"] for h in infos}
        assert types["optimizer.lr"] == "DATA_TYPE_FLOAT64"
        assert types["model"] == "DATA_TYPE_STRING"
        metrics = [m["name"]["tag"] for m in experiment["metricInfos"]]
        assert metrics == ["Loss/train"]  # the objective; y = 2x has no validation rows
        groups = tb.json(
            "/data/plugin/hparams/session_groups",
            body={
                "experimentName": "",
                "allowedStatuses": STATUSES,
                "colParams": [],
                "startIndex": 0,
                "sliceSize": 10,
            },
        )["sessionGroups"]
    # each job's row: named by its dir (the Trial ID), the float it ran with, its final loss
    rows = {g["name"]: g for g in groups}
    assert set(rows) == set(jobs)
    assert rows[jobs[0]]["hparams"]["optimizer.lr"] == 0.01
    assert rows[jobs[1]]["hparams"]["optimizer.lr"] == 0.1
    for job in jobs:
        (value,) = [
            m["value"] for m in rows[job]["metricValues"] if m["name"]["tag"] == "Loss/train"
        ]
        assert value > 0
