"""The embedded Kafka broker under a live load: consumer lag, produce and fetch rates,
restart durability — tansu on SeaweedFS S3 (what `tickcast up --kafka` starts) beside
tansu in memory (the reference: fast, but it loses the topic on restart).

For each broker, in the same run:

  * live      — tickcast's producer (the ingest sink's code: acks=all, linger 1 ms) writes
                RATE trades/s in 10-ms batches for DURATION seconds, while tickcast's
                Kafka reader (the feature flow's source partition, driven as Bytewax
                drives it) reads them. Lag = time the reader got a trade - time it was
                produced; reported per minute (p50, p99, max) and overall, with the time
                the reader spent caught up and its fetch-mode switches, and the CPU the
                broker (and SeaweedFS) used;
  * restart   — the broker is stopped and started again on the same storage; a fresh
                reader reads the topic from the beginning: every record still there?
  * big log   — LOG_RECORDS records produced as fast as the producer goes (after the live
                phase, so the log is large), then read from the beginning by the reader:
                produce and fetch rates, and how long a record written at the end takes.

    python benchmarks/bench_kafka_lag.py [--duration 600] [--rate 100] [--log-records 1000000]
                                         [--brokers s3,memory]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
from pathlib import Path

from common import REPO  # noqa: F401  (puts the repository on sys.path)


def cpu_seconds(pid: int) -> float:
    try:
        f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
    except OSError:
        return 0.0


def pct(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


LIVE_WAIT: dict[str, int] = {}
PRODUCER: dict[str, int] = {}


def reader(brokers: str, topic: str, resume: dict | None = None):  # type: ignore[no-untyped-def]
    from dataflows.kafka.source import _KafkaPartition

    return [_KafkaPartition(brokers, topic, p, resume, 5000, False, LIVE_WAIT, 2) for p in range(2)]


def drain(parts, want: int, timeout: float) -> tuple[int, float, int]:  # type: ignore[no-untyped-def]
    """Read until ``want`` records arrived: (records, seconds, newest trade time µs)."""
    from tickcast.wire import decode_trade

    got, newest, t0 = 0, 0, time.perf_counter()
    while got < want and time.perf_counter() - t0 < timeout:
        for p in parts:
            for name, lines in p.next_batch():
                if name.startswith("kafka:"):
                    got += len(lines)
                    trades, _ = decode_trade(lines[-1][1], name, 0, lines[-1][0])
                    if trades:
                        newest = max(newest, trades[0].ts_us)
        time.sleep(0.001)
    return got, time.perf_counter() - t0, newest


def run(kind: str, args: argparse.Namespace) -> None:
    from dataflows.kafka.sink import _KafkaSinkPartition
    from dataflows.kafka.topic import ensure_topic
    from tickcast.embedded import SeaweedS3
    from tickcast.sim import MarketSimulator
    from tickcast.tansu import TansuBroker
    from tickcast.wire import decode_trade

    d = Path(tempfile.mkdtemp(prefix=f"lag-{kind}-"))
    s3 = None
    if kind == "s3":
        s3 = SeaweedS3(d / "s3", buckets=("tansu",)).start()
        broker = TansuBroker.start(storage="s3://tansu/", s3=s3.creds, log_path=d / "tansu.log")
    else:
        broker = TansuBroker.start(log_path=d / "tansu.log")
    try:
        topic = "trades"
        ensure_topic(broker.bootstrap, topic, 2)
        sink = _KafkaSinkPartition(broker.bootstrap, topic, 2, PRODUCER)
        parts = reader(broker.bootstrap, topic)
        sim = MarketSimulator(["BTC/USD", "ETH/USD"], 3, time.time_ns() // 1000)
        pids = [broker.proc.pid] + ([s3.proc.pid] if s3 is not None and getattr(s3, "proc", None) else [])
        cpu0 = sum(cpu_seconds(p) for p in pids)
        lags: dict[int, list[float]] = {}
        got = 0
        sent = [0]
        t0 = time.perf_counter()
        done = threading.Event()

        def produce() -> None:  # the ingest: its own thread, 10-ms batches, an epoch every 5 s
            next_batch, carry, last_flush = t0, 0.0, t0
            while time.perf_counter() - t0 < args.duration:
                carry += args.rate * 0.01
                n, carry = int(carry), carry - int(carry)
                if n:
                    ts = time.time_ns() // 1000
                    sink.write_batch([[t._replace(ts_us=ts) for t in sim.next_trades(n)]])
                    sent[0] += n
                now = time.perf_counter()
                if now - last_flush >= 5:
                    sink.snapshot()
                    last_flush = now
                next_batch += 0.01
                time.sleep(max(0.0, next_batch - time.perf_counter()))
            sink.flush()
            done.set()

        producer = threading.Thread(target=produce, daemon=True)
        producer.start()
        while not done.is_set():
            now = time.perf_counter()
            for p in parts:
                for name, lines in p.next_batch():
                    if not name.startswith("kafka:"):
                        continue
                    recv = time.time_ns() // 1000
                    minute = int((now - t0) // 60)
                    for _, raw in lines:
                        trades, _ = decode_trade(raw, name, 0, "")
                        if trades:
                            lags.setdefault(minute, []).append((recv - trades[0].ts_us) / 1000)
                    got += len(lines)
            time.sleep(0.001)
        produced = sent[0]
        rest, _, _ = drain(parts, produced - got, 60)
        got += rest
        live_cpu = sum(cpu_seconds(p) for p in pids) - cpu0
        allx = [x for v in lags.values() for x in v]
        print(f"\n== tansu on {kind}: live {args.rate:g} trades/s for {args.duration:g} s ==")
        print(f"produced {produced}, read {got} (all: {got == produced}); broker CPU "
              f"{100 * live_cpu / args.duration:.0f} % of one core (tansu{' + SeaweedFS' if s3 else ''})")
        print(f"lag ms overall: p50 {pct(allx, .5):.1f}  p99 {pct(allx, .99):.1f}  max {max(allx or [0]):.1f}; "
              f"> 1 s: {sum(1 for x in allx if x > 1000)}; fetch-mode switches "
              f"{sum(p.switches for p in parts)}")
        for m in sorted(lags):
            v = lags[m]
            print(f"  minute {m + 1:3d}: n {len(v):6d}  p50 {pct(v, .5):7.1f}  p99 {pct(v, .99):7.1f}  "
                  f"max {max(v):8.1f}")
        for p in parts:
            p.close()
        sink.close()

        # restart durability
        broker.stop()
        broker.restart()
        parts = reader(broker.bootstrap, topic)
        n, secs, _ = drain(parts, produced, 120 if s3 is not None else 10)
        print(f"restart: broker stopped and started on the same storage; a fresh reader read {n} of "
              f"{produced} records in {secs:.1f} s ({'durable' if n == produced else 'NOT durable'})")
        for p in parts:
            p.close()

        if args.log_records:
            sink = _KafkaSinkPartition(broker.bootstrap, topic, 2, PRODUCER)
            t1 = time.perf_counter()
            left = args.log_records
            while left:
                k = min(left, 5000)
                ts = time.time_ns() // 1000
                sink.write_batch([[t._replace(ts_us=ts) for t in sim.next_trades(k)]])
                left -= k
            sink.flush()
            prod_s = time.perf_counter() - t1
            sink.close()
            total = produced + args.log_records
            parts = reader(broker.bootstrap, topic)
            n, secs, _ = drain(parts, total, 1800)
            print(f"big log: produced {args.log_records} in {prod_s:.1f} s ({args.log_records / prod_s:,.0f}/s); "
                  f"read all {total} from the beginning in {secs:.1f} s ({n / secs:,.0f}/s, complete: {n == total})")
            for p in parts:
                p.close()
    finally:
        broker.stop()
        if s3 is not None:
            s3.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=600.0, help="seconds of live load (default 600)")
    ap.add_argument("--rate", type=float, default=100.0, help="trades/s (default 100)")
    ap.add_argument("--log-records", type=int, default=1_000_000, help="records of the big-log phase (0: skip)")
    ap.add_argument("--brokers", default="s3,memory", help="s3,memory (default both)")
    ap.add_argument("--live-wait", type=int, default=0,
                    help="override the reader's fetch.wait.max.ms at the high watermark (ms; default: the reader's)")
    ap.add_argument("--linger", type=int, default=-1, help="override the producer's linger.ms")
    args = ap.parse_args()
    if args.linger >= 0:
        PRODUCER["linger.ms"] = args.linger
    if args.live_wait:
        LIVE_WAIT["fetch.wait.max.ms"] = args.live_wait
    for kind in args.brokers.split(","):
        run(kind.strip(), args)


if __name__ == "__main__":
    main()
