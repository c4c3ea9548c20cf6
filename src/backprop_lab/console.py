"""What a run shows on the console, and how: one style for the console, train.log for the record.

Under train.py, Hydra's job logging (``conf/hydra/default.yaml``) gives every log record two
destinations: the console, in this project's short style (a message as it is, ``warning: ...``
and ``error: ...`` on stderr), and the run's ``train.log``, with Hydra's timestamps. What the
project prints for the user (the report, an error) goes through :func:`say`, so train.log holds
what the console showed. Outside that logging (a test or a notebook calling ``train``, predict.py
and explain.py, which turn Hydra's logging off), :func:`say` prints the same text.
"""

from __future__ import annotations

import logging
import sys

#: The logger of what the project tells its user; Hydra's root handlers print and file it.
log = logging.getLogger("backprop_lab")


def _prefix(level: int) -> str:
    return "error: " if level >= logging.ERROR else "warning: " if level >= logging.WARNING else ""


class ConsoleFormatter(logging.Formatter):
    """A record as the console shows it: ``warning: <message>``, ``error: <message>``, or the
    message alone (the report, a note). No timestamp, level or module name: train.log has those."""

    def __init__(self, fmt: str = "%(message)s", **kwargs) -> None:
        super().__init__(fmt, **kwargs)

    def format(self, record: logging.LogRecord) -> str:
        return _prefix(record.levelno) + super().format(record)


class Below(logging.Filter):
    """Passes the records under ``level``: the console's stdout handler leaves warnings and errors
    to the stderr one."""

    def __init__(self, level: str | int = "WARNING") -> None:
        super().__init__()
        self.level = logging.getLevelName(level) if isinstance(level, str) else level

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < self.level


def configured() -> bool:
    """Whether train.py's job logging prints the console (and so writes train.log too)."""
    return any(isinstance(h.formatter, ConsoleFormatter) for h in logging.getLogger().handlers)


def say(text: str, level: int = logging.INFO) -> None:
    """Show ``text`` to the user, ``error: ``/``warning: `` first at those levels (stderr), and,
    under train.py, write it to the run's train.log as well."""
    if configured():
        log.log(level, text)
        return
    stream = sys.stderr if level >= logging.WARNING else sys.stdout
    print(_prefix(level) + text, file=stream)
    stream.flush()


def lightning_through_root() -> None:
    """`import lightning` adds a console handler of its own; under Hydra, whose root handler already
    prints (and, under train.py, writes train.log), that handler makes every Lightning message
    appear twice. Cleared, Lightning's records reach the root's handlers alone, at its level."""
    if logging.getLogger().handlers:
        logging.getLogger("lightning").handlers.clear()
