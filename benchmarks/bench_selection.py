"""Live model selection and prediction intervals, measured (README: Live model selection).

Runs the per-symbol pipeline exactly as the feature flow does (candles -> features ->
online model -> live scoreboard: every candidate scored at maturity, the selection
rule, the intervals) on simulated markets, many seeds each, and on the real candle
files in ../shared/data/candles/ (read in place), then scores what ``model=auto``
served from the rows the flow wrote (``tickcast.live_eval``):

* random walk (no spread, no signal) and bounce-and-flow (1 bps bid-ask bounce,
  persistent order flow, no signal): nothing can beat persistence, so every switch
  away from it is a **false switch**;
* planted signal (``flow_impact``): the online model can learn it: **time to switch**;
* decay: a production model pre-trained on a planted market (another seed) is
  promoted at the start; after 3 h the signal vanishes: **time to demotion**;
* volatility shift: a random walk whose volatility jumps x2.5 after 6 h: interval
  coverage after the shift (the hard case for intervals);

and reports which model auto served how often, its MAE against persistence, the
empirical coverage of each interval level, and the switches of the rule next to the
naive reference (serve the lowest MAE of the same window, no test, no dwell) replayed
on the same losses.

    python benchmarks/bench_selection.py            # the README run (~5 min on 2 cores)
    python benchmarks/bench_selection.py --seeds 4  # quick look
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from common import REPO

from models.predictor import Predictor
from tickcast.history import read_candles_csv
from tickcast.live_eval import (
    RunScore,
    drive_symbol,
    lowest_recent_mae,
    regime_switch,
    replay,
    score_run,
    switches,
)
from tickcast.pipeline import StepOutput, SymbolPipeline
from tickcast.selection import SelectionRule
from tickcast.sim import DEFAULT_START_US, MarketSimulator, SimParams

H, W = 60, 10
HOUR_US = 3600 * 1_000_000
CANDLES = REPO.parent / "shared" / "data" / "candles"


def sim_trades(params: SimParams, hours: float, seed: int) -> list[Any]:
    return MarketSimulator(["BTC/USD"], seed=seed, params=params).until(DEFAULT_START_US + int(hours * HOUR_US))


def drive(trades: list[Any], production: Any = None) -> tuple[StepOutput, SymbolPipeline]:
    return drive_symbol(trades, production, window_seconds=W, horizon_seconds=H)  # type: ignore[no-any-return]


def pretrained(seed: int, strength: float) -> Predictor:
    """A River model trained on 12 h of a planted market: the 'production' model."""
    _, pipe = drive(sim_trades(SimParams(rate=2, flow_impact=strength), 12, seed))
    assert pipe.learner is not None
    return Predictor("river-linear", "river", [], pipe.learner.model, "fs1-w10s", H)


def coverage_after(out: StepOutput, cut_us: int, span_us: int, window: int) -> dict[float, dict[str, float]]:
    """Coverage of the auto rows' intervals over ``[cut, cut + span)`` and of a plain
    split-conformal reference on the same labels (quantile of the last ``window``
    |log residuals| of persistence that had matured by then)."""
    import numpy as np

    h = H * 1_000_000
    close = {f.ts_us: f.close for f in out.features}
    auto = sorted((p for p in out.predictions if p.model_version == "auto" and p.ts_us + h in close),
                  key=lambda p: p.ts_us)
    ts = np.array([p.ts_us for p in auto])
    res = np.array([abs(math.log(close[p.ts_us + h] / p.predicted_price)) for p in auto])
    res_pers = np.array([abs(math.log(close[p.ts_us + h] / p.price_at_ts)) for p in auto])
    out_cov: dict[float, dict[str, float]] = {}
    for slot in (1, 2):
        lv = float(getattr(auto[0], f"pi{slot}_level"))
        ours, plain = [], []
        for i, p in enumerate(auto):
            t = p.ts_us
            if not cut_us <= t < cut_us + span_us or not math.isfinite(getattr(p, f"pi{slot}_lower")):
                continue
            ours.append(getattr(p, f"pi{slot}_lower") <= close[t + h] <= getattr(p, f"pi{slot}_upper"))
            matured = res_pers[(ts + h <= t)][-window:]
            q = float(np.quantile(matured, lv, method="higher"))
            plain.append(res[i] <= q)
        out_cov[lv] = {"ours": sum(ours) / len(ours), "plain": sum(plain) / len(plain)}
    return out_cov


def first_index(choices: list[str], pred: Any, start: int = 0) -> int | None:
    for i in range(start, len(choices)):
        if pred(choices[i]):
            return i
    return None


def summarise(name: str, runs: list[tuple[RunScore, list[str], list[str]]], hours: float,
              extra: str = "") -> dict[str, Any]:
    served: dict[str, float] = {}
    for sc, _, _ in runs:
        for k, v in sc.served.items():
            served[k] = served.get(k, 0.0) + v / len(runs)
    ratio = [sc.mae["auto"] / sc.mae["persistence"] for sc, _, _ in runs]
    online = [sc.mae["online"] / sc.mae["persistence"] for sc, _, _ in runs if "online" in sc.mae]
    cov: dict[float, list[float]] = {}
    for sc, _, _ in runs:
        for lv, c in sc.coverage.items():
            cov.setdefault(lv, []).append(c)
    sw = [switches(c) for _, c, _ in runs]
    naive = [switches(c) for _, _, c in runs]
    days = hours / 24 * len(runs)
    row = {"scenario": name, "runs": len(runs), "labels": runs[0][0].labels if runs else 0, "served": served,
           "auto_vs_pers": statistics.mean(ratio), "online_vs_pers": statistics.mean(online) if online else math.nan,
           "coverage": {lv: (statistics.mean(v), min(v), max(v)) for lv, v in sorted(cov.items())},
           "switches_per_day": sum(sw) / days, "naive_switches_per_day": sum(naive) / days,
           "runs_with_switch": sum(s > 0 for s in sw), "extra": extra}
    served_s = ", ".join(f"{k} {v:.0%}" for k, v in sorted(served.items(), key=lambda kv: -kv[1]))
    cov_s = "  ".join(f"{lv:.0%}: {m:.1%} ({lo:.1%}-{hi:.1%})" for lv, (m, lo, hi) in row["coverage"].items())
    print(f"{name:<22} {len(runs):>3} runs x {row['labels']:>5} labels | served {served_s:<34} | MAE auto/pers "
          f"{row['auto_vs_pers']:.4f} (online/pers {row['online_vs_pers']:.4f}) | coverage {cov_s} | switches/day "
          f"{row['switches_per_day']:.2f} (naive {row['naive_switches_per_day']:.2f}); runs with a switch "
          f"{row['runs_with_switch']}/{len(runs)}{(' | ' + extra) if extra else ''}", flush=True)
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=16, help="seeds per simulated scenario (decay/vol: half)")
    ap.add_argument("--hours", type=float, default=12.0, help="hours of simulated market per run")
    ap.add_argument("--rate", type=float, default=2.0, help="simulated trades/s")
    ap.add_argument("--no-real", action="store_true", help="skip the real candle files")
    args = ap.parse_args(argv)
    rule = SelectionRule()
    print(f"rule: {rule}")
    print(f"simulated: BTC/USD, {args.hours:g} h of {W}-s candles per run, horizon {H} s, {args.rate:g} trades/s "
          "(machine shared with other jobs: these are counts, not timings)")
    t0 = time.perf_counter()
    hours = args.hours

    def run(trades: list[Any], production: Any = None) -> tuple[RunScore, list[str], list[str]]:
        out, _ = drive(trades, production)
        sc = score_run(out.predictions, out.features, H)
        at_start = production is not None
        return (sc, replay(sc.losses, sc.ts_us, rule, at_start),
                lowest_recent_mae(sc.losses, rule.window, rule.check_every, at_start))

    seeds = range(1000, 1000 + args.seeds)
    rows = []
    for name, params in (("random walk", SimParams(rate=args.rate, spread_bps=0.0)),
                         ("bounce-and-flow", SimParams(rate=args.rate)),
                         ("planted 0.5", SimParams(rate=args.rate, flow_impact=0.5)),
                         ("planted 0.25", SimParams(rate=args.rate, flow_impact=0.25))):
        runs = [run(sim_trades(params, hours, s)) for s in seeds]
        extra = ""
        if name.startswith("planted"):
            t = [first_index(c, lambda x: x == "online") for _, c, _ in runs]
            got = sorted(x for x in t if x is not None)
            extra = (f"switched to online in {len(got)}/{len(runs)} runs, after a median "
                     f"{statistics.median(got) if got else math.nan:.0f} labels "
                     f"({(statistics.median(got) if got else math.nan) * W / 3600:.1f} h)")
        rows.append(summarise(name, runs, hours, extra))

    half = max(1, args.seeds // 2)
    decay_runs, demoted_after = [], []
    for s in range(2000, 2000 + half):
        prod = pretrained(s + 500, 0.5)
        before = sim_trades(SimParams(rate=args.rate, flow_impact=0.5), 3, s)
        after = sim_trades(SimParams(rate=args.rate), hours - 3, s + 100)
        r = run(regime_switch(before, after), lambda _sym, p=prod: ("river-linear", "pretrained", p))
        decay_runs.append(r)
        sc, choices, _ = r
        cut = int((sc.ts_us < before[-1].ts_us).sum())
        i = first_index(choices, lambda x: x != "production", cut)
        demoted_after.append(None if i is None else i - cut)
    got = sorted(x for x in demoted_after if x is not None)
    rows.append(summarise("decay (prod 0.5 -> none)", decay_runs, hours,
                          f"demoted in {len(got)}/{len(decay_runs)} runs, a median {statistics.median(got) if got else math.nan:.0f} "
                          f"labels ({(statistics.median(got) if got else math.nan) * W / 3600:.1f} h) after the signal vanished"))

    vol_runs = []
    after_shift: dict[str, dict[float, list[float]]] = {"ours": {}, "plain": {}}
    for s in range(3000, 3000 + half):
        a = sim_trades(SimParams(rate=args.rate, spread_bps=0.0), hours / 2, s)
        b = sim_trades(SimParams(rate=args.rate, spread_bps=0.0, vol_bps_per_sqrt_s=2.5), hours / 2, s + 100)
        trades = regime_switch(a, b)
        out, _ = drive(trades)
        sc = score_run(out.predictions, out.features, H)
        vol_runs.append((sc, replay(sc.losses, sc.ts_us, rule), lowest_recent_mae(sc.losses, rule.window,
                                                                                  rule.check_every)))
        # the first hour after the jump: ours vs a plain split-conformal window (quantile of
        # the last 720 matured |residuals|, no volatility scaling, no ACI), same labels
        cut = a[-1].ts_us
        for lv, cov in coverage_after(out, cut, HOUR_US, rule.window).items():
            for k in ("ours", "plain"):
                after_shift[k].setdefault(lv, []).append(cov[k])
    extra = "first hour after the jump: " + "; ".join(
        f"{lv:.0%} ours {statistics.mean(after_shift['ours'][lv]):.1%} vs plain window "
        f"{statistics.mean(after_shift['plain'][lv]):.1%}" for lv in sorted(after_shift["ours"]))
    rows.append(summarise("vol x2.5 at half-time", vol_runs, hours, extra))

    if not args.no_real:
        for f, sym in (("binanceus_BTCUSD_1m_20230301_20230321.csv", "BTC/USD"), ("kraken_XBTUSD_5m_2023Q1.csv", "BTC/USD")):
            path = CANDLES / f
            if not path.exists():
                print(f"{f}: not found under {CANDLES}, skipped")
                continue
            candles, w = read_candles_csv(path, sym)
            pipe = SymbolPipeline(sym, w, 0, horizon_seconds=w, online_model="linear", snapshot_every=0)
            out = pipe._candles(candles, StepOutput())  # the flow's per-candle path, candles from the file
            sc = score_run(out.predictions, out.features, w)
            r = (sc, replay(sc.losses, sc.ts_us, rule), lowest_recent_mae(sc.losses, rule.window, rule.check_every))
            rows.append(summarise(f"real {f.split('_')[0]} {w // 60}m", [r], len(candles) * w / 3600,
                                  f"horizon {w} s; no taker sides in the file: order-flow features are 0"))
    print(f"total {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    raise SystemExit(main())
