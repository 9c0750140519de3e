"""The one batching base of every sink partition: buffering and when to write live
here, each sink only writes a batch (the shape of Quix Streams' ``BatchingSink``).

A subclass implements :meth:`BatchingPartition.write` (hand a batch to the store or
broker) and, where the store acknowledges later, :meth:`~BatchingPartition.sync`
(wait until everything written is durable) and :meth:`~BatchingPartition.release`
(close connections). The base

* buffers items and writes them as one batch once they hold ``max_rows`` rows
  (:meth:`~BatchingPartition.rows` counts an item; ``max_rows=0``: every Bytewax
  batch is written at once) or the oldest has waited ``max_delay_s``;
* writes and syncs everything in ``snapshot()`` — Bytewax calls it at the end of
  every epoch, *before* the epoch's recovery state is committed, so a crash can lose
  only items whose input will be replayed — and in ``close()``.

It mixes into either Bytewax partition kind (``StatefulSinkPartition`` for a
``FixedPartitionedSink``, ``StatelessSinkPartition`` for a ``DynamicSink``: list it
first). A stateless partition is never snapshotted, so it should write at once
(``max_rows=0``) and keep nothing buffered.

>>> class Printer(BatchingPartition[int]):
...     def write(self, batch: list[int]) -> None:
...         print("write", batch)
>>> p = Printer(max_rows=3, max_delay_s=60)
>>> p.write_batch([1, 2]); p.write_batch([3, 4])
write [1, 2, 3, 4]
>>> p.write_batch([5]); p.snapshot()
write [5]
"""

from __future__ import annotations

import time
from typing import Generic, TypeVar

X = TypeVar("X")


class BatchingPartition(Generic[X]):
    """Buffer items; :meth:`write` them in batches (see the module docstring)."""

    def __init__(self, max_rows: float = 0, max_delay_s: float = 0.0) -> None:
        self.max_rows = max_rows
        self.max_delay_s = max_delay_s
        self._buf: list[X] = []
        self._rows = 0
        self._oldest = 0.0  # monotonic time the oldest buffered item arrived

    # -- what a sink implements ---------------------------------------------------------------
    def write(self, batch: list[X]) -> None:
        """Hand ``batch`` (never empty) to the store; raise to stop the flow."""
        raise NotImplementedError

    def rows(self, item: X) -> int:
        """How many rows ``item`` counts towards ``max_rows`` (default 1)."""
        return 1

    def sync(self) -> None:
        """Wait until everything :meth:`write` handed over is durable (default: it is)."""

    def release(self) -> None:
        """Close what the partition holds, after the last write (default: nothing)."""

    # -- what Bytewax calls -------------------------------------------------------------------
    def write_batch(self, items: list[X]) -> None:
        if not items:
            return
        if not self._buf:
            self._oldest = time.monotonic()
        self._buf.extend(items)
        self._rows += sum(self.rows(it) for it in items)
        if self._rows >= self.max_rows or time.monotonic() - self._oldest >= self.max_delay_s:
            self._write_buffered()

    def _write_buffered(self) -> None:
        if self._buf:
            self.write(self._buf)  # if it raises, the flow stops: nothing is acknowledged
            self._buf, self._rows = [], 0

    def flush(self) -> None:
        """Write what is buffered and wait until it is durable."""
        self._write_buffered()
        self.sync()

    def snapshot(self) -> None:
        self.flush()  # before the epoch is committed: a crash cannot lose these items
        return None

    def close(self) -> None:
        self.flush()
        self.release()
