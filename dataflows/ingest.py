"""The ingest dataflow: raw Kraken v2 messages -> normalised trades -> Kafka.

Run it with ``python -m bytewax.run dataflows.ingest`` (configured by ``TICKCAST_*``
environment variables). The source is ``TICKCAST_SOURCE``: the live Kraken socket by
default, or ``sim`` / ``replay:<file>`` offline (a replay ends at EOF and the flow
exits 0 once every trade is acknowledged by the brokers). ``kafka`` is not a source
for this flow (it is where the flow writes).

Shape::

    input(source) -> flat_map(parse: tickcast.kraken.parse_message)
        trades, per symbol     -> KafkaTradeSink (TICKCAST_TRADES_TOPIC, key = symbol)
        dead letters           -> offline store ``dead_letters`` (with the reason)

Delivery: every trade the source emits is acknowledged by Kafka before Bytewax
commits the epoch (``-r DIR`` recovery), so nothing is lost; a restarted flow may
re-send the stretch after its last snapshot, which readers drop by ``trade_id``
(see :mod:`dataflows.kafka.source`). Dead letters are keyed by source and position, so
re-sent ones do not duplicate.

Failures at start — a bad setting (exit 2), brokers that cannot be reached (exit 1)
— print one line, not a traceback.
"""

from __future__ import annotations

import time
from typing import Any

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition

from dataflows.chunks import HEARTBEAT, RawChunk
from dataflows.kafka.sink import KafkaTradeSink
from dataflows.kafka.topic import KafkaUnavailable, ensure_trades_topic
from dataflows.sources import (
    TradeGate,
    is_dead,
    make_source,
    parse_chunk,
)
from tickcast.config import ConfigError, Settings
from tickcast.fatal import fatal
from tickcast.schema import DeadLetter


class _DeadLetterPartition(StatefulSinkPartition[list[DeadLetter], None]):
    def __init__(self, url: str, max_delay_s: float) -> None:
        from tickcast.stores.offline import open_offline

        self._store = open_offline(url)
        self._store.ensure_schema()
        self._buf: list[DeadLetter] = []
        self._oldest = 0.0
        self._max_delay = max_delay_s

    def write_batch(self, values: list[list[DeadLetter]]) -> None:
        if not self._buf:
            self._oldest = time.monotonic()
        for v in values:
            self._buf.extend(v)
        if time.monotonic() - self._oldest >= self._max_delay:
            self.flush()

    def flush(self) -> None:
        from tickcast.stores.tables import dead_letters_to_arrow

        if self._buf:
            self._store.insert("dead_letters", dead_letters_to_arrow(self._buf))
            self._buf = []

    def snapshot(self) -> None:
        self.flush()  # before the epoch is committed: a crash cannot lose them

    def close(self) -> None:
        self.flush()
        self._store.close()


class DeadLetterSink(FixedPartitionedSink[list[DeadLetter], None]):
    """Dead letters into the offline store's ``dead_letters`` table (one writer)."""

    def __init__(self, url: str, max_delay_s: float = 1.0) -> None:
        self.url = url
        self.max_delay_s = max_delay_s

    def list_parts(self) -> list[str]:
        return ["dead_letters"]

    def part_fn(self, item_key: str) -> int:
        return 0

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> _DeadLetterPartition:
        return _DeadLetterPartition(self.url, self.max_delay_s)


def build_flow(settings: Settings) -> Dataflow:
    flow = Dataflow("tickcast_ingest")
    raw = op.input("source", flow, make_source(settings))
    gate = TradeGate.from_settings(settings)  # configured symbols, sane times: else dead letters

    def parse(chunk: RawChunk) -> list[tuple[str, Any]]:
        if chunk[0] == HEARTBEAT:  # the source's clock goes into the topic, after its trades
            return [(HEARTBEAT, int(chunk[1][0][1]))]
        return parse_chunk(chunk, gate)

    parsed = op.flat_map("parse", raw, parse)
    split = op.branch("split_dead", parsed, lambda kv: not is_dead(kv))
    op.output("kafka", split.trues, KafkaTradeSink(settings))
    op.output("dead_letters", split.falses, DeadLetterSink(settings.offline_url))
    return flow


def _settings_or_exit() -> Settings:
    try:
        s = Settings.from_env()
        if s.source == "kafka":
            raise ConfigError("TICKCAST_SOURCE='kafka' is not valid for dataflows.ingest (it writes to Kafka): "
                              "expected kraken, sim or replay:<path to a .jsonl file>")
    except ConfigError as e:
        fatal(e, 2)
    try:
        ensure_trades_topic(s)  # fail fast, with one line, when the brokers are not there
    except KafkaUnavailable as e:
        fatal(e, 1)
    return s


flow = build_flow(_settings_or_exit())
