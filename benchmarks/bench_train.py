"""Training benchmark: 30 days of candles at the default window (10 s) for 2 symbols
(518,400 rows) through `tickcast train` (dataset, Lasso, Optuna-tuned XGBoost, River
progressive), timed end to end; target < 5 minutes on a 2-core machine. Also reports
the dataset-building rate (rows/s) and, as a same-run reference, the time of the
persistence baseline alone.

Candles are a simulated random walk with a weak order-flow signal; features come from
the same feature code as the stream.

    python benchmarks/bench_train.py [--days 30] [--trials 12]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def candles(symbol: str, n: int, seed: int, price: float) -> list:  # type: ignore[type-arg]
    import numpy as np

    from tickcast.schema import Candle

    rng = np.random.default_rng(seed)
    w = 10_000_000
    start = 1_767_225_600_000_000
    buy = rng.exponential(1.0, n)
    sell = rng.exponential(1.0, n)
    ofi = (buy - sell) / (buy + sell)
    r = rng.normal(0, 2.5e-4, n) + 2e-5 * np.concatenate(([0.0], ofi[:-1]))
    close = price * np.exp(np.cumsum(r))
    opn = np.concatenate(([price], close[:-1]))
    out = []
    for i in range(n):
        hi, lo = max(opn[i], close[i]), min(opn[i], close[i])
        out.append(Candle(symbol, start + i * w, start + (i + 1) * w, float(opn[i]), float(hi), float(lo),
                          float(close[i]), float(buy[i] + sell[i]), float((opn[i] + close[i]) / 2), 10,
                          float(buy[i]), float(sell[i])))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--days", type=float, default=30)
    ap.add_argument("--trials", type=int, default=12)
    args = ap.parse_args()
    from models.dataset import build_dataset, load_features
    from models.train import TrainConfig, train_symbol
    from tickcast.features import compute_features
    from tickcast.stores.offline import LakeStore
    from tickcast.stores.tables import features_to_arrow

    n = int(args.days * 86_400 / 10)
    work = Path(tempfile.mkdtemp(prefix="tickcast-trainbench-"))
    try:
        store = LakeStore(work / "offline")
        store.ensure_schema()
        t0 = time.perf_counter()
        for sym, seed, price in (("BTC/USD", 1, 60_000.0), ("ETH/USD", 2, 3_000.0)):
            store.insert("features", features_to_arrow(compute_features(candles(sym, n, seed, price), 10)))
        print(f"prepared {2 * n:,} feature rows in {time.perf_counter() - t0:.1f} s")
        t0 = time.perf_counter()
        df = load_features(store, ["BTC/USD"], None, None)
        t_load = time.perf_counter() - t0
        t0 = time.perf_counter()
        build_dataset(df, 60_000_000, 10_000_000)
        t_build = time.perf_counter() - t0
        print(f"dataset: read {len(df):,} rows in {t_load:.2f} s, built in {t_build:.2f} s "
              f"({len(df) / (t_load + t_build):,.0f} rows/s end to end)")
        cfg = TrainConfig(horizon_seconds=60, window_seconds=10, n_trials=args.trials, progress=False)
        t0 = time.perf_counter()
        for sym in ("BTC/USD", "ETH/USD"):
            rep = train_symbol(store, None, sym, None, None, cfg)
            best = min(rep["models"], key=lambda m: m["mae"])
            print(f"  {sym}: best {best['name']} skill {best['skill_vs_persistence']:+.4f}")
        total = time.perf_counter() - t0
        print(f"training 2 symbols x {args.days:g} days at 10-s candles: {total:.0f} s (target < 300 s)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
