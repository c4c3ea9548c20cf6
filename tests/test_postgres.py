"""search.storage=postgresql://...: two search.py workers share one study on a real PostgreSQL
server, started here for the test (initdb in a temp dir, on 127.0.0.1 and a free port).

Skipped, with what to install, where PostgreSQL's server binaries (initdb, pg_ctl) are absent or
the server does not start."""

from __future__ import annotations

import csv
import glob
import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from sqlalchemy.engine import make_url

from backprop_lab.tools.search import database_url

from conftest import ROOT

INSTALL = "apt-get install -y postgresql (Debian/Ubuntu), or put initdb and pg_ctl on PATH"
PASSWORD = "s3cret"
N_TRIALS = 4
#: A trial of a few seconds: long enough that neither worker, started a moment after the other,
#: finds the study already done, and short enough to keep the test well under a minute.
TRIAL = (
    "model=linear",
    "data=synthetic",
    "data.n=1000",
    "data.batch_size=2",
    "trainer.max_epochs=2",
)


def server_binaries() -> Path | None:
    """The folder holding initdb and pg_ctl: on PATH, else Debian's /usr/lib/postgresql/<v>/bin."""
    on_path = shutil.which("initdb")
    if on_path and shutil.which("pg_ctl"):
        return Path(on_path).parent
    versions = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0,
    )
    return Path(versions[-1]).parent if versions else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    """A PostgreSQL server of its own, with a database "optuna"; its URL. Stopped at the end."""
    pytest.importorskip("psycopg2", reason="needs psycopg2: uv sync --extra postgres")
    bin_dir = server_binaries()
    if bin_dir is None:
        pytest.skip(f"needs PostgreSQL's server binaries (initdb, pg_ctl): {INSTALL}")
    # initdb refuses to run as root: as root, the cluster belongs to the "postgres" user.
    user = None
    if os.geteuid() == 0:
        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip(f"running as root and there is no 'postgres' user to run initdb: {INSTALL}")
    prefix: list[str] = []  # what runs initdb and pg_ctl as that user
    if user and shutil.which("setpriv"):
        prefix = ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups"]
    elif user:
        prefix = ["runuser", "-u", user.pw_name, "--"]
    tmp = Path(tempfile.mkdtemp(prefix="backprop-lab-pg-"))
    data, port = tmp / "data", free_port()
    if user:
        os.chown(tmp, user.pw_uid, user.pw_gid)

    def run(*cmd: str) -> subprocess.CompletedProcess:
        return subprocess.run([*prefix, *cmd], capture_output=True, text=True, timeout=60, cwd=tmp)

    (tmp / "password").write_text(PASSWORD)
    if user:
        os.chown(tmp / "password", user.pw_uid, user.pw_gid)
    started = False
    try:
        initdb = [str(bin_dir / "initdb"), "-D", str(data), "-U", "lab", "-E", "UTF8"]
        steps = [
            [
                *initdb,
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                f"--pwfile={tmp / 'password'}",
            ],
            [
                str(bin_dir / "pg_ctl"),
                "-D",
                str(data),
                "-l",
                str(tmp / "server.log"),
                "-w",
                "-t",
                "30",
                "-o",
                f"-h 127.0.0.1 -p {port} -k {tmp} -c fsync=off",
                "start",
            ],
        ]
        for step in steps:
            started = started or step is steps[-1]
            result = run(*step)
            if result.returncode != 0:
                log = tmp / "server.log"
                detail = (result.stderr or result.stdout).strip().splitlines()
                if log.exists():
                    detail += log.read_text().strip().splitlines()
                pytest.skip(
                    f"PostgreSQL server did not start: {Path(step[0]).name} failed: "
                    f"{detail[-1] if detail else f'exit status {result.returncode}'}"
                )
        import psycopg2

        connection = psycopg2.connect(
            host="127.0.0.1", port=port, user="lab", password=PASSWORD, dbname="postgres"
        )
        connection.autocommit = True  # CREATE DATABASE cannot run inside a transaction
        connection.cursor().execute("CREATE DATABASE optuna")
        connection.close()
        yield f"postgresql://lab:{PASSWORD}@127.0.0.1:{port}/optuna"  # the README's form
    finally:
        if started:
            run(str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop")
        shutil.rmtree(tmp, ignore_errors=True)


def test_a_bare_postgresql_url_gets_a_driver_that_is_installed(make_cfg):
    # SQLAlchemy >= 2.1 reads postgresql:// as psycopg 3; the postgres extra installs psycopg2.
    pytest.importorskip("psycopg2", reason="needs psycopg2: uv sync --extra postgres")
    cfg = make_cfg("search.storage=postgresql://u:pw@db-host/optuna", config_name="search")
    url = make_url(database_url(cfg, Path(".")))
    url.get_dialect().import_dbapi()  # raises ImportError if the driver it names is missing
    assert url.get_backend_name() == "postgresql"
    assert (url.username, url.password, url.host, url.database) == ("u", "pw", "db-host", "optuna")


@pytest.mark.slow
def test_two_workers_share_one_study_in_postgresql(postgres_url, tmp_path):
    # Each worker logs under a folder of its own, so a trial's output_dir says who ran it.
    logs = {seed: tmp_path / f"worker_{seed}" for seed in (1, 2)}
    workers = {
        seed: subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "search.py"),
                f"paths.log_dir={log_dir}",
                "trainer.enable_progress_bar=false",
                *TRIAL,
                f"search.storage={postgres_url}",
                "search.study_name=shared",
                f"search.n_trials={N_TRIALS}",
                f"seed={seed}",
            ],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for seed, log_dir in logs.items()
    }
    for worker in workers.values():
        out, err = worker.communicate(timeout=300)
        assert worker.returncode == 0, err
        assert "study 'shared'" in out, out

    # Read back with Optuna alone, naming the driver: SQLAlchemy >= 2.1 takes a bare postgresql://
    # for psycopg 3, and what is installed is psycopg2 (search.py falls back to it by itself).
    storage = postgres_url.replace("postgresql://", "postgresql+psycopg2://", 1)
    study = optuna.load_study(study_name="shared", storage=storage)
    finished = study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))
    assert len(finished) == N_TRIALS, [t.state.name for t in study.trials]
    trained = [t for t in study.trials if t.params]
    # Any other trial is a surplus one, failed untrained, with no parameters and no run dir.
    assert [t.state.name for t in trained] == ["COMPLETE"] * N_TRIALS
    assert all("output_dir" not in t.user_attrs for t in study.trials if not t.params)
    drawn = [tuple(sorted(t.params.items())) for t in trained]
    assert len(set(drawn)) == len(drawn), drawn

    ran_by = {seed: [] for seed in logs}
    for trial in trained:
        run_dir = Path(trial.user_attrs["output_dir"])
        summary = json.loads((run_dir / "summary.json").read_text())
        assert summary["status"] == "finished", summary
        assert summary["best"]["value"] == trial.value
        owner = [seed for seed, log_dir in logs.items() if run_dir.is_relative_to(log_dir)]
        assert len(owner) == 1, run_dir
        ran_by[owner[0]].append(trial.number)
    assert all(ran_by.values()), f"one worker ran every trial: {ran_by}"
    # Each worker's trials.csv lists the shared study as it stood when that worker ended,
    # so at least the trials it ran itself.
    for seed, log_dir in logs.items():
        with (log_dir / "searches" / "shared" / "trials.csv").open() as f:
            rows = {int(row["number"]): row for row in csv.DictReader(f)}
        for number in ran_by[seed]:
            assert rows[number]["state"] == "COMPLETE"
            assert float(rows[number]["value"]) == study.trials[number].value
