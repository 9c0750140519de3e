"""The one way a tickcast process ends on an error the user has to fix: one line
``tickcast: <message>`` on stderr and an exit status, never a traceback.

Exit statuses: 2 for a bad setting or input (:class:`tickcast.config.ConfigError`),
1 for something unreachable or failed (brokers, network, stores).

``now=True`` is for code running inside a Bytewax worker (sources, sinks): Bytewax
turns an exception raised there into a Rust panic with a long trace, so the process
flushes its output and ends at once (``os._exit``) instead of raising ``SystemExit``.

Imports nothing from tickcast: any module may use it.

>>> import contextlib, io
>>> with contextlib.redirect_stderr(io.StringIO()) as err:
...     try:
...         fatal(ValueError("TICKCAST_X='y' is not valid: expected z"), 2)
...     except SystemExit as e:
...         exit_status, message = e.code, str(e)
>>> exit_status, message == err.getvalue().strip()
(2, True)
"""

from __future__ import annotations

import os
import sys
from typing import NoReturn


class Fatal(SystemExit):
    """The ``SystemExit`` :func:`fatal` raises: exit status ``code``; ``str()`` is the
    line already printed (so a caller or a test can read what the user saw)."""

    def __init__(self, line: str, code: int) -> None:
        super().__init__(line)
        self.code = code  # what the interpreter exits with (an int: it prints nothing more)


def fatal(error: BaseException | str, code: int = 1, *, now: bool = False) -> NoReturn:
    """Print ``tickcast: <error>`` (one line) to stderr and end the process with ``code``:
    by raising :class:`Fatal` (a ``SystemExit``), or with ``now``, by ``os._exit(code)``
    after flushing stdout and stderr."""
    line = f"tickcast: {error}"
    print(line, file=sys.stderr, flush=True)
    if now:
        sys.stdout.flush()
        os._exit(code)
    raise Fatal(line, code)
