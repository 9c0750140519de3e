"""Kafka in and out of the dataflows: the ``TICKCAST_TRADES_TOPIC`` topic of
normalised trades (record format: :mod:`tickcast.wire`).

* :mod:`dataflows.kafka.topic` — the topic: creating it (:func:`~dataflows.kafka.topic.ensure_topic`),
  the ingest's heartbeat records, :class:`~dataflows.kafka.topic.KafkaUnavailable`;
* :mod:`dataflows.kafka.source` — :class:`~dataflows.kafka.source.KafkaTradeSource`, what the
  feature flow reads with (``TICKCAST_SOURCE=kafka``);
* :mod:`dataflows.kafka.sink` — :class:`~dataflows.kafka.sink.KafkaTradeSink`, what the ingest
  flow writes with, and :func:`~dataflows.kafka.sink.produce_trades` outside a flow.

Settings (read once in :class:`tickcast.config.Settings`): ``TICKCAST_KAFKA_BROKERS``,
``TICKCAST_TRADES_TOPIC``, ``TICKCAST_KAFKA_PARTITIONS``, ``TICKCAST_KAFKA_TIMEOUT_SECONDS``,
``TICKCAST_KAFKA_STOP_AT_END``.

**End of partition is not end of stream**: the topic is live. For tests, benchmarks
and backfills, ``TICKCAST_KAFKA_STOP_AT_END=1`` ends each partition at the high
watermark seen when it started, so the flow closes its windows and exits 0.

This package imports nothing here: import the module you need.
"""
