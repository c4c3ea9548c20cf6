"""hydra/launcher=slurm on a real SLURM: scripts/slurm_sweep.sh starts a one-node cluster on this
machine and runs a 2-job sweep through it; this test reads back what the sweep wrote.

Skipped where it cannot run: not root (the script starts SLURM's daemons), or slurm-wlm and munge
not installed (the test does not install them; the script alone does)."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from conftest import ROOT

SCRIPT = ROOT / "scripts" / "slurm_sweep.sh"
DAEMONS = ("slurmctld", "slurmd", "munged", "sinfo", "sbatch")


def free_port_pair() -> int:
    """A port p with p and p + 1 free (slurmctld's and slurmd's)."""
    for _ in range(50):
        with socket.socket() as a:
            a.bind(("127.0.0.1", 0))
            port = a.getsockname()[1]
            try:
                with socket.socket() as b:
                    b.bind(("127.0.0.1", port + 1))
                    return port
            except OSError:
                continue
    raise RuntimeError("no two neighbouring free ports")


@pytest.mark.slow
def test_a_sweep_runs_as_slurm_jobs(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root: scripts/slurm_sweep.sh starts slurmctld, slurmd and munged")
    missing = [name for name in (*DAEMONS, "uv") if shutil.which(name) is None]
    if missing:
        pytest.skip(
            f"needs SLURM and uv ({', '.join(missing)} not found): apt-get install -y "
            "slurm-wlm munge; pip install uv"
        )
    result = subprocess.run(
        [str(SCRIPT)],
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, "SLURM_SWEEP_KEEP": "1", "SLURM_SWEEP_PORT": str(free_port_pair())},
    )
    kept = re.search(r"^logs: (\S+)", result.stderr, re.MULTILINE)
    try:
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith("ok: slurm sweep:"), result.stdout
        assert kept, result.stderr
        sweep = Path(kept.group(1)) / "sweep"
        jobs = sorted(p for p in sweep.iterdir() if (p / ".hydra").is_dir())
        assert [p.name for p in jobs] == ["0_model=linear", "1_model=quadratic"]
        for job in jobs:
            assert json.loads((job / "summary.json").read_text())["status"] == "finished"
        with (sweep / "summary.csv").open() as f:
            rows = {row["job"]: row for row in csv.DictReader(f)}
        assert set(rows) == {p.name for p in jobs}
        assert all(row["status"] == "finished" for row in rows.values())
        # Each job ran inside SLURM: submitit logs the SLURM job it found itself in.
        tasks = sorted(p for p in (sweep / ".submitit").glob("*_*") if p.is_dir())
        logs = ["".join(f.read_text() for f in task.glob("*_log.*")) for task in tasks]
        assert len(tasks) == 2 and all("JobEnvironment(job_id=" in log for log in logs), logs
    finally:
        if kept:
            shutil.rmtree(kept.group(1), ignore_errors=True)
