"""Errors of the stores, shared by the offline and online backends."""

from __future__ import annotations

import re

_CREDENTIALS = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)([^:/@\s]*):([^@\s]*)@")


def redact(text: str) -> str:
    """``scheme://user:password@host`` -> ``scheme://user:***@host`` anywhere in ``text``
    (connection URLs in error messages: ClickHouse, Redis, S3 endpoints).

    >>> redact("redis://:hunter2@redis:6379/0 down; http://api:s3cr3t@ch:8123/db too")
    'redis://:***@redis:6379/0 down; http://api:***@ch:8123/db too'
    """
    return _CREDENTIALS.sub(lambda m: f"{m.group(1)}{m.group(2)}:***@", str(text))


class StoreError(RuntimeError):
    """A store cannot do what was asked (bad table, bad rows, bad URL); the message says why."""


class StoreUnavailable(StoreError):
    """A store did not answer: down, unreachable, or slower than its (short) timeout.

    Callers turn it into a 503 or a retry; it is never a hang."""
