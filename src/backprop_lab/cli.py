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


def check_choices(argv: list[str] | None = None) -> None:
    """An unknown option of a config group on the command line (``scheduler=foo``, also inside a
    sweep: ``-m scheduler=step,foo``) ends in one line naming the options, exit status 1, before
    Hydra composes the config (Hydra's own report of it is a paragraph with its search path).

    The overrides are parsed with Hydra's OverridesParser; a command line with other flags than
    ``-m`` (``--cfg``, ``-cp``, ...), or that does not parse, is left to Hydra."""
    args = sys.argv[1:] if argv is None else argv
    if any(a.startswith("-") and a not in ("-m", "--multirun") for a in args):
        return
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    from backprop_lab.config import CONFIG_DIR

    try:
        overrides = OverridesParser.create().parse_overrides([a for a in args if "=" in a])
    except HydraException:
        return
    for override in overrides:
        group = CONFIG_DIR / override.key_or_group
        if override.is_delete() or override.key_or_group.startswith("hydra") or not group.is_dir():
            continue
        if override.is_sweep_override():
            values = list(override.sweep_string_iterator())
            if override.key_or_group == "debug" and len(values) > 1:
                # Hydra makes the sweep's own dir without the swept value: the jobs would go to
                # logs/debug/multiruns/, the sweep's summary to logs/multiruns/.
                print(
                    f"error: debug={','.join(values)}: one debug mode per sweep (each moves the "
                    "sweep's dir under logs/debug/); run a sweep for each",
                    file=sys.stderr,
                )
                sys.exit(1)
        else:
            values = [override.get_value_element_as_str()]
        for value in values:
            if not (group / f"{value}.yaml").is_file():
                options = sorted(
                    p.relative_to(group).with_suffix("").as_posix() for p in group.rglob("*.yaml")
                )
                print(
                    f"error: {override.key_or_group}={value} is not an option of "
                    f"{override.key_or_group}; choose one of {', '.join(options)}",
                    file=sys.stderr,
                )
                sys.exit(1)


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
