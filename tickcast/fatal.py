"""The one way a tickcast process ends on an error the user has to fix: one line
``tickcast: <message>`` on stderr and an exit status, never a traceback.

Exit statuses: 2 for a bad setting or input (:class:`tickcast.config.ConfigError`),
1 for something unreachable or failed (brokers, network, stores).

``now=True`` is for code running inside a Bytewax worker (sources, sinks): Bytewax
turns an exception raised there into a Rust panic with a long trace, so the process
flushes its output and ends at once (``os._exit``) instead of raising ``SystemExit``.

Imports nothing from tickcast: any module may use it.

>>> try:
...     fatal(ValueError("TICKCAST_X='y' is not valid: expected z"), 2)
... except SystemExit as e:
...     e.code
2
"""

from __future__ import annotations

import os
import sys
from typing import NoReturn


def fatal(error: BaseException | str, code: int = 1, *, now: bool = False) -> NoReturn:
    """Print ``tickcast: <error>`` (one line) to stderr and end the process with ``code``:
    by raising ``SystemExit(code)``, or with ``now``, by ``os._exit(code)`` after
    flushing stdout and stderr."""
    print(f"tickcast: {error}", file=sys.stderr, flush=True)
    if now:
        sys.stdout.flush()
        os._exit(code)
    raise SystemExit(code) from None
