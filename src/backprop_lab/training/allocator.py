"""Host memory for large CPU batches: keep what a step frees for the next step (glibc only).

A training step on the CPU allocates a few tensors the size of its batch (the prediction, the
loss's and autograd's temporaries) and frees them at its end. glibc's malloc serves blocks above
its mmap threshold (adaptive from 128 KiB) with fresh pages from the OS, and gives freed memory at
the top of its heap back to the OS once more than its trim threshold (twice the mmap threshold)
is free. Either way, each step's tensors start as untouched pages that the kernel must fault in
and zero: on a batch of 2^18 rows, ~30% of a step (benchmarks/README.md measures it).

:func:`keep_freed_memory` sets the two thresholds so that blocks up to 32 MiB (glibc's most) come
from the heap and up to ``megabytes`` of freed memory stays with the process: the next step
reuses it. Memory in use is unchanged; what the process holds between steps can be up to
``megabytes`` more.
PyTorch's CPU tuning guide makes the same point for swapping in jemalloc or tcmalloc; a process
that runs with one of those (``LD_PRELOAD``) is left as it is, as is any other C library.
"""

from __future__ import annotations

import ctypes
import logging
import os
import platform

log = logging.getLogger(__name__)

# mallopt parameters, from glibc's malloc.h.
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
#: glibc's largest mmap threshold on 64-bit systems (HEAP_MAX_SIZE / 2).
MMAP_THRESHOLD_MAX = 32 * 2**20


def keep_freed_memory(megabytes: int) -> bool:
    """Keep up to ``megabytes`` MiB of freed memory for reuse; True if glibc took the setting.

    0 (or less) changes nothing. Applies to the whole process from this call on.
    """
    if megabytes <= 0 or platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    if any(name in os.environ.get("LD_PRELOAD", "") for name in ("jemalloc", "tcmalloc")):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # The mmap threshold first: setting the trim threshold alone turns off glibc's adaptive mmap
    # threshold, and every block above 128 KiB would then be mapped afresh.
    ok = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX) == 1
    ok = ok and mallopt(M_TRIM_THRESHOLD, min(megabytes * 2**20, 2**31 - 1)) == 1
    if not ok:
        log.debug("glibc did not take the malloc thresholds; its defaults stay")
    return ok
