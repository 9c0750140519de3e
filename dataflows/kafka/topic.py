"""The trades topic: its records besides trades (the ingest's heartbeats), and creating it.

**Topic creation.** Either side creates the topic if it is missing, with
``TICKCAST_KAFKA_PARTITIONS`` partitions (default 2; fix it before the first run:
the embedded broker, tansu, cannot add partitions later). Records are placed by
librdkafka's default partitioner (CRC32 of the key). Nothing else auto-creates it:
every client here sets ``allow.auto.create.topics=false``.

**Reaching the brokers.** Creating/inspecting the topic waits at most
``TICKCAST_KAFKA_TIMEOUT_SECONDS`` (default 10); unreachable brokers then raise
:class:`KafkaUnavailable`, one line naming ``TICKCAST_KAFKA_BROKERS``.

>>> heartbeat_value(1_700_000_000_000_000)
b'{"heartbeat_us":1700000000000000}'
>>> heartbeat_us(heartbeat_value(5)), heartbeat_us(b"not json")
(5, 0)
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from tickcast.config import Settings

HEARTBEAT_KEY = b"\x00heartbeat"  # record key of the ingest's heartbeats (never a symbol)
DEFAULT_PARTITIONS = 2
DEFAULT_TIMEOUT_S = 10.0


def heartbeat_value(wall_us: int) -> bytes:
    """The value of a heartbeat record: every trade the ingest received before
    ``wall_us`` is in the partition before this record."""
    return b'{"heartbeat_us":%d}' % wall_us


def heartbeat_us(value: bytes | None) -> int:
    """The time a heartbeat record carries; 0 for a malformed one."""
    try:
        v = orjson.loads(value or b"")["heartbeat_us"]
        return v if isinstance(v, int) and v > 0 else 0
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return 0


class KafkaUnavailable(RuntimeError):
    """The brokers could not be reached or refused what was asked (one line)."""


def base_config(brokers: str) -> dict[str, Any]:
    """librdkafka settings every client here shares (no topic auto-creation)."""
    return {"bootstrap.servers": brokers, "client.id": "tickcast", "allow.auto.create.topics": False}


def _partition_count(admin: AdminClient, topic: str, timeout: float) -> int | None:
    # list every topic: a Metadata request naming a missing topic auto-creates it on some brokers
    md = admin.list_topics(timeout=timeout)
    t = md.topics.get(topic)
    if t is None or t.error is not None and t.error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
        return None
    if t.error is not None:
        raise KafkaUnavailable(f"Kafka topic {topic!r}: {t.error.str()}")
    return len(t.partitions)


def ensure_topic(brokers: str, topic: str, partitions: int = DEFAULT_PARTITIONS,
                 timeout: float = DEFAULT_TIMEOUT_S) -> int:
    """Create ``topic`` with ``partitions`` partitions if it is missing; return its
    partition count. Safe to call concurrently (an existing topic is left as it is).
    Raises :class:`KafkaUnavailable` with one line when the brokers cannot be reached."""
    # quiet: failures come back as one exception, not as librdkafka's retry log lines
    admin = AdminClient({**base_config(brokers), "log_level": 0})
    try:
        n = _partition_count(admin, topic, timeout)
        if n is not None:
            return n
        want = partitions
        fut = admin.create_topics([NewTopic(topic, want, replication_factor=-1)],
                                  operation_timeout=timeout, request_timeout=timeout)[topic]
        try:
            fut.result(timeout)
        except KafkaException as e:
            if e.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
        deadline = time.monotonic() + timeout
        while (n := _partition_count(admin, topic, timeout)) is None:
            if time.monotonic() > deadline:
                raise KafkaUnavailable(f"Kafka topic {topic!r} was created but does not show up in metadata")
            time.sleep(0.05)
        return n
    except KafkaException as e:
        err = e.args[0]
        what = err.str() if isinstance(err, KafkaError) else str(err)
        raise KafkaUnavailable(f"cannot use Kafka at {brokers} (TICKCAST_KAFKA_BROKERS), topic {topic!r}: "
                               f"{what}") from None



def ensure_trades_topic(settings: Settings) -> int:
    """:func:`ensure_topic` for ``TICKCAST_TRADES_TOPIC`` with the partitions and timeout
    of ``settings``."""
    return ensure_topic(settings.kafka_brokers, settings.trades_topic, settings.kafka_partitions,
                        settings.kafka_timeout_seconds)
