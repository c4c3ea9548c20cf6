"""What the entry points share: a user's mistake ends in one or two lines, not a traceback."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

from omegaconf import DictConfig

from backprop_lab.errors import BackpropLabError


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
        print(f"error: {error}", file=sys.stderr)
        if error.detail:
            print(f"  {error.detail}", file=sys.stderr)
        if not in_sweep:
            sys.exit(error.exit_code)
    except KeyboardInterrupt:
        print("error: stopped by SIGINT (Ctrl-C)", file=sys.stderr)
        sys.exit(130)
    except Exception as error:
        if not in_sweep:
            raise  # not a mistake a user made: a bug, with its traceback
        print(f"error: job failed: {type(error).__name__}: {error}", file=sys.stderr)
