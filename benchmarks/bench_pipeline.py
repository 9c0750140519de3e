"""Replay benchmark: simulated trades through the full feature pipeline, on a dense and
a thin market.

Two cases, each on its own replay file, each against a reference measured in the same run:

  * dense — ``--trades`` (1,000,000) trades of 2 symbols at ~50 trades/s per symbol,
            10-s candles: ~500 trades per candle, where per-trade work dominates;
  * thin  — ``--thin-trades`` (600,000) trades of 3 symbols at 2 trades/s per symbol
            (~100,000 s of event time), 5-s candles: ~10 trades per candle, as real
            Kraken pairs mostly trade; here per-candle work (features, predictions,
            learning, metrics rows, drift, snapshots, Arrow conversion) dominates.

For each case:
  * full   — ``python -m bytewax.run dataflows.features`` with TICKCAST_SOURCE=replay:
             parse -> candles -> features -> online learning -> offline store (Parquet
             lake) + online store (a real Valkey server) + registry snapshots, 1 worker;
  * off    — the same with TICKCAST_ONLINE_MODEL=off (the cost of online learning:
             target at most +20 % time). Both are also run on a 200-trade replay, and
             the cost is printed whole-process and net of that start-up (importing
             river alone takes ~1 s);
  * minimal — ``benchmarks/minimal_flow.py``: the same parser, Bytewax fold_window OHLC,
             no features, no sinks (the reference; target: full >= 0.6x its throughput).
All timings are whole processes (interpreter start included), best of --repeat runs, as
CPU seconds (user + system; what the ratios use: on a shared machine the wall clock
mostly measures the neighbours) and wall seconds.

    python benchmarks/bench_pipeline.py [--trades 1000000] [--thin-trades 600000] [--repeat 1]
                                        [--case dense,thin]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from common import timed_cpu  # benchmarks/common.py (the script's directory is on sys.path)

FLOW = [sys.executable, "-m", "bytewax.run", "dataflows.features"]


@dataclass
class Case:
    name: str
    trades: int
    symbols: list[str]
    window: int
    rate: float  # mean trades/s per symbol


def run_case(case: Case, work: Path, base: dict[str, str], repeat: int) -> dict[str, float]:
    from tickcast.sim import SimParams, write_replay
    from tickcast.stores.offline import open_offline

    d = work / case.name
    d.mkdir()
    replay, tiny = d / "replay.jsonl", d / "tiny.jsonl"
    t0 = time.perf_counter()
    write_replay(replay, case.trades, case.symbols, seed=1, params=SimParams(rate=case.rate))
    write_replay(tiny, 200, case.symbols, seed=1, params=SimParams(rate=case.rate))
    print(f"[{case.name}] generated {case.trades:,} trades of {len(case.symbols)} symbols at {case.rate:g}/s each "
          f"in {time.perf_counter() - t0:.1f} s ({replay.stat().st_size / 1e6:.0f} MB), {case.window}-s candles")
    env0 = dict(base, TICKCAST_WINDOW_SECONDS=str(case.window), TICKCAST_SYMBOLS=",".join(case.symbols))
    runs: dict[str, list[tuple[float, float]]] = {k: [] for k in ("on", "off", "minimal", "tiny_on", "tiny_off")}
    for i in range(repeat):
        # start-up alone (interpreter, imports - river's is ~1 s -, stores, models): 200 trades
        for key, model in (("tiny_on", "linear"), ("tiny_off", "off")):
            runs[key].append(timed_cpu(FLOW, dict(env0, TICKCAST_SOURCE=f"replay:{tiny}", TICKCAST_ONLINE_MODEL=model,
                                                  TICKCAST_CLICKHOUSE_URL=f"chdb://{d / f'tiny-{model}{i}'}")))
        lake = d / f"offline{i}"
        env = dict(env0, TICKCAST_SOURCE=f"replay:{replay}", TICKCAST_CLICKHOUSE_URL=f"chdb://{lake}",
                   TICKCAST_MODEL_STORE=f"file://{d / f'models{i}'}")
        runs["on"].append(timed_cpu(FLOW, env))
        runs["off"].append(timed_cpu(FLOW, dict(env, TICKCAST_ONLINE_MODEL="off",
                                                TICKCAST_CLICKHOUSE_URL=f"chdb://{lake}-off")))
        runs["minimal"].append(timed_cpu([sys.executable, "-m", "bytewax.run", "benchmarks.minimal_flow"],
                                         dict(env0, BENCH_REPLAY=str(replay))))
        store = open_offline(f"chdb://{lake}", read_only=True)
        traded, candles = store.query("SELECT sum(trades), count() FROM candles").result_rows[0]
        preds = store.query("SELECT count() FROM predictions").result_rows[0][0]
        store.close()
        if traded != case.trades or not preds:
            raise SystemExit(f"[{case.name}] full pipeline counted {traded} trades and {preds} predictions, "
                             f"expected {case.trades} trades")
    wall = {k: min(w for w, _ in v) for k, v in runs.items()}
    cpu = {k: min(c for _, c in v) for k, v in runs.items()}
    on, off, ref = cpu["on"], cpu["off"], cpu["minimal"]
    net_on, net_off = on - cpu["tiny_on"], off - cpu["tiny_off"]
    n = case.trades
    print(f"[{case.name}] {candles:,} candles ({n / candles:,.0f} trades per candle), {preds:,} predictions")
    for label, k in (("full, learning on ", "on"), ("full, learning off", "off"), ("minimal Bytewax   ", "minimal")):
        print(f"[{case.name}] {label}: CPU {cpu[k]:6.2f} s ({n / cpu[k]:9,.0f} trades/CPU-s), wall {wall[k]:6.2f} s "
              f"({n / wall[k]:9,.0f} trades/s)  ratio to minimal: CPU {ref / cpu[k]:.2f}, "
              f"wall {wall['minimal'] / wall[k]:.2f}")
    print(f"[{case.name}] learning costs {on / off - 1:+.1%} CPU whole-process, {net_on / net_off - 1:+.1%} net of "
          f"start-up (start-up CPU {cpu['tiny_on']:.2f} s on, {cpu['tiny_off']:.2f} s off); wall "
          f"{wall['on'] / wall['off'] - 1:+.1%}; targets: <= +20 %, ratio >= 0.6")
    return {"on": on, "off": off, "minimal": ref, "net_on": net_on, "net_off": net_off, "candles": candles,
            "wall_on": wall["on"], "wall_off": wall["off"], "wall_minimal": wall["minimal"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trades", type=int, default=1_000_000, help="dense case")
    ap.add_argument("--thin-trades", type=int, default=600_000, help="thin case")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--case", default="dense,thin", help="comma-separated: dense, thin")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = ap.parse_args()

    cases = {"dense": Case("dense", args.trades, ["BTC/USD", "ETH/USD"], 10, 50.0),
             "thin": Case("thin", args.thin_trades, ["BTC/USD", "ETH/USD", "SOL/USD"], 5, 2.0)}
    chosen = [c.strip() for c in args.case.split(",") if c.strip()]
    unknown = set(chosen) - set(cases)
    if unknown:
        raise SystemExit(f"--case: unknown {', '.join(sorted(unknown))}; known: dense, thin")

    from tickcast.embedded import ensure_valkey, stop_valkey

    work = Path(tempfile.mkdtemp(prefix="tickcast-bench-"))
    redis_url = ensure_valkey(work)
    base = {k: v for k, v in os.environ.items() if not k.startswith(("TICKCAST_", "BYTEWAX_"))}
    base.update(TICKCAST_REDIS_URL=redis_url, TICKCAST_DATA_DIR=str(work))
    try:
        results = {name: run_case(cases[name], work, base, args.repeat) for name in chosen}
        print()
        print("CPU time; case  trades/candle  on/minimal  off/minimal  learning cost (whole / net of start-up)"
              "  | wall: on/minimal  learning cost")
        for name, r in results.items():
            c = cases[name]
            print(f"{name:6s} {c.trades / r['candles']:13,.0f}  {r['minimal'] / r['on']:10.2f}  "
                  f"{r['minimal'] / r['off']:11.2f}  {r['on'] / r['off'] - 1:+.1%} / {r['net_on'] / r['net_off'] - 1:+.1%}"
                  f"  | {r['wall_minimal'] / r['wall_on']:.2f}  {r['wall_on'] / r['wall_off'] - 1:+.1%}")
    finally:
        stop_valkey(work)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
