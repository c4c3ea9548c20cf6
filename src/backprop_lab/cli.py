"""What the entry points share: a user's mistake ends in one or two lines, not a traceback.

Each entry point imports this module first: from then on a Ctrl-C, even one that comes while
Hydra, torch or Lightning are still being imported, ends the process with one line and exit
status 130.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from backprop_lab.errors import BackpropLabError
from backprop_lab.ranks import is_rank_zero

if TYPE_CHECKING:
    from omegaconf import DictConfig

INTERRUPTED = "error: stopped by SIGINT (Ctrl-C)"


def _one_line_for_ctrl_c(kind: type[BaseException], value: BaseException, traceback) -> None:
    if issubclass(kind, KeyboardInterrupt):
        print(INTERRUPTED, file=sys.stderr)
        sys.stderr.flush()
        os._exit(130)  # nothing has started yet that would need cleaning up
    sys.__excepthook__(kind, value, traceback)


sys.excepthook = _one_line_for_ctrl_c


def run(task: Callable[[DictConfig], Any], cfg: DictConfig, *, in_sweep: bool = False) -> None:
    """Run ``task(cfg)``; a BackpropLabError prints ``error: ...`` and exits with its status.

    In a sweep the job returns instead (its summary.json holds the error, and the sweep's summary
    reports it), so the other jobs still run. HYDRA_FULL_ERROR=1 shows the traceback.
    """
    try:
        task(cfg)
    except BackpropLabError as error:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        if is_rank_zero():  # every rank meets the error; one prints it
            print(f"error: {error}", file=sys.stderr)
            if error.detail:
                print(f"  {error.detail}", file=sys.stderr)
        if not in_sweep:
            sys.exit(error.exit_code)
    except KeyboardInterrupt:
        print(INTERRUPTED, file=sys.stderr)
        sys.exit(130)
    except Exception as error:
        if not in_sweep:
            raise  # not a mistake a user made: a bug, with its traceback
        print(f"error: job failed: {type(error).__name__}: {error}", file=sys.stderr)
