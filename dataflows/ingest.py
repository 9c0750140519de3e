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

from typing import Any

import bytewax.operators as op
from bytewax.dataflow import Dataflow

from dataflows.chunks import HEARTBEAT, RawChunk
from dataflows.kafka.sink import KafkaTradeSink
from dataflows.kafka.topic import KafkaUnavailable, ensure_trades_topic
from dataflows.process import relax_gc
from dataflows.sinks import DeadLetterSink
from dataflows.sources import (
    TradeGate,
    is_dead,
    make_source,
    parse_chunk,
)
from tickcast.config import ConfigError, Settings
from tickcast.fatal import fatal


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


relax_gc()
flow = build_flow(_settings_or_exit())
