"""Trades into the topic: :class:`KafkaTradeSink` (what ``dataflows.ingest`` writes
with) and :func:`produce_trades` (the same producer outside a dataflow).

An at-least-once, in-order producer (``acks=all``, retries, one request in flight),
key = symbol, value = :func:`tickcast.wire.encode_trade`, record timestamp = trade
time (ms). Delivery is confirmed before Bytewax commits an epoch (``snapshot()``
flushes) and at the end; a failed delivery stops the flow with an error naming the
topic, the trade and librdkafka's reason — a trade is never silently lost. Once
running, the producer rides out broker restarts (it retries for up to 5 minutes).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition
from confluent_kafka import KafkaError, Producer

from dataflows.batching import BatchingPartition
from dataflows.kafka.topic import (
    DEFAULT_TIMEOUT_S,
    HEARTBEAT_KEY,
    KafkaUnavailable,
    base_config,
    ensure_topic,
    heartbeat_value,
)
from tickcast.config import Settings
from tickcast.fatal import fatal
from tickcast.schema import Trade
from tickcast.wire import encode_trade

log = logging.getLogger(__name__)


class KafkaDeliveryError(RuntimeError):
    """The producer could not deliver trades to the topic."""


class _KafkaSinkPartition(BatchingPartition[list[Trade] | int], StatefulSinkPartition[list[Trade] | int, None]):
    """Produces every Bytewax batch at once (``max_rows=0``: librdkafka batches); waits
    for the acknowledgements at every snapshot and at close."""

    def __init__(self, brokers: str, topic: str, partitions: int, config: Mapping[str, Any],
                 timeout: float = DEFAULT_TIMEOUT_S) -> None:
        super().__init__(max_rows=0)
        self._partitions = ensure_topic(brokers, topic, partitions, timeout)
        self._topic = topic
        self._failed: list[tuple[KafkaError, bytes | None]] = []
        self._fatal: KafkaError | None = None
        self._producer = Producer({
            **base_config(brokers),
            # at-least-once, in order: acks from every in-sync replica, retries, and one
            # request in flight per broker so a retried batch can never land after a
            # later one. Not librdkafka's idempotent producer: measured against tansu
            # 0.6, a broker crash while idempotent batches were in flight lost acknowledged
            # trades in 5 of 15 runs (6 to 5,325); the re-sends this setting allows are
            # dropped by KafkaTradeSource's per-symbol trade_id check instead.
            "enable.idempotence": False,
            "acks": "all",
            "max.in.flight.requests.per.connection": 1,
            "linger.ms": 1,
            "compression.type": "lz4",
            "message.timeout.ms": 300_000,  # retry through a broker restart for up to 5 minutes
            "error_cb": self._on_client_error,
            **config,
        })
        self.sent = 0

    def _on_client_error(self, err: KafkaError) -> None:
        if err.fatal():
            self._fatal = err
        else:
            log.warning("kafka producer: %s", err.str())

    def _on_delivery(self, err: KafkaError | None, msg: Any) -> None:
        if err is not None:
            self._failed.append((err, msg.value()))

    def _raise_failures(self) -> None:
        if self._fatal is not None:
            raise KafkaDeliveryError(f"Kafka producer for topic {self._topic!r} failed fatally: "
                                     f"{self._fatal.str()}; trades not yet acknowledged are not in the topic")
        if self._failed:
            err, value = self._failed[0]
            n = len(self._failed)
            raise KafkaDeliveryError(
                f"{n} trade(s) could not be delivered to Kafka topic {self._topic!r}: {err.str()} "
                f"(first: {(value or b'')[:200].decode(errors='replace')})")

    def _produce(self, value: bytes, key: bytes, **kw: Any) -> None:
        while True:
            try:
                self._producer.produce(self._topic, value, key, on_delivery=self._on_delivery, **kw)
                return
            except BufferError:  # the local queue is full: let deliveries drain it
                self._producer.poll(0.05)
                self._raise_failures()

    def write(self, batch: list[list[Trade] | int]) -> None:
        produce = self._producer.produce
        topic = self._topic
        cb = self._on_delivery
        for trades in batch:
            if isinstance(trades, int):  # a source heartbeat: into every partition, after its trades
                hb = heartbeat_value(trades)
                for p in range(self._partitions):
                    self._produce(hb, HEARTBEAT_KEY, partition=p, timestamp=trades // 1000)
                continue
            for t in trades:
                value = encode_trade(t)
                key = t.symbol.encode()
                ts_ms = t.ts_us // 1000
                while True:
                    try:
                        produce(topic, value, key, timestamp=ts_ms, on_delivery=cb)
                        break
                    except BufferError:  # the local queue is full: let deliveries drain it
                        self._producer.poll(0.05)
                        self._raise_failures()
                self.sent += 1
        self._producer.poll(0)
        self._raise_failures()

    def sync(self) -> None:
        """Wait until every produced trade is acknowledged (or has failed): at every
        snapshot, so every trade of an epoch is in the topic before it is committed."""
        while self._producer.flush(1.0) > 0:
            self._raise_failures()
        self._raise_failures()


class KafkaTradeSink(FixedPartitionedSink[list[Trade] | int, None]):
    """Trades into the topic: items are ``(symbol, [Trade, ...])``, or ``(HEARTBEAT,
    wall_us)``: the source has emitted every trade it received before ``wall_us``; it
    is written to every partition after the trades before it (key ``HEARTBEAT_KEY``),
    and the feature flow's clock follows it (see :class:`dataflows.kafka.source.KafkaTradeSource`).

    One producer (one sink partition), so each symbol's trades are produced in the
    order they arrive; librdkafka batches and compresses them. ``config`` adds or
    overrides librdkafka producer settings."""

    def __init__(self, settings: Settings, *, config: Mapping[str, Any] | None = None) -> None:
        self.brokers = settings.kafka_brokers
        self.topic = settings.trades_topic
        self.partitions = settings.kafka_partitions
        self.timeout = settings.kafka_timeout_seconds
        self.config = dict(config or {})

    def list_parts(self) -> list[str]:
        return ["kafka-producer"]

    def part_fn(self, item_key: str) -> int:
        return 0

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> _KafkaSinkPartition:
        try:
            return _KafkaSinkPartition(self.brokers, self.topic, self.partitions, self.config, self.timeout)
        except KafkaUnavailable as e:
            fatal(e, 1, now=True)


def produce_trades(settings: Settings, trades: list[Trade], *, config: Mapping[str, Any] | None = None) -> int:
    """Write ``trades`` to the topic with the sink's producer (outside a dataflow: for
    backfills, tests and benchmarks); returns once all are acknowledged. Raises
    :class:`KafkaUnavailable` / :class:`KafkaDeliveryError`."""
    part = _KafkaSinkPartition(settings.kafka_brokers, settings.trades_topic, settings.kafka_partitions, config or {},
                               settings.kafka_timeout_seconds)
    part.write_batch([trades])
    part.close()
    return part.sent
