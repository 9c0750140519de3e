"""Online learning throughput: predict + learn per second of the default River model
with the full feature set, against a reference measured in the same run (the same
loop with River's plain `LinearRegression`, the cheapest River regressor).

    python benchmarks/bench_online.py [--rows 20000]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=20_000)
    args = ap.parse_args()
    from river import linear_model, preprocessing

    import tickcast.learner as online
    from tickcast.pipeline import run_batch
    from tickcast.sim import MarketSimulator, SimParams

    trades = MarketSimulator(["BTC/USD"], seed=1, params=SimParams(rate=2.0)).next_trades(args.rows * 20)
    rows = run_batch(trades, 10, 0.0).features[: args.rows]  # real feature rows, learning off

    def run(kind: str) -> tuple[float, int]:
        learner = online.OnlineLearner("BTC/USD", 60, kind, snapshot_every=0)
        t0 = time.perf_counter()
        for r in rows:
            learner.on_row(r)
        return time.perf_counter() - t0, learner.samples_seen

    dt, n = run("linear")
    original = online.make_model
    online.make_model = lambda kind, seed=42: preprocessing.StandardScaler() | linear_model.LinearRegression()
    try:
        ref, _ = run("linear")
    finally:
        online.make_model = original
    print(f"default model (Bayesian linear): {len(rows) / dt:8,.0f} rows/s predict + learn "
          f"({n:,} labels learned; target >= 10,000/s)")
    print(f"reference (River LinearRegression): {len(rows) / ref:8,.0f} rows/s; ratio {ref / dt:.2f}")


if __name__ == "__main__":
    main()
