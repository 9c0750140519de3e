"""Errors of the stores, shared by the offline and online backends."""

from __future__ import annotations


class StoreError(RuntimeError):
    """A store cannot do what was asked (bad table, bad rows, bad URL); the message says why."""


class StoreUnavailable(StoreError):
    """A store did not answer: down, unreachable, or slower than its (short) timeout.

    Callers turn it into a 503 or a retry; it is never a hang."""
