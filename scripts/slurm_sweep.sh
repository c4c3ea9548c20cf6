#!/usr/bin/env bash
# Try `hydra/launcher=slurm` on a real SLURM: a one-node cluster on this machine, then a 2-job sweep.
#
#   sudo scripts/slurm_sweep.sh [OVERRIDE ...]   # Debian/Ubuntu, as root; overrides go to train.py
#
# Installs slurm-wlm and munge if they are missing, writes a minimal slurm.conf in a temp dir for
# this host (its name, CPUs and memory from `slurmd -C`; one partition; no cgroups, so it also runs
# in a container), starts munged (unless one already answers), slurmctld and slurmd, waits for the
# node to be idle, and runs
#   uv run train.py -m hydra/launcher=slurm hydra.launcher.partition=<it> model=linear,quadratic ...
# It checks that both jobs' summary.json say "finished" and that the sweep's summary.csv lists both,
# prints one line with the result, and stops the daemons it started. Exit status 0 on success,
# 1 with an "error:" line otherwise. Environment: SLURM_SWEEP_KEEP=1 keeps the temp dir (logs,
# sweep dir); SLURM_SWEEP_PORT (default 16817) is slurmctld's port, slurmd takes the next one.
set -euo pipefail

fail() {
  echo "error: $*" >&2
  exit 1
}

[[ $(id -u) -eq 0 ]] || fail "run as root (it installs packages and starts SLURM's daemons): sudo $0"
root=$(cd "$(dirname "$0")/.." && pwd)
command -v uv >/dev/null || fail "uv is not on PATH; install it (https://docs.astral.sh/uv/) and run uv sync"

# ------------------------------------------------------------------ install
missing=0
for tool in slurmctld slurmd sinfo sbatch squeue scancel munged munge; do
  command -v "$tool" >/dev/null || missing=1
done
if [[ $missing -eq 1 ]]; then
  command -v apt-get >/dev/null || fail "SLURM or munge is missing and there is no apt-get to install slurm-wlm munge"
  echo "installing slurm-wlm munge ..."
  started=$SECONDS
  export DEBIAN_FRONTEND=noninteractive
  { apt-get update && apt-get install -y slurm-wlm munge; } >/tmp/slurm_sweep-apt.log 2>&1 ||
    fail "apt-get install -y slurm-wlm munge failed; see /tmp/slurm_sweep-apt.log"
  echo "installed slurm-wlm munge in $((SECONDS - started)) s"
fi

partition=lab
work=$(mktemp -d /tmp/slurm-sweep.XXXXXX)
chmod 755 "$work"
pids=()
munged_pid=""
# Let the jobs end in SLURM before stopping it: submitit has a job's result as soon as the job writes
# it, a moment before the job's processes exit, and a step whose controller is gone never ends.
drain() {
  local t
  for t in $(seq "$1"); do
    [[ -z $(squeue -h -o %i 2>/dev/null) ]] && return 0
    sleep 1
  done
  return 1
}
stop() { # stop <pid>: SIGTERM, then SIGKILL after 15 s
  kill "$1" 2>/dev/null || return 0
  for _ in $(seq 30); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.5; done
  kill -9 "$1" 2>/dev/null || true
}
cleanup() {
  local status=$?
  if [[ ${#pids[@]} -gt 0 ]] && ! drain 30; then
    scancel --quiet "--partition=$partition" 2>/dev/null || true
    drain 30 || echo "warning: jobs still in the queue as SLURM stops: $(squeue -h -o %i | tr '\n' ' ')" >&2
  fi
  local i
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do stop "${pids[i]}"; done # slurmd, then slurmctld
  [[ -n $munged_pid ]] && stop "$munged_pid"
  if [[ $status -ne 0 || ${SLURM_SWEEP_KEEP:-0} == 1 ]]; then
    echo "logs: $work (slurmctld.log, slurmd.log, sweep.out, sweep/.submitit/)" >&2
  else
    rm -rf "$work"
  fi
  exit "$status"
}
trap cleanup EXIT

# ------------------------------------------------------------------ munge
# Slurm authenticates through munged on its default socket; reuse one that answers, else start one.
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
  if [[ ! -s /etc/munge/munge.key ]]; then
    mkdir -p /etc/munge
    if command -v mungekey >/dev/null; then
      mungekey --create --keyfile=/etc/munge/munge.key
    else
      dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
    fi
  fi
  chown munge:munge /etc/munge/munge.key 2>/dev/null || true
  chmod 400 /etc/munge/munge.key
  mkdir -p /run/munge /var/lib/munge /var/log/munge
  chown munge:munge /run/munge /var/lib/munge /var/log/munge 2>/dev/null || true
  chmod 755 /run/munge
  runuser -u munge -- munged --pid-file=/run/munge/slurm_sweep-munged.pid ||
    fail "munged did not start; see /var/log/munge/munged.log"
  munged_pid=$(cat /run/munge/slurm_sweep-munged.pid)
  for _ in $(seq 20); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.5; done
  munge -n | unmunge >/dev/null 2>&1 || fail "munged started but does not answer (munge -n | unmunge)"
fi

# ------------------------------------------------------------------ slurm.conf
node=$(slurmd -C | head -n 1) # NodeName=<host> CPUs=.. Boards=.. ... RealMemory=..
[[ $node == NodeName=* ]] || fail "slurmd -C printed no node line: $node"
host=${node%% *}
host=${host#NodeName=}
port=${SLURM_SWEEP_PORT:-16817}
mkdir -p "$work/state" "$work/spool"
cat >"$work/slurm.conf" <<EOF
ClusterName=backprop-lab
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmctldPort=$port
SlurmdPort=$((port + 1))
AuthType=auth/munge
StateSaveLocation=$work/state
SlurmdSpoolDir=$work/spool
SlurmctldPidFile=$work/slurmctld.pid
SlurmdPidFile=$work/slurmd.pid
SlurmctldLogFile=$work/slurmctld.log
SlurmdLogFile=$work/slurmd.log
# No cgroups: they are often unavailable inside a container.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
MailProg=/bin/true
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
SlurmdTimeout=60
$node NodeAddr=127.0.0.1
PartitionName=$partition Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
export SLURM_CONF=$work/slurm.conf # read by sinfo, sbatch (submitit), srun and scancel

# ------------------------------------------------------------------ daemons
slurmctld -D -c -f "$SLURM_CONF" >"$work/slurmctld.out" 2>&1 &
pids+=($!)
slurmd -D -f "$SLURM_CONF" >"$work/slurmd.out" 2>&1 &
pids+=($!)
state=""
for _ in $(seq 60); do
  state=$(sinfo -h -N -p "$partition" -o %T 2>/dev/null | head -n 1 || true)
  [[ $state == idle ]] && break
  for pid in "${pids[@]}"; do
    kill -0 "$pid" 2>/dev/null || fail "a SLURM daemon exited: $(tail -n 1 "$work"/slurm*.out "$work"/slurm*.log 2>/dev/null | grep -v '^==' | grep . | tail -n 1)"
  done
  sleep 1
done
[[ $state == idle ]] || fail "node $host is not idle after 60 s (sinfo says '${state:-nothing}'); see $work/slurmd.log"

# ------------------------------------------------------------------ the sweep
sweep=$work/sweep
started=$SECONDS
cd "$root"
if ! uv run train.py -m hydra/launcher=slurm "hydra.launcher.partition=$partition" \
  hydra.launcher.gpus_per_node=0 hydra.launcher.cpus_per_task=1 hydra.launcher.mem_gb=1 \
  hydra.launcher.timeout_min=10 "hydra.sweep.dir=$sweep" "paths.log_dir=$work/logs" \
  trainer.enable_progress_bar=false trainer.max_epochs=2 model=linear,quadratic "$@" \
  >"$work/sweep.out" 2>&1; then
  tail -n 5 "$work/sweep.out" >&2
  fail "the SLURM sweep failed; its output: $work/sweep.out, SLURM's logs: $sweep/.submitit/"
fi
took=$((SECONDS - started))

# ------------------------------------------------------------------ check what it wrote
uv run --no-sync python - "$sweep" "$took" <<'EOF' || exit 1
import csv, json, sys
from pathlib import Path

sweep, took = Path(sys.argv[1]), sys.argv[2]
jobs = sorted(p for p in sweep.iterdir() if (p / ".hydra").is_dir())
problems = []
models = set()
for job in jobs:
    summary = job / "summary.json"
    status = json.loads(summary.read_text())["status"] if summary.exists() else "no summary.json"
    if status != "finished":
        problems.append(f"{job.name}: {status}")
    models.update(m for m in ("linear", "quadratic") if f"model={m}" in job.name)
if len(jobs) != 2 or models != {"linear", "quadratic"}:
    problems.append(f"expected the 2 jobs model=linear,quadratic, found {[j.name for j in jobs]}")
table = sweep / "summary.csv"
rows = list(csv.DictReader(table.open())) if table.exists() else []
listed = {r["job"] for r in rows if r["status"] == "finished"}
if listed != {j.name for j in jobs}:
    problems.append(f"summary.csv lists {sorted(listed) or 'nothing'} as finished")
# submitit's folder per SLURM job: <array job>_<task>, with the log of the job's own environment.
tasks = sorted(p for p in (sweep / ".submitit").glob("*_*") if p.is_dir())
ran = [t.name for t in tasks if "JobEnvironment(job_id=" in "".join(f.read_text() for f in t.glob("*_log.*"))]
if len(ran) != 2:
    problems.append(f"expected 2 SLURM jobs in {sweep / '.submitit'}, found {ran}")
if problems:
    print("error: slurm sweep: " + "; ".join(problems), file=sys.stderr)
    sys.exit(1)
print(f"ok: slurm sweep: SLURM jobs {' and '.join(ran)} finished in {took} s; summary.csv lists both")
EOF
