"""The promotion gate's error rate and power, measured by simulation through the whole
`tickcast train` path.

For every seed, the project's market simulator (tickcast/sim.py) generates BTC/USD and
ETH/USD trades for ``--hours`` of market time; the batch driver of the feature pipeline
(tickcast.pipeline.run_batch, the same code as the stream) turns them into features in
the embedded offline store of a scratch TICKCAST_DATA_DIR; then

    python -m tickcast.cli train --trials T --report r.json --quiet

runs as a separate process on that data dir (offline store, walk-forward folds, tuning,
gate, registry, training_runs row), and the promotion is read back from the registry
(the production-<SYMBOL> alias), not only from the report. Two symbols per run, so a
seed gives two symbol-runs.

* **Random walks** (``spread_bps=0, flow_impact=0``: the trade price is a driftless
  martingale, nothing can beat persistence except by chance): every promotion is a
  false promotion. Target: at most 5 %.
* **Planted signals** (``flow_impact`` > 0: the next minute's return depends on the
  last minute's order-flow imbalance), three strengths: the promotion rate is the
  gate's power.

Same-run reference: the naive rule the gate replaced (promote the best of the three
candidates when its own, uncorrected Diebold–Mariano p < 0.05 and its skill > 0),
applied to the same pooled out-of-sample results. A what-if table recomputes the
decisions for other minimum skills (TICKCAST_MIN_SKILL) from each candidate's recorded
checks, which is how the default was chosen.

    python benchmarks/bench_gate.py [--walk-seeds 40] [--planted-seeds 6]
        [--strengths 0.1,0.2,0.3] [--hours 6] [--trials 4] [--out runs.jsonl]
    python benchmarks/bench_gate.py --summarise runs.jsonl   # a partial or finished --out file

Runtime on 2 shared cores: ~25 s per seed (two symbols); the defaults (58 seeds, 116
symbol-runs) took 27 min. Small spans and 4 Optuna trials per fold keep it there.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import REPO

SYMBOLS = ("BTC/USD", "ETH/USD")
CANDIDATES = ("lasso", "xgboost", "online")
WHAT_IF_MIN_SKILL = (0.0, 0.001, 0.002, 0.005, 0.01)


def make_data(data_dir: Path, seed: int, hours: float, impact: float, rate: float) -> None:
    from tickcast.pipeline import run_batch
    from tickcast.sim import DEFAULT_START_US, MarketSimulator, SimParams
    from tickcast.stores.offline import LakeStore
    from tickcast.stores.tables import features_to_arrow

    sim = MarketSimulator(list(SYMBOLS), seed=seed,
                          params=SimParams(rate=rate, spread_bps=0.0, flow_impact=impact))
    trades = sim.until(DEFAULT_START_US + int(hours * 3600e6))
    out = run_batch(trades, 10, 0.0)
    store = LakeStore(data_dir / "offline")
    store.ensure_schema()
    store.insert("features", features_to_arrow(out.features))


def run_train(data_dir: Path, trials: int) -> list[dict[str, Any]]:
    """`tickcast train` as a user runs it; returns the reports with the registry's verdict."""
    from models.registry import production_alias, registry_from_settings
    from tickcast.config import Settings

    env = {k: v for k, v in os.environ.items() if not k.startswith("TICKCAST_")}
    env.update(TICKCAST_DATA_DIR=str(data_dir), TICKCAST_SYMBOLS=",".join(SYMBOLS))
    report = data_dir / "report.json"
    r = subprocess.run([sys.executable, "-m", "tickcast.cli", "train", "--trials", str(trials), "--report",
                        str(report), "--quiet"], cwd=REPO, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"tickcast train failed on {data_dir}:\n{r.stderr[-3000:]}")
    reports = json.loads(report.read_text())
    reports = reports if isinstance(reports, list) else [reports]
    if sorted(x["symbol"] for x in reports) != sorted(SYMBOLS):
        raise SystemExit(f"expected reports for {SYMBOLS}, got {[x['symbol'] for x in reports]}")
    registry = registry_from_settings(Settings.from_env(env))
    for rep in reports:
        alias = registry.get_alias(production_alias(rep["symbol"]))
        promoted = rep["promoted"]["name"] is not None
        if promoted != (alias is not None) or (alias is not None and alias["version"] != rep["promoted"]["version"]):
            raise SystemExit(f"report and registry disagree for {rep['symbol']}: {rep['promoted']} vs {alias}")
        rep["_registry_promoted"] = alias is not None
    return reports


def summarise(rep: dict[str, Any]) -> dict[str, Any]:
    cands = [m for m in rep["models"] if m["name"] in CANDIDATES]
    best = min(cands, key=lambda m: m["mae"])
    return {
        "symbol": rep["symbol"],
        "promoted": rep["_registry_promoted"],
        "promoted_name": rep["promoted"]["name"],
        "best_skill": best["skill_vs_persistence"],
        "naive": best["dm_p_value"] < 0.05 and best["skill_vs_persistence"] > 0,
        "candidates": [{"name": m["name"], "skill": m["skill_vs_persistence"], "p": m["dm_p_value"],
                        "p_holm": m["dm_p_holm"], "significant": m["gate"]["significant"],
                        "consistent": m["gate"]["consistent"], "constant": m["constant"],
                        "break_even_bps": m.get("break_even_bps")} for m in cands],
    }


def promoted_at(run: dict[str, Any], min_skill: float) -> bool:
    return any(c["significant"] and c["consistent"] and not c["constant"] and c["skill"] >= min_skill
               for c in run["candidates"])


def rate(k: int, n: int) -> str:
    from scipy.stats import binomtest

    if n == 0:
        return "n/a"
    ci = binomtest(k, n).proportion_ci(0.95, method="wilson")
    return f"{k:>3}/{n:<3} = {100 * k / n:5.1f} %  (95 % CI {100 * ci.low:4.1f}–{100 * ci.high:4.1f} %)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--walk-seeds", type=int, default=40, help="random-walk seeds (2 symbol-runs each)")
    ap.add_argument("--planted-seeds", type=int, default=6, help="seeds per planted strength (2 symbol-runs each)")
    ap.add_argument("--strengths", default="0.1,0.2,0.3", help="SimParams.flow_impact values (bps/s per unit OFI)")
    ap.add_argument("--hours", type=float, default=6.0, help="market hours simulated per seed (10-s candles)")
    ap.add_argument("--rate", type=float, default=5.0, help="simulated trades/s per symbol")
    ap.add_argument("--trials", type=int, default=4, help="Optuna trials per fold (tickcast train --trials)")
    ap.add_argument("--first-seed", type=int, default=1000)
    ap.add_argument("--out", help="append every symbol-run's summary to this JSON Lines file as it finishes")
    ap.add_argument("--summarise", metavar="FILE", help="only print the summary of a (partial) --out file")
    args = ap.parse_args()
    if args.summarise:
        results: dict[str, list[dict[str, Any]]] = {}
        for line in Path(args.summarise).read_text().splitlines():
            rec = json.loads(line)
            results.setdefault(rec["scenario"], []).append(rec)
        report(results, args, None)
        return
    strengths = [float(x) for x in args.strengths.split(",") if x.strip()]
    scenarios = [("random walk", 0.0, args.walk_seeds)] + [(f"planted {s:g}", s, args.planted_seeds) for s in strengths]

    results = {}
    t_all = time.perf_counter()
    t_train = 0.0
    n_train = 0
    for label, impact, n_seeds in scenarios:
        runs = results.setdefault(label, [])
        for i in range(n_seeds):
            seed = args.first_seed + i
            work = Path(tempfile.mkdtemp(prefix="tickcast-gatebench-"))
            try:
                make_data(work, seed, args.hours, impact, args.rate)
                t0 = time.perf_counter()
                reports = run_train(work, args.trials)
                t_train += time.perf_counter() - t0
                n_train += 1
            finally:
                shutil.rmtree(work, ignore_errors=True)
            for rep in reports:
                s = summarise(rep)
                s.update(seed=seed, scenario=label, impact=impact)
                runs.append(s)
                if args.out:
                    with open(args.out, "a") as f:
                        f.write(json.dumps(s) + "\n")
            done = sum(r["promoted"] for r in runs)
            print(f"  {label:<12} seed {seed}: {[r['promoted_name'] for r in runs[-2:]]}  "
                  f"({done}/{len(runs)} promoted so far)", file=sys.stderr, flush=True)

    report(results, args, (time.perf_counter() - t_all, t_train, n_train))


def report(results: dict[str, list[dict[str, Any]]], args: argparse.Namespace,
           timing: tuple[float, float, int] | None) -> None:
    from tickcast.config import Settings

    default = Settings.min_skill
    mismatch = [(label, r["symbol"], r["seed"]) for label, runs in results.items() for r in runs
                if promoted_at(r, default) != r["promoted"]]
    if mismatch:  # the what-if table below must reproduce the real decisions at the default
        raise SystemExit(f"recomputed decisions differ from tickcast train's: {mismatch[:5]}")
    n_runs = sum(len(v) for v in results.values())
    if timing is not None:
        print(f"\nbench_gate: {n_runs} symbol-runs, {args.hours:g} h of 10-s candles each (~{int(args.hours * 360):,} "
              f"rows), {args.trials} Optuna trials per fold, the gate at its defaults (3 folds, Holm over "
              f"{len(CANDIDATES)} candidates, alpha 0.05, min skill {default:g})")
    else:
        print(f"\nbench_gate: {n_runs} symbol-runs from {args.summarise}, the gate at its defaults")
    print(f"{'scenario':<14}{'gate (tickcast train, read back from the registry)':<52}naive best-of-3 at p < 0.05")
    for label, runs in results.items():
        k = sum(r["promoted"] for r in runs)
        kn = sum(r["naive"] for r in runs)
        print(f"{label:<14}{rate(k, len(runs)):<52}{rate(kn, len(runs))}")
    walks = results.get("random walk", [])
    if walks:
        import numpy as np

        sk = np.array([r["best_skill"] for r in walks])
        print(f"random walks: best candidate's pooled skill: median {np.median(sk):+.4f}, 95th pct "
              f"{np.quantile(sk, 0.95):+.4f}, max {sk.max():+.4f}; constant Lasso in "
              f"{sum(c['constant'] for r in walks for c in r['candidates'] if c['name'] == 'lasso')}/{len(walks)}")
    for label, runs in results.items():
        if label.startswith("planted") and runs:
            import numpy as np

            sk = np.array([r["best_skill"] for r in runs])
            print(f"{label}: best candidate's pooled skill median {np.median(sk):+.4f} (min {sk.min():+.4f}); "
                  f"promoted: {sorted({str(r['promoted_name']) for r in runs if r['promoted']})}")
    print("what-if (min skill -> promotion rate per scenario, from the same runs):")
    print(f"{'min skill':>10}" + "".join(f"{label:>16}" for label in results))
    for m in WHAT_IF_MIN_SKILL:
        print(f"{m:>10g}" + "".join(
            f"{100 * sum(promoted_at(r, m) for r in runs) / max(1, len(runs)):>14.1f} %" for runs in results.values()))
    if timing is not None:
        total, t_train, n_train = timing
        print(f"time: {total:.0f} s in all; `tickcast train` (2 symbols, whole process) "
              f"{t_train / max(1, n_train):.1f} s per run on average, {n_train} runs")


if __name__ == "__main__":
    main()
