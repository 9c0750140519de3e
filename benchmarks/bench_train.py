"""Training benchmark: 30 days of candles at the default window (10 s) for 2 symbols
(518,400 rows) through `tickcast train` (dataset, Lasso, Optuna-tuned XGBoost, River
progressive), timed end to end; target < 5 minutes on a 2-core machine (``--days 365``,
6.3M rows: < 15 minutes and < 8 GiB peak memory, issue 14). Also reports the
dataset-building rate (rows/s), the time of every training phase (read, dataset,
each candidate, the online pass, report; ``models.train.Phases``; ``xgboost final fit`` is part
of ``xgboost``) with its share of
the training time, and the process's peak resident memory after each step.

Candles are a simulated random walk with a weak order-flow signal; features come from
the same feature code as the stream.

The news case beside it: simulated BTC/USD news (``--news-rate`` items per hour, 30 by
default) in the ``news`` table; the point-in-time join of the ``news`` group onto the
BTC/USD label rows is timed against building the dataset, and BTC/USD is trained again
with the ``news`` group (the ablation refits Lasso and XGBoost with the news inputs, on
the same folds), timed against the price-only training of the same symbol.

    python benchmarks/bench_train.py [--days 30] [--trials 12] [--news-rate 30] [--no-news] [--progress]

``--no-news`` skips the news case (news items, their join and training BTC/USD a third
time with them: for long spans);
``--progress`` shows ``tickcast train``'s progress output (fold lines, tuning bars, a
heartbeat every 20 s of a long phase).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from itertools import islice
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def candles(symbol: str, n: int, seed: int, price: float) -> Iterator[Any]:
    """``n`` consecutive 10-s candles, one at a time (a year of Candle objects at once
    would take GBs and set the process's peak memory, not the training's)."""
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
    for i in range(n):
        hi, lo = max(opn[i], close[i]), min(opn[i], close[i])
        yield Candle(symbol, start + i * w, start + (i + 1) * w, float(opn[i]), float(hi), float(lo),
                          float(close[i]), float(buy[i] + sell[i]), float((opn[i] + close[i]) / 2), 10,
                          float(buy[i]), float(sell[i]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--days", type=float, default=30)
    ap.add_argument("--trials", type=int, default=12)
    ap.add_argument("--news-rate", type=float, default=30.0)
    ap.add_argument("--no-news", action="store_true", help="skip the news case")
    ap.add_argument("--progress", action="store_true", help="show the training progress output")
    args = ap.parse_args()
    import json
    import resource

    def peak() -> str:
        return f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB"

    from models.dataset import build_dataset, join_groups, load_features
    from models.train import Phases, TrainConfig, train_symbol
    from tickcast.features import FeatureState
    from tickcast.groups import extra_groups
    from tickcast.news.sim import simulate_news
    from tickcast.stores.offline import LakeStore
    from tickcast.stores.tables import features_to_arrow, rows_to_arrow

    n = int(args.days * 86_400 / 10)
    work = Path(tempfile.mkdtemp(prefix="tickcast-trainbench-"))
    try:
        store = LakeStore(work / "offline")
        store.ensure_schema()
        t0 = time.perf_counter()
        for sym, seed, price in (("BTC/USD", 1, 60_000.0), ("ETH/USD", 2, 3_000.0)):
            state, gen = FeatureState(10), candles(sym, n, seed, price)
            while chunk := [state.update(c) for c in islice(gen, 259_200)]:  # 30 days per insert
                store.insert("features", features_to_arrow(chunk))
        start = 1_767_225_600_000_000
        items = [] if args.no_news else simulate_news(["BTC/USD"], start, start + n * 10_000_000, seed=3,
                                                      rate_per_hour=args.news_rate)
        if items:
            store.insert("news", rows_to_arrow("news", [
                {"id": it.id, "published_at": it.published_at_us, "available_at": it.available_at_us,
                 "source": it.source, "title": it.title, "symbols": ",".join(it.symbols),
                 "sentiment": it.sentiment, "scorer": it.scorer,
                 "sentiments": json.dumps(dict(zip(it.symbols, it.sentiments, strict=True)))}
                for it in items]))
        print(f"prepared {2 * n:,} feature rows and {len(items):,} news items in {time.perf_counter() - t0:.1f} s "
              f"({peak()})", flush=True)
        t0 = time.perf_counter()
        df = load_features(store, ["BTC/USD"], None, None)
        t_load = time.perf_counter() - t0
        t0 = time.perf_counter()
        ds = build_dataset(df, 60_000_000, 10_000_000)
        t_build = time.perf_counter() - t0
        print(f"dataset: read {len(df):,} rows in {t_load:.2f} s, built in {t_build:.2f} s "
              f"({len(df) / (t_load + t_build):,.0f} rows/s end to end)")
        if not args.no_news:
            t0 = time.perf_counter()
            _, cols = join_groups(ds, store, "BTC/USD", extra_groups(["news"]), None, None)
            t_join = time.perf_counter() - t0
            assert cols, "the news join found no items"
            print(f"news join: {len(ds):,} label rows in {t_join:.2f} s ({len(ds) / t_join:,.0f} rows/s; "
                  f"{t_join / (t_load + t_build):.2f}x the price dataset's read + build)", flush=True)
        del df, ds
        cfg = TrainConfig(horizon_seconds=60, window_seconds=10, n_trials=args.trials, progress=args.progress,
                          groups=("price",))
        t0 = time.perf_counter()
        per: dict[str, float] = {}
        phases = Phases()
        for sym in ("BTC/USD", "ETH/USD"):
            t1 = time.perf_counter()
            mine = Phases()
            rep = train_symbol(store, None, sym, None, None, cfg, mine)
            per[sym] = time.perf_counter() - t1
            for k, v in mine.seconds.items():
                phases.seconds[k] = phases.seconds.get(k, 0.0) + v
            best = min(rep["models"], key=lambda m: m["mae"])
            print(f"  {sym}: best {best['name']} skill {best['skill_vs_persistence']:+.4f} ({per[sym]:.0f} s: "
                  + ", ".join(f"{k} {v:.0f}" for k, v in mine.seconds.items()) + f"; {peak()})", flush=True)
        total = time.perf_counter() - t0
        target = "target < 900 s, < 8 GiB; " if args.days >= 365 else "target < 300 s; " if args.days == 30 else ""
        print(f"training 2 symbols x {args.days:g} days at 10-s candles: {total:.0f} s ({target}{peak()})")
        print("  by phase, both symbols: " + ", ".join(f"{k} {v:.0f} s ({v / total:.0%})"
                                                    for k, v in phases.seconds.items()))
        if args.no_news:
            return
        t0 = time.perf_counter()
        rep = train_symbol(store, None, "BTC/USD", None, None,
                           TrainConfig(horizon_seconds=60, window_seconds=10, n_trials=args.trials,
                                       progress=args.progress, groups=("price", "news")))
        t_news = time.perf_counter() - t0
        abl = ", ".join(f"{a['model']} p={a['dm_p_value']:.2f}" for a in rep["ablation"] if a["mae_with"] is not None)
        print(f"news case: BTC/USD with the news group and its ablation: {t_news:.0f} s "
              f"({t_news / per['BTC/USD']:.2f}x price-only; news unrelated to these prices: {abl})")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
