"""Scoring a finished run of the live scoreboard (``tickcast.scoreboard``) after the fact,
for ``benchmarks/bench_selection.py`` and the tests: what ``model=auto`` served, its
error against persistence, interval coverage, and the per-label losses to replay the
selection rule under other settings. Also :func:`regime_switch`: two simulated markets
back to back (a signal that vanishes, a volatility shift).

Everything here reads only what the flow wrote (its predictions with their interval
bounds, and the feature rows whose closes are the labels), so it scores exactly what a
SQL join of ``predictions`` with ``features`` at ``ts + horizon`` would.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tickcast.schema import FeatureRow, Prediction, Trade
from tickcast.selection import SelectionRule, Selector


def regime_switch(first: Sequence[Trade], second: Sequence[Trade], gap_us: int = 1_000_000) -> list[Trade]:
    """``second`` appended to ``first`` as one market: its times shifted to start
    ``gap_us`` after the last trade of ``first``, its prices scaled so its first price is
    ``first``'s last one, its trade ids continued (every regime's own dynamics intact)."""
    if not first or not second:
        return [*first, *second]
    dt = first[-1].ts_us + gap_us - second[0].ts_us
    scale = first[-1].price / second[0].price
    top = {}
    for t in first:
        top[t.symbol] = t.trade_id
    out = list(first)
    out.extend(t._replace(ts_us=t.ts_us + dt, price=t.price * scale, trade_id=t.trade_id + top.get(t.symbol, 0))
               for t in second)
    return out


@dataclass
class RunScore:
    labels: int  # matured labels (auto rows with a label)
    served: dict[str, float]  # candidate -> share of auto rows it served
    mae: dict[str, float]  # "auto", "persistence", "online", "production" (on the same labels)
    coverage: dict[float, float]  # level -> share of auto rows with bounds whose label was inside
    covered_n: int  # auto rows with bounds
    losses: dict[str, np.ndarray]  # candidate -> per-label absolute error (NaN: no prediction)
    ts_us: np.ndarray  # label times of ``losses``


def score_run(predictions: Iterable[Prediction], features: Iterable[FeatureRow], horizon_seconds: int,
              symbol: str | None = None) -> RunScore:
    """Score the ``auto`` rows and the candidates of one symbol's run."""
    h = horizon_seconds * 1_000_000
    close = {f.ts_us: f.close for f in features if symbol is None or f.symbol == symbol}
    by: dict[str, dict[int, Prediction]] = {"auto": {}, "online": {}, "production": {}}
    for p in predictions:
        if symbol is not None and p.symbol != symbol:
            continue
        kind = p.model_kind
        group = "auto" if kind.startswith("auto:") else kind.split(":", 1)[0]
        if group in by:
            by[group][p.ts_us] = p
    ts = sorted(t for t in by["auto"] if t + h in close)
    lab = np.array([close[t + h] for t in ts])
    now = np.array([by["auto"][t].price_at_ts for t in ts])
    losses = {"persistence": np.abs(now - lab)}
    for g in ("online", "production"):
        if by[g]:
            losses[g] = np.array([abs(by[g][t].predicted_price - close[t + h]) if t in by[g] else math.nan
                                  for t in ts])
    auto = np.array([by["auto"][t].predicted_price for t in ts])
    kinds = [by["auto"][t].model_kind.split(":", 1)[1] for t in ts]
    n = len(ts)
    served = {k: kinds.count(k) / n for k in sorted(set(kinds))} if n else {}
    mae = {"auto": float(np.mean(np.abs(auto - lab))) if n else math.nan}
    for g, v in losses.items():
        mae[g] = float(np.nanmean(v)) if n and np.isfinite(v).any() else math.nan
    coverage: dict[float, float] = {}
    covered_n = 0
    for slot in (1, 2):
        got: list[tuple[float, float, float, float]] = []
        for t in ts:
            a = by["auto"][t]
            lv, lo, hi = (getattr(a, f"pi{slot}_level"), getattr(a, f"pi{slot}_lower"),
                          getattr(a, f"pi{slot}_upper"))
            if lv is not None and lo is not None and hi is not None and math.isfinite(lo):
                got.append((float(lv), float(lo), float(hi), close[t + h]))
        if got:
            coverage[got[0][0]] = sum(lo <= y <= hi for _, lo, hi, y in got) / len(got)
            covered_n = max(covered_n, len(got))
    return RunScore(n, served, mae, coverage, covered_n, losses, np.array(ts, dtype=np.int64))


def replay(losses: dict[str, np.ndarray], ts_us: np.ndarray, rule: SelectionRule,
           production_at_start: bool = False) -> list[str]:
    """The choice after each label when ``rule`` sees these losses (the flow's own order:
    a label updates the selector, the next row is served by the result)."""
    sel = Selector(rule)
    if production_at_start and "production" in losses:
        sel.reset("production", int(ts_us[0]) if len(ts_us) else 0, promote=True)
    names = list(losses)
    out = []
    for i, t in enumerate(ts_us):
        sel.update(int(t), {k: float(losses[k][i]) for k in names})
        out.append(sel.choice)
    return out


def lowest_recent_mae(losses: dict[str, np.ndarray], window: int, check_every: int,
                      production_at_start: bool = False) -> list[str]:
    """The naive reference rule: at every check serve whichever candidate has the lowest
    MAE over the last ``window`` labels (no test, no margin, no dwell)."""
    names = list(losses)
    choice = "production" if production_at_start and "production" in losses else "persistence"
    out = []
    n = len(next(iter(losses.values()))) if losses else 0
    for i in range(n):
        if (i + 1) % check_every == 0:
            lo = max(0, i + 1 - window)
            maes = {k: float(np.nanmean(losses[k][lo:i + 1])) for k in names
                    if np.isfinite(losses[k][lo:i + 1]).any()}
            choice = min(maes, key=lambda k: maes[k])
        out.append(choice)
    return out


def switches(choices: Sequence[str]) -> int:
    return sum(a != b for a, b in zip(choices, choices[1:], strict=False))


def drive_symbol(trades: Sequence[Trade], production: Any = None, *, window_seconds: int = 10,
                 horizon_seconds: int = 60, chunk: int = 5000) -> tuple[Any, Any]:
    """One symbol's trades through the flow's per-symbol pipeline with the online model and
    the live scoreboard (``production``: the flow's ``symbol -> (name, version, Predictor)``
    lookup, or None), in chunks like the stream; returns ``(StepOutput, SymbolPipeline)``."""
    from tickcast.pipeline import StepOutput, SymbolPipeline

    pipe = SymbolPipeline(trades[0].symbol, window_seconds, 0, horizon_seconds=horizon_seconds,
                          online_model="linear", snapshot_every=0)
    pipe.production = production
    out = StepOutput()
    for i in range(0, len(trades), chunk):
        out.extend(pipe.on_trades(trades[i:i + chunk]))
    out.extend(pipe.on_eof())
    return out, pipe
