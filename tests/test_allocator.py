"""Host memory a CPU step frees is kept for the next step (glibc), rather than faulted in again."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from backprop_lab.training import allocator

# A step's worth of allocations: two temporaries of 1 MiB (2^18 float32 rows) a step, 50 steps.
STEPS = """
import resource, sys, torch
from backprop_lab.training import allocator
if sys.argv[1] == "keep":
    assert allocator.keep_freed_memory(256)
x = torch.ones(2**18, 1)
for _ in range(5):
    (x * 2 + 1).sum()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(50):
    (x * 2 + 1).sum()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""

glibc = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="needs glibc"
)


def page_faults(mode: str) -> int:
    # glibc's own thresholds adapt to the heap's layout, which imports change. Fixed at 128 KiB
    # (its starting value), every 1 MiB block is mapped afresh and faulted in at each step: the
    # case the setting is for, every time.
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"}
    done = subprocess.run(
        [sys.executable, "-c", STEPS, mode], capture_output=True, text=True, check=True, env=env
    )
    return int(done.stdout.split()[-1])


@glibc
def test_freed_memory_is_reused_without_page_faults():
    # Handed back, each 1 MiB block has its 256 pages faulted in again (~25,000 faults here);
    # kept, the blocks are reused: at most the heap's first growth faults.
    default, kept = page_faults("default"), page_faults("keep")
    assert default > 50 * 256, default
    assert kept < 4 * 256, kept


def test_zero_leaves_the_c_library_as_it_is():
    assert allocator.keep_freed_memory(0) is False


@glibc
def test_another_allocator_is_left_alone(monkeypatch):
    monkeypatch.setenv("LD_PRELOAD", "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2")
    assert allocator.keep_freed_memory(256) is False


@pytest.mark.parametrize("megabytes", [64, 0])
def test_a_run_applies_its_setting(run, monkeypatch, megabytes):
    asked = []
    monkeypatch.setattr(allocator, "keep_freed_memory", asked.append)
    run("model=quadratic", "trainer.max_epochs=1", f"keep_freed_memory_mb={megabytes}")
    assert asked == [megabytes]
