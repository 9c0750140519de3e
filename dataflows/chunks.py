"""What every source emits, and the two kinds of chunk that carry no trades.

Imports nothing else from ``dataflows``: the sources (``sources``, ``kafka.source``,
``kraken_source``) and both flows import it, so none of them has to import another.

>>> heartbeat_chunk(1_700_000_000_000_000)
('heartbeat', [('', b'1700000000000000')])
"""

from __future__ import annotations

RawChunk = tuple[str, list[tuple[str, bytes]]]
# a chunk whose name starts with this is no data but a Kafka partition's progress report:
# [("<partition>/<partitions>", b"<wall µs until which its stream is complete, or -1: unknown>")]
# (see dataflows.kafka.source; the feature flow turns it into dataflows.features.SourceProgress)
PROGRESS = "kafka-progress:"
# a chunk named HEARTBEAT is no data but a live source's clock: [("", b"<wall µs>")] =
# every trade the source received before that time is in the chunks emitted before this
# one. The ingest flow writes it into the topic (dataflows.kafka.sink), where it tells the
# feature flow how far the stream is complete; the direct feature flow ignores it.
HEARTBEAT = "heartbeat"
HEARTBEAT_EVERY_S = 0.5


def heartbeat_chunk(wall_us: int) -> RawChunk:
    return (HEARTBEAT, [("", str(wall_us).encode())])
