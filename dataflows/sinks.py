"""Bytewax sinks for the offline (ClickHouse) and online (Redis) stores.

Both are idempotent, which turns Bytewax's at-least-once recovery into exactly-once
results: the offline store keeps one row per key (newest wins), and the online store
only accepts a feature row that is not older than the one it holds.

The offline sink buffers rows to make large batched inserts, and flushes the buffer
in ``snapshot()`` — Bytewax calls it at the end of every epoch, *before* the epoch's
recovery state is committed — so a crash can lose only rows whose input will be
replayed.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from bytewax.outputs import (
    DynamicSink,
    FixedPartitionedSink,
    StatefulSinkPartition,
    StatelessSinkPartition,
)

from tickcast.config import Settings
from tickcast.pipeline import StepOutput
from tickcast.stores.offline import open_offline
from tickcast.stores.tables import (
    candles_to_arrow,
    dead_letters_to_arrow,
    features_to_arrow,
    rows_to_arrow,
)

log = logging.getLogger(__name__)


class _OfflinePartition(StatefulSinkPartition[StepOutput, None]):
    def __init__(self, url: str, max_rows: int, max_delay_s: float) -> None:
        self._store = open_offline(url)
        self._store.ensure_schema()
        self._buf = StepOutput()
        self._rows = 0
        self._max_rows = max_rows
        self._max_delay = max_delay_s
        self._oldest = 0.0

    def write_batch(self, items: list[StepOutput]) -> None:
        if not self._rows:
            self._oldest = time.monotonic()
        for it in items:
            self._buf.extend(it)
            self._rows += it.rows
        if self._rows >= self._max_rows or time.monotonic() - self._oldest >= self._max_delay:
            self.flush()

    def flush(self) -> None:
        b = self._buf
        if b.candles:
            self._store.insert("candles", candles_to_arrow(b.candles))
        if b.features:
            self._store.insert("features", features_to_arrow(b.features))
        if b.dead_letters:
            self._store.insert("dead_letters", dead_letters_to_arrow(b.dead_letters))
        if b.predictions:
            self._store.insert("predictions", rows_to_arrow("predictions", b.predictions))
        if b.metrics:
            self._store.insert("model_metrics", rows_to_arrow("model_metrics", b.metrics))
        if b.drift_events:
            self._store.insert("drift_events", rows_to_arrow("drift_events", b.drift_events))
        self._buf = StepOutput()
        self._rows = 0

    def snapshot(self) -> None:
        self.flush()
        return None

    def close(self) -> None:
        self.flush()
        self._store.close()


class OfflineSink(FixedPartitionedSink[StepOutput, None]):
    """Writes candles, features and dead letters to the offline store (one partition).

    ``max_delay_s`` bounds how long a row waits in the buffer while items keep
    arriving (live: 0 = write every batch); epochs and EOF always flush."""

    def __init__(self, url: str, max_rows: int = 50_000, max_delay_s: float = 1.0) -> None:
        self.url = url
        self.max_rows = max_rows
        self.max_delay_s = max_delay_s

    def list_parts(self) -> list[str]:
        return ["offline"]

    def part_fn(self, item_key: str) -> int:
        return 0

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> _OfflinePartition:
        return _OfflinePartition(self.url, self.max_rows, self.max_delay_s)


class _OnlinePartition(StatelessSinkPartition[StepOutput]):
    def __init__(self, settings: Settings) -> None:
        from tickcast.stores.online import open_online

        self._store = open_online(settings)

    def write_batch(self, items: list[StepOutput]) -> None:
        newest: dict[str, Any] = {}
        preds: dict[str, dict[str, Any]] = {}
        for it in items:
            for row in it.features:
                cur = newest.get(row.symbol)
                if cur is None or row.ts_us >= cur.ts_us:
                    newest[row.symbol] = row
            for p in it.predictions:
                cur_p = preds.get(p["symbol"])
                if cur_p is None or p["ts_us"] >= cur_p["ts_us"]:
                    preds[p["symbol"]] = p
        if newest:
            self._store.put_features(list(newest.values()))
        if preds:
            self._store.put_predictions(list(preds.values()))

    def close(self) -> None:
        self._store.close()


class OnlineSink(DynamicSink[StepOutput]):
    """Newest feature row per symbol into Redis (compare-and-set on event time)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _OnlinePartition:
        return _OnlinePartition(self.settings)


class _RegistryPartition(StatelessSinkPartition[StepOutput]):
    def __init__(self, settings: Settings) -> None:
        from models.registry import registry_from_settings

        self._registry = registry_from_settings(settings, writer=True)
        self._keep = settings.registry_keep

    def write_batch(self, items: list[StepOutput]) -> None:
        for it in items:
            for snap in it.snapshots:
                # the payload is an immutable copy taken inside the flow; the registry
                # signs and publishes it atomically
                self._registry.save_payload(snap.name, snap.payload, snap.meta)
                self._registry.prune(snap.name, self._keep)


class RegistrySink(DynamicSink[StepOutput]):
    """Online-model snapshots -> the model registry (object storage), with retention."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _RegistryPartition:
        return _RegistryPartition(self.settings)
