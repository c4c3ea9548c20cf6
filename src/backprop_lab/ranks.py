"""Which process of a data-parallel run speaks for it.

Lightning's DDP launcher starts a process per rank and sets ``LOCAL_RANK`` and ``NODE_RANK`` in
the ones it starts; the process a user started has neither, or both at 0. That one alone writes
the run's files and prints its errors: every rank meets the same error, and one says so.
"""

from __future__ import annotations

import os


def is_rank_zero() -> bool:
    """Whether this process is not one a data-parallel launcher started for another rank."""
    return all(os.environ.get(name, "0") == "0" for name in ("LOCAL_RANK", "NODE_RANK"))
