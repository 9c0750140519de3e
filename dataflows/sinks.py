"""Bytewax sinks for the offline (ClickHouse) and online (Redis) stores.

Both are idempotent, which turns Bytewax's at-least-once recovery into exactly-once
results: the offline store keeps one row per key (newest wins), and the online store
only accepts a feature row that is not older than the one it holds.

The offline sink buffers rows to make large batched inserts, and flushes the buffer
in ``snapshot()`` — Bytewax calls it at the end of every epoch, *before* the epoch's
recovery state is committed — so a crash can lose only rows whose input will be
replayed. Buffering and flushing are :class:`dataflows.batching.BatchingPartition`'s;
each sink here only writes a batch.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

from bytewax.outputs import (
    DynamicSink,
    FixedPartitionedSink,
    StatefulSinkPartition,
    StatelessSinkPartition,
)

from dataflows.batching import BatchingPartition
from tickcast.config import Settings
from tickcast.pipeline import StepOutput
from tickcast.schema import DeadLetter, Prediction
from tickcast.stores.offline import open_offline
from tickcast.stores.tables import (
    candles_to_arrow,
    dead_letters_to_arrow,
    features_to_arrow,
    rows_to_arrow,
)

log = logging.getLogger(__name__)


class _OfflinePartition(BatchingPartition[StepOutput], StatefulSinkPartition[StepOutput, None]):
    def __init__(self, url: str, max_rows: int, max_delay_s: float) -> None:
        super().__init__(max_rows, max_delay_s)
        self._store = open_offline(url)
        self._store.ensure_schema()

    def rows(self, item: StepOutput) -> int:
        return item.rows

    def write(self, batch: list[StepOutput]) -> None:
        b = StepOutput()
        for it in batch:
            b.extend(it)
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

    def release(self) -> None:
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


class _OnlinePartition(BatchingPartition[StepOutput], StatelessSinkPartition[StepOutput]):
    """Writes every Bytewax batch at once (``max_rows=0``): only its newest row per symbol."""

    def __init__(self, settings: Settings) -> None:
        from tickcast.stores.online import open_online

        super().__init__(max_rows=0)
        self._store = open_online(settings, lease=True)  # run on its own: stops the Valkey it started

    def write(self, batch: list[StepOutput]) -> None:
        newest: dict[str, Any] = {}
        preds: dict[str, Prediction] = {}
        for it in batch:
            for row in it.features:
                cur = newest.get(row.symbol)
                if cur is None or row.ts_us >= cur.ts_us:
                    newest[row.symbol] = row
            for p in it.predictions:
                if not p.model_kind.startswith("online"):
                    continue  # production / auto rows: the scoreboard below carries them
                cur_p = preds.get(p.symbol)
                if cur_p is None or p.ts_us >= cur_p.ts_us:
                    preds[p.symbol] = p
        if newest:
            self._store.put_features(list(newest.values()))
        if preds:
            self._store.put_predictions(list(preds.values()))
        boards = [b for it in batch for b in it.selection]
        if boards:
            self._store.put_selections(boards)

    def release(self) -> None:
        self._store.close()


class OnlineSink(DynamicSink[StepOutput]):
    """Newest feature row per symbol into Redis (compare-and-set on event time)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _OnlinePartition:
        return _OnlinePartition(self.settings)


class _RegistryPartition(BatchingPartition[StepOutput], StatelessSinkPartition[StepOutput]):
    """Publishes snapshots from a thread of its own, so an object-store outage never
    stalls the flow: ``write`` (every Bytewax batch, at once) only hands the newest snapshot of each model over
    (a newer one supersedes a pending older one: snapshots are a convenience copy, the
    model state itself is Bytewax recovery state). A failed publish is retried with
    exponential backoff and full jitter (``backoff_s`` up to ``max_backoff_s``) until it
    succeeds; a refused one (bad name, oversized) is logged and dropped. Counters
    (``published``, ``retries``, ``superseded``, ``dropped``) are logged on every outage
    and recovery. ``close`` waits up to ``close_wait_s`` for what is pending."""

    def __init__(self, settings: Settings, backoff_s: float = 0.5, max_backoff_s: float = 30.0,
                 close_wait_s: float = 10.0) -> None:
        import threading

        from models.registry import registry_from_settings

        super().__init__(max_rows=0)
        self._registry = registry_from_settings(settings, writer=True)
        self._keep = settings.registry_keep
        self._backoff, self._max_backoff, self._close_wait = backoff_s, max_backoff_s, close_wait_s
        self._pending: dict[str, Any] = {}  # symbol -> newest Snapshot not yet published
        self._cv = threading.Condition()
        self._closing = False
        self.published = self.retries = self.superseded = self.dropped = 0
        self._thread = threading.Thread(target=self._run, name="tickcast-registry-publisher", daemon=True)
        self._thread.start()

    def write(self, batch: list[StepOutput]) -> None:
        with self._cv:
            for it in batch:
                for snap in it.snapshots:
                    if snap.symbol in self._pending:
                        self.superseded += 1
                    self._pending[snap.symbol] = snap
            self._cv.notify_all()

    def _publish(self, snap: Any) -> None:
        # the payload is an immutable copy taken inside the flow; the registry signs and
        # publishes it atomically
        from models.registry import online_model_name

        name = online_model_name(snap.symbol)
        self._registry.save_payload(name, snap.payload, snap.meta)
        try:
            self._registry.prune(name, self._keep)
        except Exception as e:  # noqa: BLE001 - retention is retried with the next snapshot
            log.warning("registry: pruning %s failed (%s); retried after the next snapshot", name, e)

    def _run(self) -> None:
        import random

        from models.registry import RegistryUnavailable

        failures = 0
        retry_at = 0.0  # monotonic time of the next attempt after a failure (new snapshots do not advance it)
        while True:
            with self._cv:
                while True:
                    if self._closing:
                        if not self._pending:
                            return
                        break  # one last attempt at shutdown, whatever the backoff
                    wait = retry_at - time.monotonic()
                    if self._pending and wait <= 0:
                        break
                    self._cv.wait(wait if self._pending else None)
                name = next(iter(self._pending))
                snap = self._pending.pop(name)
            try:
                self._publish(snap)
            except RegistryUnavailable as e:
                failures += 1
                self.retries += 1
                delay = random.uniform(0, min(self._max_backoff, self._backoff * 2 ** min(failures, 16)))
                retry_at = time.monotonic() + delay
                with self._cv:
                    if name not in self._pending:  # keep it unless a newer one arrived meanwhile
                        self._pending[name] = snap
                    log.warning("registry unavailable (%s); %d snapshot(s) pending, retry %d in %.1f s "
                                "(published %d, superseded %d so far)", e, len(self._pending), failures, delay,
                                self.published, self.superseded)
                    if self._closing:
                        return
                continue
            except Exception as e:  # noqa: BLE001 - refused (bad name, too large, ...): never retried
                self.dropped += 1
                log.error("registry: snapshot %s dropped: %s: %s", name, type(e).__name__, e)
                continue
            self.published += 1
            if failures:
                log.warning("registry available again after %d retries; published %s (published %d, "
                            "superseded %d so far)", failures, name, self.published, self.superseded)
                failures, retry_at = 0, 0.0

    def release(self) -> None:
        with self._cv:
            self._closing = True
            self._cv.notify_all()
        self._thread.join(self._close_wait)
        with self._cv:
            if self._pending:
                log.warning("registry: %d snapshot(s) not published at shutdown (%s); the model state is in "
                            "the recovery store, the next snapshot will publish it",
                            len(self._pending), ", ".join(sorted(self._pending)))


class RegistrySink(DynamicSink[StepOutput]):
    """Online-model snapshots -> the model registry (object storage), with retention;
    an unavailable store delays publishing (retries with backoff), never the flow.

    The signing key is checked when the flow is built: a missing, malformed or weak key
    stops the flow at start with one line (exit 2), not with a worker traceback."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        if settings.online_model != "off":
            from models.registry import registry_from_settings
            from tickcast.config import ConfigError
            from tickcast.fatal import fatal

            try:
                registry_from_settings(settings, writer=True)
            except ConfigError as e:
                fatal(e, 2)

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _RegistryPartition:
        return _RegistryPartition(self.settings)


class _DeadLetterPartition(BatchingPartition[list[DeadLetter]], StatefulSinkPartition[list[DeadLetter], None]):
    def __init__(self, url: str, max_delay_s: float) -> None:
        super().__init__(math.inf, max_delay_s)  # written when the oldest has waited max_delay_s
        self._store = open_offline(url)
        self._store.ensure_schema()

    def write(self, batch: list[list[DeadLetter]]) -> None:
        rows = [d for letters in batch for d in letters]
        if rows:
            self._store.insert("dead_letters", dead_letters_to_arrow(rows))

    def release(self) -> None:
        self._store.close()


class DeadLetterSink(FixedPartitionedSink[list[DeadLetter], None]):
    """Dead letters into the offline store's ``dead_letters`` table (one writer): what
    the ingest flow does with records it refuses (the feature flow writes its dead
    letters with :class:`OfflineSink`)."""

    def __init__(self, url: str, max_delay_s: float = 1.0) -> None:
        self.url = url
        self.max_delay_s = max_delay_s

    def list_parts(self) -> list[str]:
        return ["dead_letters"]

    def part_fn(self, item_key: str) -> int:
        return 0

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> _DeadLetterPartition:
        return _DeadLetterPartition(self.url, self.max_delay_s)
