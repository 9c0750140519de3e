"""Online learning: cost per row and the accuracy cost of learning in mini-batches.

Cost — predict + learn of the default model (``linear``: Bayesian linear regression in
numpy, mini-batches of 12 labels) with the full feature set, rows handed over as the
feature flow does (67 rows per call, a thin-market replay batch; 1 row per call, live),
against a reference measured in the same run: River's own ``StandardScaler |
BayesianLinearRegression``, one dict at a time (what the flow ran before).

Accuracy — the price of mini-batches: skill (1 - MAE / MAE of persistence, on the same
matured labels) of the default model learning every 12 labels vs every label (same
model, same rows), on simulated markets without a signal and with a planted order-flow
signal, over several seeds.

    python benchmarks/bench_online.py [--rows 20000] [--seeds 4]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=20_000)
    ap.add_argument("--seeds", type=int, default=4)
    args = ap.parse_args()
    from river import linear_model, preprocessing

    import tickcast.learner as online
    from tickcast.pipeline import run_batch
    from tickcast.sim import MarketSimulator, SimParams

    trades = MarketSimulator(["BTC/USD"], seed=1, params=SimParams(rate=2.0)).next_trades(args.rows * 20)
    rows = run_batch(trades, 10, 0.0).features[: args.rows]  # real feature rows, learning off

    def run(block: int, **kw: object) -> tuple[float, int]:
        learner = online.OnlineLearner("BTC/USD", 60, "linear", snapshot_every=0, **kw)  # type: ignore[arg-type]
        t0 = time.process_time()
        for i in range(0, len(rows), block):
            learner.on_rows(rows[i:i + block])
        return time.process_time() - t0, learner.samples_seen

    dt, n = run(67)
    dt1, _ = run(1)
    original = online.make_model
    online.make_model = lambda kind, seed=42, names=(): (  # type: ignore[assignment]
        preprocessing.StandardScaler() | linear_model.BayesianLinearRegression(alpha=1.0, beta=1 / 60))
    try:
        ref, _ = run(1)
    finally:
        online.make_model = original
    us = 1e6 / len(rows)
    print(f"default model, 67 rows per call (replay): {dt * us:6.1f} CPU-us per row ({len(rows) / dt:9,.0f} rows/s; "
          f"{n:,} labels; target >= 10,000 rows/s)")
    print(f"default model, 1 row per call (live):     {dt1 * us:6.1f} CPU-us per row")
    print(f"reference: River StandardScaler|BayesianLinearRegression one dict at a time: {ref * us:6.1f} CPU-us "
          f"per row; ratio reference / default at 67 rows per call {ref / dt:.1f}x")

    print("\naccuracy of mini-batches (skill = 1 - MAE/MAE_persistence on the same labels; 10-s candles, 60-s labels)")
    for label, params in (("no signal (random walk)", SimParams(rate=3, spread_bps=0.0, flow_impact=0.0)),
                          ("order-flow signal 0.3", SimParams(rate=3, spread_bps=1.0, flow_impact=0.3)),
                          ("order-flow signal 2.0", SimParams(rate=3, spread_bps=1.0, flow_impact=2.0))):
        diffs, skills = [], {1: [], 12: []}  # type: ignore[var-annotated]
        for seed in range(args.seeds):
            tr = MarketSimulator(["BTC/USD"], seed=100 + seed, params=params).next_trades(250_000)
            feats = run_batch(tr, 10, 0.0).features
            for k in (1, 12):
                learner = online.OnlineLearner("BTC/USD", 60, "linear", snapshot_every=0, learn_every=k)
                learner.on_rows(feats)
                st = learner.stats
                skills[k].append(1 - st["river-linear"].abs_sum / st["persistence"].abs_sum)
            diffs.append(skills[12][-1] - skills[1][-1])
        print(f"  {label:26s} per label {statistics.mean(skills[1]):+.4f}  mini-batch 12 {statistics.mean(skills[12]):+.4f}"
              f"  difference {statistics.mean(diffs):+.4f} (min {min(diffs):+.4f}, max {max(diffs):+.4f}; "
              f"{args.seeds} seeds, ~{len(feats):,} 10-s rows each)")


if __name__ == "__main__":
    main()
