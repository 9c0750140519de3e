"""The news ablation's decision, measured by simulation: how often does `tickcast train`
say "news helps" (an ablation row significant after Holm, and a ``+news`` model
promoted) when it does (planted effect), and when it does not (control)?

For every seed: simulated BTC/USD news (tickcast.news.sim, ``--rate`` items per hour)
and prices from the market simulator over ``--hours``; the price features come from the
batch driver of the feature pipeline (tickcast.pipeline.run_batch), prices and news go
into a scratch embedded lake, and models.train.train_symbol runs the whole training path
(walk-forward folds, tuning, ablation, gate) in this process.

* **planted**: the mid drifts by ``sentiment * effect`` bps per item, decaying with a
  2-minute time constant (tickcast.news.sim.planted_drift). Each ``--effects`` value is
  one arm: the rate of "news helps" is the decision's power at that strength.
* **control**: the mid drifts just as much, but with the news of another seed, which the
  lake does not hold: the news the models see is unrelated to prices. Every "news
  helps" is a false positive. Target: at most 5 % (alpha).

    python benchmarks/bench_news_ablation.py [--seeds 8] [--effects 20,40] [--hours 7]
        [--rate 30] [--trials 2] [--first-seed 100] [--control-only] [--out runs.jsonl]
    python benchmarks/bench_news_ablation.py --summarise runs.jsonl

The machine is shared: this measures decisions, not speed.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import REPO  # noqa: F401  (puts the repository on sys.path)

from models.train import TrainConfig, train_symbol
from tickcast.news.sim import planted_drift, simulate_news
from tickcast.pipeline import run_batch
from tickcast.sim import DEFAULT_START_US, MarketSimulator, SimParams
from tickcast.stores.offline import LakeStore
from tickcast.stores.tables import features_to_arrow, rows_to_arrow

HOUR_US = 3_600_000_000


def one_run(seed: int, effect: float, planted: bool, hours: float, rate: float, trials: int) -> dict[str, Any]:
    end = DEFAULT_START_US + int(hours * HOUR_US)
    items = simulate_news(["BTC/USD"], DEFAULT_START_US, end, seed=seed, rate_per_hour=rate)
    movers = items if planted else simulate_news(["BTC/USD"], DEFAULT_START_US, end, seed=seed + 10_000,
                                                 rate_per_hour=rate)
    sim = MarketSimulator(["BTC/USD"], seed=seed, params=SimParams(rate=5, spread_bps=0.0),
                          drift=planted_drift(movers, effect))
    feats = run_batch(sim.until(end), 10, 0.0).features
    with tempfile.TemporaryDirectory() as d:
        store = LakeStore(Path(d) / "lake")
        store.ensure_schema()
        store.insert("features", features_to_arrow(feats))
        store.insert("news", rows_to_arrow("news", [
            {"id": it.id, "published_at": it.published_at_us, "available_at": it.available_at_us,
             "source": it.source, "title": it.title, "symbols": ",".join(it.symbols), "sentiment": it.sentiment,
             "sentiments": json.dumps(dict(zip(it.symbols, it.sentiments, strict=True))), "scorer": it.scorer}
            for it in items]))
        t0 = time.perf_counter()
        rep = train_symbol(store, None, "BTC/USD", None, None, TrainConfig(n_trials=trials, progress=False))
        store.close()
    learned = [a for a in rep["ablation"] if a["mae_with"] is not None]
    best = min((m for m in rep["models"] if "gate" in m), key=lambda m: m["mae"])
    passing = [m for m in rep["models"] if m.get("gate", {}).get("promotable")]
    chosen = min(passing, key=lambda m: m["mae"])["name"] if passing else None
    return {"seed": seed, "arm": f"planted-{effect:g}" if planted else f"control-{effect:g}",
            "significant": {a["model"]: a["significant"] for a in learned},
            "p_holm": {a["model"]: a["dm_p_holm"] for a in learned},
            "news_helps": any(a["significant"] for a in learned),
            "promoted": chosen, "news_promoted": bool(chosen and chosen.endswith("+news")),
            "best": best["name"], "train_s": round(time.perf_counter() - t0, 1)}


def wilson(k: int, n: int) -> tuple[float, float]:
    if n == 0:
        return (0.0, 1.0)
    z, p = 1.96, k / n
    c = (p + z * z / (2 * n)) / (1 + z * z / n)
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, c - h), min(1.0, c + h))


def summarise(runs: list[dict[str, Any]]) -> str:
    lines = [f"{'arm':<14}{'runs':>6}{'news helps':>12}{'95% CI':>16}{'+news promoted':>16}"]
    for arm in sorted({r["arm"] for r in runs}):
        rs = [r for r in runs if r["arm"] == arm]
        k = sum(r["news_helps"] for r in rs)
        lo, hi = wilson(k, len(rs))
        lines.append(f"{arm:<14}{len(rs):>6}{k / len(rs):>12.2f}{f'[{lo:.2f}, {hi:.2f}]':>16}"
                     f"{sum(r['news_promoted'] for r in rs) / len(rs):>16.2f}")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=8)
    ap.add_argument("--effects", default="20,40")
    ap.add_argument("--hours", type=float, default=7.0)
    ap.add_argument("--rate", type=float, default=30.0)
    ap.add_argument("--trials", type=int, default=2)
    ap.add_argument("--first-seed", type=int, default=100)
    ap.add_argument("--control-only", action="store_true", help="only the control arm (false-positive rate)")
    ap.add_argument("--summarise", default="", help="print the table of a finished or partial --out file")
    ap.add_argument("--out", default="")
    a = ap.parse_args()
    if a.summarise:
        print(summarise([json.loads(line) for line in Path(a.summarise).read_text().splitlines() if line.strip()]))
        return
    effects = [float(x) for x in a.effects.split(",")]
    runs = []
    out = open(a.out, "a") if a.out else None  # noqa: SIM115
    for seed in range(a.first_seed, a.first_seed + a.seeds):
        arms = ([] if a.control_only else [(e, True) for e in effects]) + [(max(effects), False)]
        for effect, planted in arms:
            r = one_run(seed, effect, planted, a.hours, a.rate, a.trials)
            runs.append(r)
            print(json.dumps(r), file=sys.stderr, flush=True)
            if out:
                out.write(json.dumps(r) + "\n")
                out.flush()
    print(summarise(runs))


if __name__ == "__main__":
    main()
