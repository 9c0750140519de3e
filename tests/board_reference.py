"""The live scoreboard as it was before the per-block rewrite (main at 38efb87):
``tickcast.selection``'s Selector/IntervalTracker/VolScale and ``tickcast.scoreboard``'s
LiveBoard, one row at a time, kept verbatim (docstrings trimmed) as the reference the
block implementation is compared with in tests/test_selection.py. Not used by the code."""
# ruff: noqa
# mypy: ignore-errors
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tickcast.learner import ErrorStats
from tickcast.schema import FeatureRow, ModelMetrics, Prediction, json_safe, us_to_iso
from tickcast.selection import SelectionRule, interval, level_key

DEFAULT_LEVELS = (0.8, 0.95)

def one_sided_dm(d: np.ndarray, lags: int) -> tuple[float, float]:
    """(DM statistic, one-sided p-value of "mean(d) < 0") for loss differences ``d``,
    with Bartlett-weighted Newey–West variance (``lags``) and the HLN factor for
    ``h = lags + 1``. Same test as ``models.evaluation.diebold_mariano``.
    """
    from scipy.special import stdtr

    n = len(d)
    if n < 10:
        return float("nan"), 1.0
    dbar = float(d.mean())
    dc = d - dbar
    var = float(dc @ dc) / n
    for k in range(1, min(lags, n - 1) + 1):
        var += 2 * (1 - k / (lags + 1)) * float(dc[k:] @ dc[:-k]) / n
    if not var > 0:
        return (0.0, 0.5) if dbar == 0 else (math.copysign(math.inf, -dbar), float(dbar > 0))
    h = lags + 1
    hln = math.sqrt((n + 1 - 2 * h + h * (h - 1) / n) / n) if n + 1 - 2 * h > 0 else 1.0
    stat = dbar / math.sqrt(var / n) * hln
    return stat, float(stdtr(n - 1, stat))


@dataclass
class Selector:
    """The live choice of ONE symbol (picklable: it is part of the flow's recovery state).

    :meth:`update` takes one matured label's losses per candidate (absent or NaN = that
    candidate made no prediction for it) and returns the new choice when it changed."""

    rule: SelectionRule = field(default_factory=SelectionRule)
    choice: str = "persistence"
    since_ts_us: int | None = None
    reason: str = "default: no candidate has beaten persistence significantly yet"
    switches: int = 0
    labels: int = 0
    _since_switch: int = 0
    _losses: dict[str, deque[float]] = field(default_factory=dict)
    _sums: dict[str, list[float]] = field(default_factory=dict)  # name -> [sum, count] of finite losses in window
    tests: dict[str, dict[str, float]] = field(default_factory=dict)  # challenger -> last test

    def _q(self, name: str) -> deque[float]:
        q = self._losses.get(name)
        if q is None:
            q = self._losses[name] = deque([math.nan] * min(self.labels, self.rule.window),
                                           maxlen=self.rule.window)
        return q

    def reset(self, name: str, ts_us: int | None = None, promote: bool = False, why: str = "") -> None:
        """Forget ``name``'s record (a new version). ``promote``: a new production version
        takes over from persistence at once (it passed the training gate)."""
        if name in self._losses:
            self._losses[name] = deque([math.nan] * len(self._losses[name]), maxlen=self.rule.window)
            self._sums[name] = [0.0, 0]
        self.tests.pop(name, None)
        why = why or "promoted by the training gate (walk-forward test vs persistence); no live record yet"
        if promote and self.choice == "persistence":
            self._switch(name, ts_us, why)
        elif promote and self.choice == name:  # a new version of the choice: it stays, with a fresh record
            self.reason, self.since_ts_us, self._since_switch = why, ts_us, 0

    def drop(self, name: str, ts_us: int | None, why: str) -> None:
        """``name`` is no longer available: if it is the choice, fall back to persistence."""
        self._losses.pop(name, None)
        self._sums.pop(name, None)
        self.tests.pop(name, None)
        if self.choice == name:
            self._switch("persistence", ts_us, why)

    def _switch(self, to: str, ts_us: int | None, why: str) -> None:
        self.choice, self.since_ts_us, self.reason = to, ts_us, why
        self.switches += 1
        self._since_switch = 0

    def update(self, ts_us: int, losses: dict[str, float]) -> str | None:
        self.labels += 1
        self._since_switch += 1
        sums = self._sums
        for name in (*self._losses, *(k for k in losses if k not in self._losses)):
            v = losses.get(name, math.nan)
            v = float(v) if v is not None else math.nan
            q = self._q(name)
            acc = sums.setdefault(name, [0.0, 0])
            if len(q) == q.maxlen and q[0] == q[0]:
                acc[0] -= q[0]
                acc[1] -= 1
            q.append(v)
            if v == v:
                acc[0] += v
                acc[1] += 1
            if self.labels % 3600 == 0:  # no drift from the running sum
                acc[0] = math.fsum(x for x in q if x == x)
        if self.since_ts_us is None:
            self.since_ts_us = ts_us
        r = self.rule
        if self.labels % r.check_every:
            return None
        return self.check(ts_us)

    def check(self, ts_us: int) -> str | None:
        r = self.rule
        cur = self._losses.get(self.choice)
        if cur is None:
            return None
        c = np.fromiter(cur, float, len(cur))
        best: tuple[float, str, str] | None = None
        for name, q in self._losses.items():
            if name == self.choice:
                continue
            k = np.fromiter(q, float, len(q))
            m = min(len(c), len(k))
            a, b = k[len(k) - m:], c[len(c) - m:]
            ok = np.isfinite(a) & np.isfinite(b)
            n = int(ok.sum())
            if n < 2:
                self.tests.pop(name, None)
                continue
            a, b = a[ok], b[ok]
            mae_k, mae_c = float(a.mean()), float(b.mean())
            margin = 1 - mae_k / mae_c if mae_c > 0 else 0.0
            p = one_sided_dm(a - b, r.lags)[1] if n >= r.min_labels else math.nan
            self.tests[name] = {"n": n, "mae": mae_k, "mae_current": mae_c, "margin": margin, "p_value": p}
            if (n >= r.min_labels and p < r.alpha and margin >= r.min_margin
                    and self._since_switch >= r.min_dwell and (best is None or mae_k < best[0])):
                why = (f"{name} beats {self.choice}: MAE {mae_k:.6g} vs {mae_c:.6g} on the last {n} labels "
                       f"({-margin:+.2%}), one-sided DM p={p:.2g} < {r.alpha:g}")
                best = (mae_k, name, why)
        if best is None:
            return None
        self._switch(best[1], ts_us, best[2])
        return best[1]

    def mae(self, name: str) -> tuple[float, int]:
        """(MAE, n) of ``name`` on the labels of the window it predicted."""
        acc = self._sums.get(name)
        if not acc or acc[1] <= 0:
            return math.nan, 0
        return acc[0] / acc[1], int(acc[1])


@dataclass
class IntervalTracker:
    """Prediction intervals of ONE predictor from its recent out-of-sample residuals.

    Residuals are log-returns in bps, ``e = 1e4 * ln(actual / predicted)``, divided by
    the volatility scale known *at prediction time* (``sigma``: an EWMA of squared
    one-candle log returns, see :class:`VolScale`), so the interval widens as soon as
    the market gets more volatile rather than a window later (locally weighted split
    conformal). The half-width at level L is the empirical quantile of the last
    ``window`` normalised |residuals| at an adjusted level, times the current sigma;
    adaptive conformal inference (Gibbs & Candès 2021) moves that level by ``gamma``
    after every label (up after a miss, down after a hit), so long-run coverage tracks
    L even when the residuals' distribution shifts.
    """

    levels: tuple[float, ...] = (0.8, 0.95)
    window: int = 720
    min_n: int = 60
    gamma: float = 0.005
    refresh_every: int = 30  # labels between quantile updates (the volatility scale moves every row)
    _z: deque[float] = field(default_factory=deque)
    _adj: dict[float, float] = field(default_factory=dict)  # level -> current miscoverage target
    _q: dict[float, float] = field(default_factory=dict)  # level -> current normalised quantile
    n: int = 0

    def __post_init__(self) -> None:
        self._z = deque(self._z, maxlen=self.window)
        for lv in self.levels:
            self._adj.setdefault(lv, 1 - lv)

    def add(self, sigma_then: float, bounds_then: float | dict[float, float] | None, err_bps: float) -> None:
        """A matured label: ``err_bps`` (actual vs predicted, log bps), ``sigma_then`` the
        scale at prediction time, ``bounds_then`` the half-widths published then (per
        level; for the coverage feedback; a float means "the same for all")."""
        if not (math.isfinite(err_bps) and math.isfinite(sigma_then) and sigma_then > 0):
            return
        if isinstance(bounds_then, dict):
            for lv, w in bounds_then.items():
                if lv in self._adj and math.isfinite(w):
                    miss = 1.0 if abs(err_bps) > w else 0.0
                    self._adj[lv] = min(0.5, max(1e-4, self._adj[lv] + self.gamma * ((1 - lv) - miss)))
        self._z.append(abs(err_bps) / sigma_then)
        self.n += 1
        if self.n % self.refresh_every == 0 or self.n <= self.min_n:
            self._refresh()

    def _refresh(self) -> None:
        n = len(self._z)
        if n < self.min_n:
            self._q.clear()
            return
        # the "higher" empirical quantile of every level from one partial sort
        ks = {lv: min(n - 1, math.ceil(min(1.0, 1 - self._adj[lv]) * (n - 1))) for lv in self.levels}
        z = np.partition(np.fromiter(self._z, float, n), sorted(set(ks.values())))
        for lv, k in ks.items():
            self._q[lv] = float(z[k])

    def half_widths(self, sigma_now: float) -> dict[float, float]:
        """Half-widths in bps per level (empty until ``min_n`` residuals)."""
        if not (math.isfinite(sigma_now) and sigma_now > 0):
            return {}
        return {lv: q * sigma_now for lv, q in self._q.items()}


@dataclass
class VolScale:
    """Recent volatility of one-candle log returns (bps): an EWMA of squared returns over
    ~``span`` candles, floored at a quarter of a slow EWMA so a run of empty (flat)
    candles cannot collapse it to zero."""

    span: int = 30
    slow_span: int = 720
    fast: float = math.nan
    slow: float = math.nan
    last_close: float = math.nan

    def update(self, close: float) -> float:
        if math.isfinite(close) and close > 0:
            if math.isfinite(self.last_close):
                r2 = (1e4 * math.log(close / self.last_close)) ** 2
                if math.isnan(self.fast):
                    self.fast = self.slow = r2
                else:
                    self.fast += 2 / (self.span + 1) * (r2 - self.fast)
                    self.slow += 2 / (self.slow_span + 1) * (r2 - self.slow)
            self.last_close = close
        return self.sigma

    @property
    def sigma(self) -> float:
        if math.isnan(self.fast):
            return math.nan
        s = math.sqrt(max(self.fast, 0.0625 * self.slow))
        return s if s > 0 else math.nan



@dataclass(slots=True)
class _Pending:
    price: float  # close at prediction time
    sigma: float
    preds: dict[str, tuple[float, dict[float, float]]]  # candidate -> (predicted price, half-widths)


@dataclass
class BoardOutput:
    predictions: list[Prediction] = field(default_factory=list)  # production + auto rows
    metrics: list[ModelMetrics] = field(default_factory=list)  # production model_metrics rows
    online: Prediction | None = None  # the online model's prediction of the row, with its intervals


def interval_columns(price: float, widths: dict[float, float],
                     levels: tuple[float, ...]) -> tuple[float, float, float, float, float, float]:
    """``(pi1_level, pi1_lower, pi1_upper, pi2_level, pi2_lower, pi2_upper)`` of a
    prediction row (NaN bounds while the tracker is warming up; NaN level when fewer
    than two levels are configured)."""
    out = [math.nan] * 6
    for i, lv in enumerate(levels[:2]):
        w = widths.get(lv)
        lo, hi = interval(price, w) if w is not None else (math.nan, math.nan)
        out[3 * i: 3 * i + 3] = [lv, lo, hi]
    return out[0], out[1], out[2], out[3], out[4], out[5]


def _scorable_here(predictor: Any, row: FeatureRow) -> bool:
    """Whether the price flow can score ``predictor`` on its own rows: a model that needs
    other feature groups (news) or another feature set cannot be scored here, so it is no
    live candidate (``model=auto`` chooses between online and persistence; a promoted
    model stays reachable with ``model=production``) — else it would be "chosen" with
    no prediction and freeze the choice."""
    if getattr(predictor, "extra_groups", ()):
        return False
    return getattr(predictor, "feature_set_version", row.feature_set_version) == row.feature_set_version


class LiveBoard:
    """Candidates, scores, choice and intervals of ONE symbol (picklable)."""

    def __init__(self, symbol: str, horizon_seconds: int, rule: SelectionRule | None = None,
                 levels: tuple[float, ...] = DEFAULT_LEVELS) -> None:
        self.symbol = symbol
        self.horizon_seconds = horizon_seconds
        self.horizon_us = horizon_seconds * 1_000_000
        self.levels = tuple(levels)
        self.rule = rule or SelectionRule()
        self.selector = Selector(self.rule)
        self.trackers: dict[str, IntervalTracker] = {}
        self.vol = VolScale()
        self.pending: dict[int, _Pending] = {}
        self.prod_stats = ErrorStats()
        self.prod_id: tuple[str, str] | None = None  # (name, version) of the production model
        self.online_id: tuple[str, str] | None = None
        self.last_ts_us: int | None = None
        self.served: dict[str, int] = {}  # candidate -> rows it was the choice
        self._widths: dict[str, dict[float, float]] = {}
        self._preds: dict[str, float] = {}

    def _tracker(self, name: str) -> IntervalTracker:
        t = self.trackers.get(name)
        if t is None:
            t = self.trackers[name] = IntervalTracker(self.levels, window=self.rule.window)
        return t

    def _mature(self, row: FeatureRow, out: BoardOutput) -> None:
        p = self.pending.pop(row.ts_us - self.horizon_us, None)
        if self.pending:
            cutoff = row.ts_us - self.horizon_us
            for k in [k for k in self.pending if k <= cutoff]:
                del self.pending[k]
        if p is None:
            return
        label = row.close
        losses: dict[str, float] = {}
        for name, (price, widths) in p.preds.items():
            losses[name] = abs(price - label)
            if price > 0 and label > 0:
                self._tracker(name).add(p.sigma, widths, 1e4 * math.log(label / price))
            if name == "production":
                self.prod_stats.add(price, label, p.price)
                out.metrics.append(self.prod_stats.metrics_row(self.symbol, row.ts_us, "production",
                                                               self.horizon_seconds))
        self.selector.update(row.ts_us, losses)

    def on_row(self, row: FeatureRow, online: Prediction | None,
               production: tuple[str, str, Any] | None) -> BoardOutput:
        """One feature row. ``online``: the online model's prediction of it, or None (the
        output's ``online`` is that record with its interval columns); ``production``: ``(name, version,
        predictor)`` of the promoted model, or None."""
        out = BoardOutput()
        ts = row.ts_us
        self.last_ts_us = ts
        sigma = self.vol.update(row.close)
        self._mature(row, out)
        sel = self.selector
        if production is not None and not _scorable_here(production[2], row):
            production = None  # this flow cannot score it (see _scorable_here): not a live candidate
        # availability of the candidates
        pid = (production[0], production[1]) if production is not None else None
        if pid != self.prod_id:
            if pid is None:
                sel.drop("production", ts, f"the production model {self.prod_id[1] if self.prod_id else ''} "
                                           "is no longer promoted")
            else:
                sel.reset("production", ts, promote=True,
                          why=f"production {pid[0]}@{pid[1]} promoted by the training gate (walk-forward test vs "
                              "persistence); no live record yet")
            self.trackers.pop("production", None)
            self.prod_stats = ErrorStats()
            self.prod_id = pid
        # predictions of every candidate at ts
        preds: dict[str, float] = {"persistence": row.close}
        if online is not None:
            preds["online"] = online.predicted_price
            self.online_id = (online.model_name, online.model_version)
        if production is not None:
            name, version, predictor = production
            try:
                price = float(predictor.predict_price(row.close, row.values)[0])
                if math.isfinite(price) and price > 0:
                    preds["production"] = price
            except Exception:  # noqa: BLE001 - features not warm, a model raising: no prediction, no crash
                pass
        widths = {n: self._tracker(n).half_widths(sigma) for n in preds}
        self._widths, self._preds = widths, preds
        self.pending[ts] = _Pending(row.close, sigma, {n: (v, widths[n]) for n, v in preds.items()})
        sym, h, close = self.symbol, self.horizon_seconds, row.close
        if online is not None:
            lv1, lo1, hi1, lv2, lo2, hi2 = interval_columns(preds["online"], widths["online"], self.levels)
            out.online = online._replace(pi1_level=lv1, pi1_lower=lo1, pi1_upper=hi1,
                                         pi2_level=lv2, pi2_lower=lo2, pi2_upper=hi2)
        if "production" in preds and production is not None:
            p = preds["production"]
            out.predictions.append(Prediction(
                sym, ts, production[1], h, p, f"production:{production[0]}", production[0], close,
                math.log(p / close), 0, *interval_columns(p, widths["production"], self.levels)))
        choice = sel.choice if sel.choice in preds else "persistence"
        self.served[choice] = self.served.get(choice, 0) + 1
        p = preds[choice]
        out.predictions.append(Prediction(
            sym, ts, "auto", h, p, f"auto:{choice}", self._name(choice), close, math.log(p / close),
            0, *interval_columns(p, widths[choice], self.levels)))
        return out

    def _identity(self, cand: str) -> tuple[str, str]:
        """(name, version) of a candidate: the production/online model's, or the candidate's own."""
        ident = self.prod_id if cand == "production" else self.online_id if cand == "online" else None
        return ident if ident else (cand, "persistence")

    def _name(self, cand: str) -> str:
        return self._identity(cand)[0]

    def _version(self, cand: str) -> str:
        return self._identity(cand)[1]

    def state(self) -> dict[str, Any]:
        """The scoreboard at the newest row (JSON-able; see the module docstring)."""
        sel = self.selector
        cands: dict[str, Any] = {}
        for name in CANDIDATE_ORDER:
            if name not in self._preds and name not in sel.tests and name != sel.choice:
                continue
            mae, n = sel.mae(name)
            t = sel.tests.get(name, {})
            cands[name] = {"name": self._name(name), "version": self._version(name), "mae": mae, "n": n,
                           "p_value": t.get("p_value") if name != sel.choice else None,
                           "margin": t.get("margin") if name != sel.choice else None,
                           "intervals_bps": {level_key(lv): w for lv, w in self._widths.get(name, {}).items()}}
        choice = sel.choice if sel.choice in self._preds else "persistence"
        state: dict[str, Any] = json_safe({
            "symbol": self.symbol, "ts_us": self.last_ts_us, "as_of": us_to_iso(self.last_ts_us or 0),
            "choice": choice, "name": self._name(choice), "version": self._version(choice),
            "reason": sel.reason if choice == sel.choice else f"{sel.choice} made no prediction for this row",
            "since": us_to_iso(sel.since_ts_us) if sel.since_ts_us is not None else None,
            "switches": sel.switches, "labels": sel.labels, "window": self.rule.window, "alpha": self.rule.alpha,
            "candidates": cands,
        })
        return state




CANDIDATE_ORDER = ("production", "online", "persistence")
