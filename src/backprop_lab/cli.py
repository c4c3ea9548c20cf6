"""What the entry points share: a user's mistake ends in one or two lines, not a traceback.

Each entry point imports this module first: from then on a Ctrl-C, even one that comes while
Hydra, torch or Lightning are still being imported, ends the process with one line and exit
status 130. Once a task has imported what it runs (``imports_done``), Ctrl-C is a
KeyboardInterrupt again, which a run turns into a checkpoint and the same line.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from backprop_lab import console
from backprop_lab.errors import BackpropLabError
from backprop_lab.ranks import is_rank_zero

if TYPE_CHECKING:
    from omegaconf import DictConfig

INTERRUPTED = "error: stopped by SIGINT (Ctrl-C)"


def _stop_at_once(signum: int, frame: Any) -> None:
    print(INTERRUPTED, file=sys.stderr)
    sys.stderr.flush()
    os._exit(130)  # nothing has started yet that would need cleaning up


# Until a task starts, Ctrl-C stops the process here and now: a KeyboardInterrupt raised inside
# an import can be caught by the library being imported, which then runs on half-imported.
signal.signal(signal.SIGINT, _stop_at_once)


def imports_done() -> None:
    """Called by a task once it has imported what it runs: from here Ctrl-C raises
    KeyboardInterrupt again, which the task turns into its own clean stop (a checkpoint, a
    summary, the search's trials.csv) and the same one line."""
    signal.signal(signal.SIGINT, signal.default_int_handler)


def run(task: Callable[[DictConfig], Any], cfg: DictConfig, *, in_sweep: bool = False) -> None:
    """Run ``task(cfg)``; a BackpropLabError prints ``error: ...`` and exits with its status.
    Under train.py's job logging the line goes to the run's train.log as well (console.say).

    In a sweep the job returns instead (its summary.json holds the error, and the sweep's summary
    reports it), so the other jobs still run. HYDRA_FULL_ERROR=1 shows the traceback.
    """
    try:
        task(cfg)
    except BackpropLabError as error:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        if is_rank_zero():  # every rank meets the error; one prints it
            detail = f"\n  {error.detail}" if error.detail else ""
            console.say(f"{error}{detail}", logging.ERROR)
        if not in_sweep:
            sys.exit(error.exit_code)
    except KeyboardInterrupt:
        console.say(INTERRUPTED.removeprefix("error: "), logging.ERROR)
        sys.exit(130)
    except Exception as error:
        if not in_sweep:
            raise  # not a mistake a user made: a bug, with its traceback
        console.say(f"job failed: {type(error).__name__}: {error}", logging.ERROR)
