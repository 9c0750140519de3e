"""Live model selection: which predictor ``/predict?model=auto`` serves, per symbol.

The candidates are the promoted **production** model, the **online** model and
**persistence** (the price will not move). Every matured label scores all of them on
the same price (absolute error, price units); :class:`Selector` keeps the last
``window`` paired losses and decides, framework-free:

* **Start**: persistence. It is a legitimate answer and the one to beat.
* **Switch** from the current choice *c* to a challenger *k* only when, on the labels
  both predicted among the last ``window`` (at least ``min_labels``), *k* is better by
  a significant margin: the one-sided Diebold–Mariano test on the loss differences
  ``d = |e_k| - |e_c|`` (Harvey–Leybourne–Newbold small-sample factor, Newey–West
  variance with ``lags`` Bartlett lags: 60-s labels of 10-s candles overlap, so
  consecutive ``d`` are correlated) gives ``p < alpha`` **and** its MAE is at least
  ``min_margin`` (relative) below *c*'s. Several passing: the lowest MAE wins.
* **Hysteresis**: the test runs every ``check_every`` labels, never sooner than
  ``min_dwell`` labels after the previous switch, and switching *back* needs the same
  evidence in the other direction — an insignificant difference never moves the choice.
* **Production** (a model that passed the training gate): a *new* version replaces
  persistence at once (the gate's walk-forward test against persistence is its
  evidence) and starts a fresh live record; from then on it is demoted like any other
  choice when persistence or the online model is significantly better live. A choice
  that is no longer available (alias removed, online learning off) falls back to
  persistence.

The rule's error rates (false switches on random walks, time to switch to a planted
signal, flaps) are measured by simulation in ``benchmarks/bench_selection.py``.

>>> rule = SelectionRule(window=200, min_labels=50, check_every=1, min_dwell=10, lags=0)
>>> s = Selector(rule)
>>> for i in range(60):   # the online model is clearly better than persistence
...     _ = s.update(i, {"persistence": 1.0 + (i % 3) * 0.1, "online": 0.8 + (i % 3) * 0.1})
>>> s.choice, s.since_ts_us
('online', 49)
>>> s.reason.split(":")[0]
'online beats persistence'
>>> s2 = Selector(rule)
>>> for i in range(60):   # indistinguishable: persistence stays
...     _ = s2.update(i, {"persistence": 1.0 + (i % 2) * 0.2, "online": 1.2 - (i % 2) * 0.2})
>>> s2.choice
'persistence'
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

import numpy as np

CANDIDATES = ("production", "online", "persistence")


@dataclass(frozen=True)
class SelectionRule:
    """The knobs of :class:`Selector` (defaults chosen by ``benchmarks/bench_selection.py``;
    counts are matured labels, i.e. candles: 720 = 2 h of 10-s candles)."""

    window: int = 720  # paired losses kept per candidate
    min_labels: int = 360  # a challenger needs this many paired labels in the window
    alpha: float = 0.01  # one-sided DM level
    min_margin: float = 0.002  # required relative MAE improvement over the current choice
    min_dwell: int = 360  # labels after a switch before the next one
    check_every: int = 12  # labels between tests (two 60-s horizons of 10-s candles)
    lags: int = 12  # Newey-West lags (2 x horizon/window: overlap plus volatility clustering)


def one_sided_dm(d: np.ndarray, lags: int) -> tuple[float, float]:
    """(DM statistic, one-sided p-value of "mean(d) < 0") for loss differences ``d``,
    with Bartlett-weighted Newey–West variance (``lags``) and the HLN factor for
    ``h = lags + 1``. Same test as ``models.evaluation.diebold_mariano``.

    >>> one_sided_dm(np.array([-1.0, -0.5] * 20), 0)[1] < 0.001
    True
    >>> one_sided_dm(np.zeros(40), 2)
    (0.0, 0.5)
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

    >>> t = IntervalTracker((0.8,), window=500, min_n=50)
    >>> rng = np.random.default_rng(0)
    >>> for _ in range(2000):
    ...     t.add(1.0, 1.0, float(rng.normal(0, 5.0)))
    >>> w = t.half_widths(1.0)[0.8]
    >>> 5.0 < w < 8.5   # the 80 % normal half-width of sd 5 is 6.4
    True
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


def level_key(level: float) -> str:
    """``0.8`` -> ``"80"``, ``0.975`` -> ``"97.5"`` (the JSON key of an interval level)."""
    return f"{level * 100:.10g}"


def interval(price: float, half_width_bps: float) -> list[float]:
    """``[lo, hi]`` around ``price`` for a half-width in log-return bps."""
    f = math.exp(half_width_bps / 1e4)
    return [price / f, price * f]

