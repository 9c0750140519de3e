"""A live source's client counters -> the offline store's ``ingest_stats`` table.

:class:`IngestStatsRecorder` turns the cumulative counters of a
:class:`~tickcast.live.kraken_client.ClientStats` (connects, reconnects, gaps, filled,
unfilled, duplicates, malformed) into one row per interval of **deltas**, so
``sum()`` over any span of rows is exact and rows of several sessions add up.

* :meth:`~IngestStatsRecorder.poll` is meant for the hot path (a Bytewax source's
  ``next_batch``): one ``time.monotonic()`` comparison, and once per interval a
  subtraction of seven integers and an append to a list. It never touches the store.
* A daemon **writer thread** owns the store: it opens it (and ``ensure_schema``) on
  the first row and inserts whatever rows are pending, in one part. An insert that
  fails (ClickHouse down, disk full) is logged and retried with backoff, rows kept in
  order (at most :data:`MAX_PENDING`; beyond that the oldest are dropped with an error
  in the log, never silently).
* :meth:`~IngestStatsRecorder.close` takes the final row (call it after the client
  stopped, so nothing is counted after it), waits for the writer to store everything
  (bounded by ``timeout_s``) and logs, with their content, any rows it could not write.

**What can be lost.** Nothing on a clean stop (the final row is written at close).
A crash (``kill -9``, SIGTERM to a Bytewax process, a power cut) loses the counts of
the current, unfinished interval — at most ``interval_s`` seconds of counters — plus
rows the writer had not stored yet, which is none unless the store was failing.

>>> from tickcast.live.kraken_client import ClientStats
>>> st = ClientStats(connects=1)
>>> rec = IngestStatsRecorder("", "kraken", st.as_dict, 10.0, session="s1", write=False)
>>> st.reconnects, st.connects = 2, 3
>>> row = rec.take()
>>> row["connects"], row["reconnects"], row["gaps"], row["session"]
(3, 2, 0, 's1')
>>> st.filled = 30
>>> row = rec.take()
>>> row["connects"], row["filled"]
(0, 30)
"""

from __future__ import annotations

import contextlib
import logging
import re
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import orjson

from tickcast.stores.tables import INGEST_COUNTERS

log = logging.getLogger("tickcast.live")

TABLE = "ingest_stats"
MAX_PENDING = 10_000  # rows kept while the store fails (~28 h at one row per 10 s)
_RETRY_MAX_S = 30.0


def new_session() -> str:
    """A random session id: one per source-partition start."""
    return secrets.token_hex(8)


class IngestStatsRecorder:
    """Rows of counter deltas every ``interval_s`` seconds, written by a background thread.

    ``counters`` returns the client's cumulative counters (a mapping with at least the
    names of :data:`~tickcast.stores.tables.INGEST_COUNTERS`); it is read on the
    caller's thread only. ``url`` is the offline store (``chdb:///…`` or
    ``http(s)://…``). ``write=False`` keeps rows in memory only (doctests)."""

    def __init__(self, url: str, source: str, counters: Callable[[], Mapping[str, int]], interval_s: float,
                 *, session: str | None = None, write: bool = True) -> None:
        if not interval_s > 0:
            raise ValueError(f"interval_s must be > 0, not {interval_s!r}")
        self.url = url
        self.source = source
        self.session = session or new_session()
        self.interval_s = float(interval_s)
        self._counters = counters
        self._prev = dict.fromkeys(INGEST_COUNTERS, 0)
        self._last_mono = time.monotonic()
        self._due = self._last_mono + self.interval_s
        self._last_ts = 0
        self._closed = False
        self.rows_written = 0  # for tests and logs
        self.rows_dropped = 0
        self._cv = threading.Condition()
        self._pending: list[dict[str, Any]] = []
        self._closing = False
        self._deadline = float("inf")
        self._thread: threading.Thread | None = None
        if write:
            self._thread = threading.Thread(target=self._write_loop, name="tickcast-ingest-stats", daemon=True)
            self._thread.start()

    # -- the caller's (worker's) thread ------------------------------------------------------
    def poll(self) -> None:
        """Record a row if the interval has passed (cheap; call it as often as you like)."""
        if time.monotonic() >= self._due and not self._closed:
            self._enqueue(self.take())

    def take(self) -> dict[str, Any]:
        """The row for the interval since the previous one (counters as deltas)."""
        cur = self._counters()
        mono = time.monotonic()
        ts = max(time.time_ns() // 1000, self._last_ts + 1)  # the key stays unique in a session
        row: dict[str, Any] = {"source": self.source, "session": self.session, "ts_us": ts,
                               "interval_seconds": mono - self._last_mono}
        for name in INGEST_COUNTERS:
            now = int(cur[name])
            row[name] = max(0, now - self._prev[name])  # the client's counters only grow
            self._prev[name] = now
        self._last_mono, self._last_ts = mono, ts
        # the next row follows the schedule (rows do not drift late by the polling delay);
        # after a stall longer than an interval it restarts from now
        nxt = self._due + self.interval_s
        self._due = nxt if nxt > mono else mono + self.interval_s
        return row

    def close(self, timeout_s: float = 10.0) -> None:
        """Take the final row and wait (at most ``timeout_s``) until every row is stored.
        Call it once the client is stopped. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._thread is None:
            return
        self._enqueue(self.take())
        with self._cv:
            self._closing = True
            self._deadline = time.monotonic() + timeout_s
            self._cv.notify_all()
        self._thread.join(timeout_s + 1.0)
        with self._cv:
            left = list(self._pending)
            self._pending.clear()
        if left:
            self.rows_dropped += len(left)
            log.error("%s: %d row(s) could not be written to %s and are lost: %s", TABLE, len(left),
                      _redact(self.url), orjson.dumps(left).decode())

    def _enqueue(self, row: dict[str, Any]) -> None:
        if self._thread is None:
            return
        with self._cv:
            self._pending.append(row)
            self._bound()
            self._cv.notify_all()

    def _bound(self) -> None:  # under self._cv
        over = len(self._pending) - MAX_PENDING
        if over > 0:
            lost = self._pending[:over]
            del self._pending[:over]
            self.rows_dropped += over
            log.error("%s: the store is failing; dropped the %d oldest pending row(s): %s", TABLE, over,
                      orjson.dumps(lost).decode())

    # -- the writer thread ------------------------------------------------------------------------
    def _write_loop(self) -> None:
        from tickcast.stores.offline import open_offline
        from tickcast.stores.tables import rows_to_arrow

        store: Any = None
        failures = 0
        retry_at = 0.0
        try:
            while True:
                with self._cv:
                    while True:
                        now = time.monotonic()
                        if self._closing and (not self._pending or now >= self._deadline):
                            return
                        if self._pending and now >= retry_at:
                            break
                        wait = None if not self._pending else retry_at - now
                        if self._closing:
                            wait = min(wait if wait is not None else float("inf"), self._deadline - now)
                        self._cv.wait(wait)
                    batch, self._pending = self._pending, []
                try:
                    if store is None:
                        store = open_offline(self.url)
                        store.ensure_schema()
                    store.insert(TABLE, rows_to_arrow(TABLE, batch))
                except Exception as e:  # noqa: BLE001 - any store failure: keep the rows, retry
                    failures += 1
                    delay = min(_RETRY_MAX_S, 0.5 * 2 ** min(failures, 10))
                    log.warning("%s: writing %d row(s) to %s failed (%s); retrying in %.1f s", TABLE,
                                len(batch), _redact(self.url), str(e).splitlines()[0][:200] if str(e) else
                                type(e).__name__, delay)
                    if store is not None:
                        with contextlib.suppress(Exception):
                            store.close()
                        store = None
                    retry_at = time.monotonic() + delay
                    with self._cv:
                        self._pending[:0] = batch  # back in front, in order
                        self._bound()
                    continue
                self.rows_written += len(batch)
                failures = 0
                retry_at = 0.0
        finally:
            if store is not None:
                with contextlib.suppress(Exception):
                    store.close()


def _redact(url: str) -> str:
    return re.sub(r"//([^:/@]+):[^@/]*@", r"//\1:***@", url)
