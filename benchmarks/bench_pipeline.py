"""Replay benchmark: N simulated trades through the full feature pipeline.

Measures, in the same run and on the same file:
  * full   — ``python -m bytewax.run dataflows.features`` with TICKCAST_SOURCE=replay:
             parse -> candles -> features -> offline store (Parquet lake) + online store
             (a real Valkey server), 1 worker;
  * full, learning off — the same with TICKCAST_ONLINE_MODEL=off (the cost of online
             learning: the target is at most a 20 % drop). Both are also run on a
             200-trade replay, and the drop is printed whole-process and net of that
             start-up (importing river alone takes ~1 s);
  * minimal — ``benchmarks/minimal_flow.py``: the same parser, Bytewax fold_window
             OHLC, no features, no sinks (the reference).
Prints trades/s of both and the ratio full/minimal. Both timings are whole
processes (interpreter start included), best of --repeat runs.

    python benchmarks/bench_pipeline.py [--trades 1000000] [--repeat 1]
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trades", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--window", type=int, default=10)
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = ap.parse_args()

    from tickcast.sim import write_replay
    from tickcast.stores.offline import open_offline

    work = Path(tempfile.mkdtemp(prefix="tickcast-bench-"))
    replay = work / "replay.jsonl"
    t0 = time.perf_counter()
    write_replay(replay, args.trades, ["BTC/USD", "ETH/USD"], seed=1)
    print(f"generated {args.trades:,} trades in {time.perf_counter() - t0:.1f} s "
          f"({replay.stat().st_size / 1e6:.0f} MB)")

    from tickcast.embedded import ensure_valkey, stop_valkey

    redis_url = ensure_valkey(work)
    base = {k: v for k, v in os.environ.items() if not k.startswith(("TICKCAST_", "BYTEWAX_"))}
    base.update(TICKCAST_WINDOW_SECONDS=str(args.window), TICKCAST_SYMBOLS="BTC/USD,ETH/USD",
                TICKCAST_REDIS_URL=redis_url, TICKCAST_DATA_DIR=str(work))
    tiny = work / "tiny.jsonl"
    write_replay(tiny, 200, ["BTC/USD", "ETH/USD"], seed=1)
    try:
        full_t, min_t, off_t, tiny_on, tiny_off = [], [], [], [], []
        for i in range(args.repeat):
            # start-up alone (interpreter, imports - river's is ~1 s -, stores, models): 200 trades
            for times, model in ((tiny_on, "linear"), (tiny_off, "off")):
                times.append(timed([sys.executable, "-m", "bytewax.run", "dataflows.features"],
                                   dict(base, TICKCAST_SOURCE=f"replay:{tiny}", TICKCAST_ONLINE_MODEL=model,
                                        TICKCAST_CLICKHOUSE_URL=f"chdb://{work / f'tiny-{model}{i}'}")))
            lake = work / f"offline{i}"
            env = dict(base, TICKCAST_SOURCE=f"replay:{replay}", TICKCAST_CLICKHOUSE_URL=f"chdb://{lake}")
            full_t.append(timed([sys.executable, "-m", "bytewax.run", "dataflows.features"], env))
            env_off = dict(env, TICKCAST_ONLINE_MODEL="off", TICKCAST_CLICKHOUSE_URL=f"chdb://{lake}-off")
            off_t.append(timed([sys.executable, "-m", "bytewax.run", "dataflows.features"], env_off))
            store = open_offline(f"chdb://{lake}", read_only=True)
            n = store.query("SELECT sum(trades), count() FROM candles").result_rows[0]
            nf = store.query("SELECT count() FROM features").result_rows[0][0]
            store.close()
            if n[0] != args.trades:
                raise SystemExit(f"full pipeline counted {n[0]} trades, expected {args.trades}")
            env = dict(base, BENCH_REPLAY=str(replay))
            min_t.append(timed([sys.executable, "-m", "bytewax.run", "benchmarks.minimal_flow"], env))
        full, ref, off = min(full_t), min(min_t), min(off_t)
        net_on, net_off = full - min(tiny_on), off - min(tiny_off)
        print(f"full pipeline   : {full:6.2f} s  {args.trades / full:10,.0f} trades/s  "
              f"({n[1]:,} candles, {nf:,} feature rows written, online learning on)")
        print(f"learning off    : {off:6.2f} s  {args.trades / off:10,.0f} trades/s  "
              f"(throughput drop with learning on: {1 - off / full:.1%} whole process)")
        print(f"net of start-up : learning on {args.trades / net_on:10,.0f} trades/s, off "
              f"{args.trades / net_off:10,.0f} trades/s -> drop {1 - net_off / net_on:.1%} (target <= 20 %); "
              f"start-up {min(tiny_on):.2f} s on, {min(tiny_off):.2f} s off")
        print(f"minimal Bytewax : {ref:6.2f} s  {args.trades / ref:10,.0f} trades/s  (parse+window+OHLC, no sinks)")
        print(f"ratio full/minimal throughput: {ref / full:.2f}   (targets: >= 100,000 trades/s, ratio >= 0.6)")
    finally:
        stop_valkey(work)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
