"""Trades out of the topic: :class:`KafkaTradeSource`, what ``dataflows.features``
reads with when ``TICKCAST_SOURCE=kafka``.

One Bytewax partition per Kafka partition (spread over the workers), each its own
consumer with ``assign()`` (no consumer group, no offset commits: the position is
Bytewax recovery state). It emits :data:`~dataflows.chunks.RawChunk` items
``("kafka:<topic>", [("<partition>:<offset>", value), ...])``; the feature flow
decodes them with :func:`tickcast.wire.decode_trade`. A fresh flow starts at the
beginning of every partition; a recovered one resumes at the offset after the last
record of the last committed epoch.

**Delivery guarantee.** The topic itself is at-least-once: a restarted ingest
re-sends what it emitted after its last snapshot, a producer retry after a broker
crash re-sends a batch the broker may already have written, and a reconnecting
Kraken client re-receives a snapshot of recent trades. The feature flow therefore
drops a trade whose ``trade_id`` is not above the newest one of its symbol — after
the record is decoded and has passed the trade gate (a record that fails them can
never raise the mark), in the per-symbol pipeline whose state is recovered in the
same epoch as this source's offset (``SymbolPipeline(dedupe=True)``; Kraken trade
ids grow per symbol, and one symbol lives in one partition, in order). With the
idempotent sinks of the feature flow the stores end exactly-once.

**Fetching without starving, and knowing the lag.** A caught-up consumer wants short
fetch waits (a new trade is seen within milliseconds); a consumer reading a backlog
from a slow broker wants long ones: tansu on S3 answers a fetch it cannot fill within
``fetch.wait.max.ms`` with an empty response, so a 10-ms wait read 0 of 3,000 backlog
records in 30 s (measured; see the README, "Live ingestion"). Each partition therefore runs in one of two
modes and switches between them by measurement: *live* (``fetch.wait.max.ms`` 10)
while it is at the high watermark, *catch-up* (500 ms) once it has been behind
without progress for a second; back to live after a second at the end. A broker too
slow even for live fetches (starved again within 30 s of going live: tansu on S3 at
~100 trades/s) gets its live wait doubled, up to 200 ms, so the reader settles on the
shortest wait this broker can serve (measured: see the README, "Live ingestion").

**Knowing how far the stream is complete.** The ingest writes heartbeats into every
partition behind its trades (``HEARTBEAT_KEY``; see :class:`dataflows.kafka.sink.KafkaTradeSink`); each
partition reports the newest one it has read (ignoring any more than a minute ahead
of this host's clock) downstream in a :data:`PROGRESS` chunk (when it changes, at
most every 0.1 s, and once a second), and the feature flow's clock is the smallest of
them (:class:`dataflows.features.PipelineLogic`). A topic without heartbeats falls
back to the wall clock while the partition is at its high watermark, as the last
fetch response (fresh per the client's statistics) said. A consumer that is merely
behind — starved, restarted, or reading a backlog — is never mistaken for a quiet
market.

**End of partition is not end of stream**: the topic is live. For tests, benchmarks
and backfills, ``TICKCAST_KAFKA_STOP_AT_END=1`` ends each partition at the high
watermark seen when it started, so the flow closes its windows and exits 0.

tansu quirks handled here (see :mod:`tickcast.tansu`): ``ListOffsets`` "latest" is
wrong, so the end is the fetch high watermark and ``OFFSET_END`` is never used; no
consumer-group join.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from dataflows.chunks import PROGRESS, RawChunk
from dataflows.kafka.topic import (
    HEARTBEAT_KEY,
    KafkaUnavailable,
    base_config,
    ensure_topic,
    heartbeat_us,
)
from tickcast.config import Settings
from tickcast.fatal import fatal

log = logging.getLogger(__name__)

_IDLE = timedelta(milliseconds=5)  # how soon an idle partition looks again
LIVE_WAIT_MS = 10  # fetch.wait.max.ms at the high watermark: low latency
CATCH_UP_WAIT_MS = 500  # ... while reading a backlog: a slow broker can fill each fetch
_STALL_S = 1.0  # behind this long without a record: switch to catch-up
_SETTLE_S = 1.0  # caught up this long: switch back to live
_RESTARVE_S = 30.0  # starved again within this time of going live: double the live wait
MAX_LIVE_WAIT_MS = 200
_PROGRESS_EVERY_S = 1.0  # a report at least this often
_PROGRESS_MIN_S = 0.1  # ... and at most this often while it changes
_HEARTBEAT_AHEAD_US = 60_000_000  # a heartbeat more than a minute ahead of this host's clock is ignored

# {"offset": next offset to read, "heartbeat": newest ingest heartbeat read (wall µs, 0 = none)}
State = dict[str, Any]


_FATAL_CODES = frozenset({
    KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_PARTITION, KafkaError._UNKNOWN_TOPIC,
    KafkaError.TOPIC_AUTHORIZATION_FAILED, KafkaError._AUTO_OFFSET_RESET, KafkaError.OFFSET_OUT_OF_RANGE,
})


class _KafkaPartition(StatefulSourcePartition[RawChunk, State]):
    def __init__(self, brokers: str, topic: str, partition: int, resume: State | None, batch_size: int,
                 stop_at_end: bool, config: Mapping[str, Any], n_partitions: int = 1) -> None:
        state = resume or {}
        self._topic = topic
        self._partition = partition
        self._name = f"kafka:{topic}"
        self._prefix = f"{partition}:"
        self._offset: int = int(state.get("offset", 0))
        # the newest ingest heartbeat read (wall µs; 0: none yet)
        self._heartbeat: int = int(state.get("heartbeat", 0))
        self._batch = batch_size
        self._stop_at_end = stop_at_end
        self._end: int | None = None
        self._done = False
        self._awake: datetime | None = None
        self._warned_at = 0.0
        conf = {
            **base_config(brokers),
            "group.id": "tickcast-features",  # required by librdkafka; never joined (assign())
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "enable.partition.eof": True,
            # a resume offset the broker no longer has is an error, never a silent jump
            "auto.offset.reset": "error",
            "fetch.wait.max.ms": LIVE_WAIT_MS,
            "fetch.min.bytes": 1,  # answer as soon as anything is there
            "fetch.max.bytes": 64 << 20,
            "max.partition.fetch.bytes": 16 << 20,
            "queued.min.messages": 200_000,
            **config,
        }
        self._tp = TopicPartition(topic, partition)
        # the cached high watermark is only as fresh as the last fetch response: the
        # client's statistics say when its broker last answered (rxidle), and an error
        # (broker down) makes the state unknown until it answers again
        self._fresh_until = 0.0
        conf["statistics.interval.ms"] = 250
        conf["stats_cb"] = self._on_stats
        self._conf = conf
        self._n_parts = n_partitions
        self._reported: tuple[int | None, float] = (None, 0.0)  # (complete until, monotonic time) last said
        self._progress_at = time.monotonic()  # the last record, or the moment we were last at the end
        self._mode_at = time.monotonic()
        self._polled_at = time.monotonic()
        self.switches = 0
        self._live_wait = int(conf.get("fetch.wait.max.ms", LIVE_WAIT_MS))
        self._catch_up_wait = max(self._live_wait, CATCH_UP_WAIT_MS)
        self._wait = self._live_wait
        self._consumer = self._open(self._offset if resume is not None else OFFSET_BEGINNING)

    def _on_stats(self, raw: str) -> None:
        try:
            st = orjson.loads(raw)
            leader = st["topics"][self._topic]["partitions"][str(self._partition)]["leader"]
            b = next(b for b in st["brokers"].values() if b.get("nodeid") == leader)
            idle_us = int(b.get("rxidle", -1))
            if b.get("state") == "UP" and 0 <= idle_us < 1_000 * (self._wait + 500):
                self._fresh_until = time.monotonic() + 0.5
            else:
                self._fresh_until = 0.0
        except (KeyError, StopIteration, TypeError, ValueError, orjson.JSONDecodeError):
            self._fresh_until = 0.0

    def _open(self, start: int) -> Consumer:
        c = Consumer({**self._conf, "fetch.wait.max.ms": self._wait})
        c.assign([TopicPartition(self._topic, self._partition, start)])
        return c

    def _switch(self, wait_ms: int) -> None:
        """Reopen the consumer at the current position with another fetch wait (librdkafka
        cannot change it on a running client; a reopen costs a few ms)."""
        log.info("kafka %s[%d]: fetch wait %d -> %d ms at offset %d", self._topic, self._partition, self._wait,
                 wait_ms, self._offset)
        self._consumer.close()
        self._wait = wait_ms
        self._consumer = self._open(self._offset)
        self._mode_at = time.monotonic()
        self.switches += 1

    def _track_lag(self, got_records: bool) -> list[RawChunk]:
        """Update caught-up state and fetch mode after a poll; a PROGRESS chunk when due."""
        now = time.monotonic()
        hi = self._consumer.get_watermark_offsets(self._tp, cached=True)[1]
        caught = hi >= 0 and self._offset >= hi and now < self._fresh_until
        if got_records or caught or now - self._polled_at > _STALL_S / 2:
            # (a long gap between polls is this process being busy, not the broker starving)
            self._progress_at = now
        self._polled_at = now
        if caught:
            if self._wait != self._live_wait and now - self._mode_at >= _SETTLE_S:
                self._switch(self._live_wait)
        elif self._wait == self._live_wait and now - self._progress_at >= _STALL_S:
            if now - self._mode_at < _RESTARVE_S:
                # starved again soon after returning to live: this broker needs longer
                # fetches even at the end of the log
                self._live_wait = min(2 * self._live_wait, MAX_LIVE_WAIT_MS, self._catch_up_wait)
            self._switch(self._catch_up_wait)
        # complete until: the newest ingest heartbeat read; on a topic without heartbeats
        # (another producer), the wall clock while at the (fresh) high watermark
        if self._heartbeat > 0:
            until: int | None = self._heartbeat
        else:
            until = time.time_ns() // 1000 if caught else None
        said, at = self._reported
        due = now - at >= (_PROGRESS_MIN_S if until != said else _PROGRESS_EVERY_S)
        if not due and (until is None) == (said is None):  # behind <-> complete is said at once
            return []
        self._reported = (until, now)
        value = b"-1" if until is None else str(until).encode()
        return [(f"{PROGRESS}{self._topic}", [(f"{self._partition}/{self._n_parts}", value)])]

    def next_batch(self) -> list[RawChunk]:
        if self._done:
            raise StopIteration
        msgs = self._consumer.consume(self._batch, 0)
        lines: list[tuple[str, bytes]] = []
        last_off = -1
        if msgs:
            prefix = self._prefix
            append = lines.append
            for m in msgs:
                err = m.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        if self._end is None and self._stop_at_end:
                            self._end = m.offset()
                        continue
                    self._fresh_until = 0.0  # the broker's state is unknown until it answers
                    self._on_error(err)
                    continue
                last_off = m.offset()  # type: ignore[assignment]  # never None for a record
                value = m.value()
                if value is None:
                    append((f"{prefix}{last_off}", b""))
                    continue
                key = m.key()
                if key == HEARTBEAT_KEY:  # the ingest's clock: everything before it is read
                    hb = heartbeat_us(value)
                    if hb <= time.time_ns() // 1000 + _HEARTBEAT_AHEAD_US:  # a clock from the future
                        self._heartbeat = max(self._heartbeat, hb)  # is not believed (forged, or skew)
                    continue
                append((f"{prefix}{last_off}", value))
            if last_off >= 0:
                self._offset = last_off + 1
        self._awake = None if msgs else datetime.now(UTC) + _IDLE
        if self._stop_at_end:
            if self._end is None:
                hi = self._consumer.get_watermark_offsets(self._tp, cached=True)[1]
                if hi >= 0:  # the first fetch response has arrived: its high watermark
                    self._end = hi
            if self._end is not None and self._offset >= self._end:
                self._done = True  # emit this batch; end at the next call
        out: list[RawChunk] = [(self._name, lines)] if lines else []
        progress = self._track_lag(last_off >= 0)
        if not self._stop_at_end:  # a bounded read is event-time only: no wall clock, no progress
            out.extend(progress)
        return out

    def _on_error(self, err: KafkaError) -> None:
        where = f"Kafka topic {self._topic!r} partition {self._partition} at offset {self._offset}"
        if err.fatal() or err.code() in _FATAL_CODES:
            hint = ""
            if err.code() in (KafkaError._AUTO_OFFSET_RESET, KafkaError.OFFSET_OUT_OF_RANGE):
                hint = (" (the topic was recreated or retention removed those records; start with an "
                        "empty recovery directory to read it from the beginning)")
            fatal(KafkaUnavailable(f"{where}: {err.str()}{hint}"), 1, now=True)
        log.warning("%s: %s (retrying)", where, err.str())

    def next_awake(self) -> datetime | None:
        return self._awake

    def snapshot(self) -> State:
        return {"offset": self._offset, "heartbeat": self._heartbeat}

    def close(self) -> None:
        self._consumer.close()


class KafkaTradeSource(FixedPartitionedSource[RawChunk, State]):
    """The trades topic as a Bytewax source: one partition per Kafka partition.

    ``stop_at_end`` (default: ``settings.kafka_stop_at_end``, ``TICKCAST_KAFKA_STOP_AT_END``) ends every partition
    at the high watermark it saw when it started; otherwise the source is live and
    never ends. ``config`` adds or overrides librdkafka consumer settings."""

    def __init__(self, settings: Settings, *, batch_size: int = 5000, stop_at_end: bool | None = None,
                 config: Mapping[str, Any] | None = None) -> None:
        self.brokers = settings.kafka_brokers
        self.topic = settings.trades_topic
        self.batch_size = batch_size
        self.stop_at_end = settings.kafka_stop_at_end if stop_at_end is None else stop_at_end
        self.partitions = settings.kafka_partitions
        self.timeout = settings.kafka_timeout_seconds
        self.config = dict(config or {})
        self._count: int | None = None

    def _n(self) -> int:
        if self._count is None:
            try:
                self._count = ensure_topic(self.brokers, self.topic, self.partitions, self.timeout)
            except KafkaUnavailable as e:
                fatal(e, 1, now=True)
        return self._count

    def list_parts(self) -> list[str]:
        return [f"{self.topic}#{i}" for i in range(self._n())]

    def build_part(self, step_id: str, for_part: str, resume_state: State | None) -> _KafkaPartition:
        partition = int(for_part.rsplit("#", 1)[1])
        return _KafkaPartition(self.brokers, self.topic, partition, resume_state, self.batch_size,
                               self.stop_at_end, self.config, self._n())
