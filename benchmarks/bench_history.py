"""History benchmark: do the embedded store's queries stay flat as history grows?

Builds two embedded offline stores (Parquet lakes) through the store's own write
interface (``OfflineStore.insert``, one call per symbol and day, as a long-running flow's
compacted parts would hold them): 10-s candles and feature rows of 2 symbols for
``--short`` days (31) and for ``--long`` days (365: ~6.3M rows per table). The values are a
random walk with random features (query cost does not depend on them); predictions and
model metrics cover the newest day only. Then times, on both, best of ``--repeat``:

  * dashboard — ``api.dashboard.build`` for the newest hour (every query the page makes);
  * newest    — the newest feature row of one symbol (``OfflineStore.newest``; also timed
                as plain SQL on the view, ``newest_sql``: ``SELECT * FROM features WHERE
                symbol = … ORDER BY ts DESC LIMIT 1``, which has no time bound, for comparison);
  * train     — training's read of the newest 30 days of one symbol
                (``models.dataset.load_features``);
and prints each long/short ratio (target: <= 2) plus the write throughput.

    python benchmarks/bench_history.py [--short 31] [--long 365] [--repeat 3] [--keep DIR]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import common  # noqa: F401  (puts the repository on sys.path)
import numpy as np
import pyarrow as pa

SYMBOLS = ("BTC/USD", "ETH/USD")
WINDOW_S = 10
DAY_US = 86_400_000_000
END_US = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z: the newest candle ends here


def day_tables(symbol: str, day_start_us: int, price0: float, rng: np.random.Generator,
               ) -> tuple[pa.Table, pa.Table, float]:
    from tickcast.features import FEATURE_NAMES, feature_set_version

    n = DAY_US // (WINDOW_S * 1_000_000)
    start = day_start_us + np.arange(n, dtype=np.int64) * WINDOW_S * 1_000_000
    end = start + WINDOW_S * 1_000_000
    close = price0 * np.exp(np.cumsum(rng.normal(0, 2e-4, n)))
    open_ = np.concatenate([[price0], close[:-1]])
    vol = rng.exponential(0.5, n)
    buy = vol * rng.uniform(0, 1, n)
    sym = pa.array([symbol] * n, pa.string())
    ts = pa.array(end, pa.int64()).cast(pa.timestamp("us", tz="UTC"))
    candles = pa.table({
        "symbol": sym, "window_start": pa.array(start, pa.int64()).cast(pa.timestamp("us", tz="UTC")),
        "window_end": ts, "open": open_, "high": np.maximum(open_, close) * 1.0001,
        "low": np.minimum(open_, close) * 0.9999, "close": close, "volume": vol, "vwap": (open_ + close) / 2,
        "trades": pa.array(rng.integers(0, 500, n), pa.uint32()), "buy_volume": buy, "sell_volume": vol - buy,
    })
    feats: dict[str, Any] = {"symbol": sym, "ts": ts, "close": close}
    for name in FEATURE_NAMES:
        feats[name] = rng.normal(0, 1, n)
    feats["feature_set_version"] = pa.array([feature_set_version(WINDOW_S)] * n, pa.string())
    return candles, pa.table(feats), float(close[-1])


def newest_day_learning(store: Any, end_us: int, rng: np.random.Generator) -> None:
    """Predictions and model metrics of the newest day (what the dashboard plots)."""
    n = DAY_US // (WINDOW_S * 1_000_000)
    ts = end_us - DAY_US + (np.arange(n, dtype=np.int64) + 1) * WINDOW_S * 1_000_000
    for symbol in SYMBOLS:
        price = rng.uniform(100, 200, n)
        store.insert("predictions", pa.table({
            "symbol": [symbol] * n, "ts": pa.array(ts).cast(pa.timestamp("us", tz="UTC")),
            "model_version": ["river-linear-online"] * n, "horizon_seconds": pa.array([60] * n, pa.uint32()),
            "predicted_price": price, "model_kind": ["online:linear"] * n, "price_at_ts": price}))
        for model in ("river-linear", "persistence", "mean_last_10"):
            store.insert("model_metrics", pa.table({
                "symbol": [symbol] * n, "ts": pa.array(ts).cast(pa.timestamp("us", tz="UTC")),
                "model_name": [model] * n, "horizon_seconds": pa.array([60] * n, pa.uint32()),
                "n": np.arange(n), "mae": rng.uniform(1, 2, n), "rmse": rng.uniform(1, 3, n),
                "mae_recent": rng.uniform(1, 2, n)}))


def build(url: str, days: int, seed: int = 7) -> tuple[float, int]:
    """Fill a store with ``days`` of history ending at END_US; returns (seconds, rows per table)."""
    from tickcast.stores.offline import open_offline

    rng = np.random.default_rng(seed)
    store = open_offline(url)
    store.ensure_schema()
    prices = {"BTC/USD": 60_000.0, "ETH/USD": 3_000.0}
    rows = 0
    t0 = time.perf_counter()
    for d in range(days):
        day = END_US - (days - d) * DAY_US
        for s in SYMBOLS:
            candles, feats, prices[s] = day_tables(s, day, prices[s], rng)
            store.insert("candles", candles)
            store.insert("features", feats)
            rows += candles.num_rows
    newest_day_learning(store, END_US, rng)
    dt = time.perf_counter() - t0
    store.close()
    return dt, rows


def timings(url: str, repeat: int) -> dict[str, float]:
    from api.dashboard import build as dashboard_build
    from models.dataset import load_features
    from tickcast.stores.offline import open_offline

    store = open_offline(url, read_only=True)
    settings = SimpleNamespace(window_seconds=WINDOW_S, symbols=list(SYMBOLS), horizon_seconds=60)
    out: dict[str, list[float]] = {"dashboard": [], "newest": [], "newest_sql": [], "train": []}
    try:
        store.query("SELECT 1")  # the session, outside the timings
        for _ in range(repeat):
            t = time.perf_counter()
            payload = dashboard_build(store, settings, "BTC/USD", 60)
            out["dashboard"].append(time.perf_counter() - t)
            if len(payload["series"]["price"]) < 300 or not payload["series"]["mae_online"]:
                raise SystemExit(f"dashboard payload incomplete on {url}")
            t = time.perf_counter()
            row = store.newest("features", "ETH/USD")
            out["newest"].append(time.perf_counter() - t)
            if row is None or int(row["ts"].timestamp() * 1e6) != END_US:
                raise SystemExit(f"newest row wrong on {url}: {row}")
            t = time.perf_counter()
            rows = store.query("SELECT * FROM features WHERE symbol = {s:String} ORDER BY ts DESC LIMIT 1",
                               {"s": "ETH/USD"}).result_rows
            out["newest_sql"].append(time.perf_counter() - t)
            if [*row.values()] != list(rows[0]):
                raise SystemExit(f"newest() and the SQL disagree on {url}")
            t = time.perf_counter()
            df = load_features(store, ["BTC/USD"], END_US - 30 * DAY_US, None)
            out["train"].append(time.perf_counter() - t)
            if len(df) != 30 * DAY_US // (WINDOW_S * 1_000_000) + 1:  # since is inclusive
                raise SystemExit(f"training read {len(df)} rows on {url}")
    finally:
        store.close()
    return {k: min(v) for k, v in out.items()} | {k + "_median": statistics.median(v) for k, v in out.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--short", type=int, default=31)
    ap.add_argument("--long", type=int, default=365)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--keep", type=Path, help="build (or reuse) the stores under this directory and keep them")
    args = ap.parse_args()

    work = args.keep or Path(tempfile.mkdtemp(prefix="tickcast-history-"))
    try:
        res: dict[int, dict[str, float]] = {}
        for days in (args.short, args.long):
            lake = work / f"lake-{days}d"
            url = f"chdb://{lake.resolve()}"
            if not lake.exists():
                dt, rows = build(url, days)
                size = sum(p.stat().st_size for p in lake.rglob("*.parquet"))
                print(f"{days:4d} days: wrote {rows:,} candles + {rows:,} feature rows in {dt:.1f} s "
                      f"({2 * rows / dt:,.0f} rows/s), {size / 1e6:.0f} MB, "
                      f"{sum(1 for _ in (lake / 'features').glob('**/*.parquet'))} feature parts")
            res[days] = timings(url, args.repeat)
        s, lg = res[args.short], res[args.long]
        print(f"\n{'query':10s} {args.short:>6d} d (ms) {args.long:>6d} d (ms)  ratio  (target <= 2; best of {args.repeat})")
        for k in ("dashboard", "newest", "train", "newest_sql"):
            print(f"{k:10s} {s[k] * 1e3:12.1f} {lg[k] * 1e3:12.1f}  {lg[k] / s[k]:5.2f}")
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
