"""What a ``tickcast`` command is, and the helpers several commands share.

A command is one :class:`Command`: its name, its handler and a function that adds its
arguments. :data:`tickcast.cli.COMMANDS` is the one table of them; a module that owns a
command (``tickcast.up``, ``tickcast.convert``, ``tickcast.live.commands``) defines its
``Command`` next to the handler. This module imports nothing else from tickcast at
import time, so any command module can use it without an import circle.

>>> import argparse
>>> hello = Command("hello", lambda args: print("hi", args.name) or 0,
...                 lambda p: p.add_argument("name"), help="say hi")
>>> parser = argparse.ArgumentParser(prog="t")
>>> hello.add_to(parser.add_subparsers())
>>> args = parser.parse_args(["hello", "Ada"])
>>> args.func(args)
hi Ada
0
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

EPILOG = """Configuration comes from TICKCAST_* environment variables (see README);
flags of a command override them for that command."""


class Command:
    """``tickcast <name>``: ``handler(args)`` returns the exit code; ``setup(parser)``
    adds the arguments; the keywords are those of ``add_parser`` (help, description,
    epilog, formatter_class)."""

    __slots__ = ("handler", "name", "parser", "setup")

    def __init__(self, name: str, handler: Callable[[argparse.Namespace], int],
                 setup: Callable[[argparse.ArgumentParser], Any], **parser: Any) -> None:
        self.name, self.handler, self.setup, self.parser = name, handler, setup, parser

    def add_to(self, subparsers: Any) -> None:
        """Add this command to an ``add_subparsers()`` object."""
        p = subparsers.add_parser(self.name, **self.parser)
        self.setup(p)
        p.set_defaults(func=self.handler)


def parse_time(text: str) -> int:
    """RFC 3339 / ISO date or unix seconds -> µs since the epoch (UTC); a bad value
    exits with one line.

    >>> parse_time("2026-01-01T00:00:00Z"), parse_time("1767225600.5")
    (1767225600000000, 1767225600500000)
    """
    from datetime import UTC, datetime

    from tickcast.schema import dt_to_us

    try:
        return int(round(float(text) * 1_000_000))
    except ValueError:
        pass
    try:
        ts = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise SystemExit(f"tickcast: {text!r} is not a time: use RFC 3339 (2026-01-01T00:00:00Z), "
                         "a date (2026-01-01) or unix seconds") from None
    return dt_to_us(ts if ts.tzinfo else ts.replace(tzinfo=UTC))


def flow_command(workers: int = 1) -> list[str]:
    """The command line of the feature flow (``python -m bytewax.run dataflows.features``)."""
    cmd = [sys.executable, "-m", "bytewax.run", "dataflows.features"]
    if workers > 1:
        cmd += ["-w", str(workers)]
    return cmd
