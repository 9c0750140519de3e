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

Cost: the live scoreboard (``tickcast.scoreboard``) feeds these classes a call's labels
as a block. The loss windows are numpy ring buffers written twice (at ``pos`` and
``pos + window``) so the chronological window is always one contiguous slice; the
Newey–West autocovariances of a test are one ``np.correlate``; the intervals' ACI
levels are a scalar recurrence over a block's labels and their quantiles move only
every ``refresh_every`` labels. Block results equal label-by-label ones bit for bit:
within a block only elementwise numpy operations and sequential scalar loops are used,
and every reduction (means, sums, quantiles) runs over a whole window, never over a
block, so how the labels are split into calls cannot change a single bit.

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

import functools
import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

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


def _stdtr(df: int, t: float) -> float:
    global _STDTR
    if _STDTR is None:  # scipy only when a test runs (importing it costs ~0.3 s)
        from scipy.special import stdtr

        _STDTR = stdtr
    return float(_STDTR(df, t))


_STDTR: Any = None


@functools.lru_cache(maxsize=8)
def _bartlett(lags: int) -> tuple[float, ...]:
    """``2 * (1 - k / (lags + 1))`` for k = 1..lags: the Newey–West weights (doubled)."""
    return tuple(2 * (1 - k / (lags + 1)) for k in range(1, lags + 1))


def one_sided_dm(d: np.ndarray, lags: int) -> tuple[float, float]:
    """(DM statistic, one-sided p-value of "mean(d) < 0") for loss differences ``d``,
    with Bartlett-weighted Newey–West variance (``lags``) and the HLN factor for
    ``h = lags + 1``. Same test as ``models.evaluation.diebold_mariano``.

    >>> one_sided_dm(np.array([-1.0, -0.5] * 20), 0)[1] < 0.001
    True
    >>> one_sided_dm(np.zeros(40), 2)
    (0.0, 0.5)
    """
    n = len(d)
    if n < 10:
        return float("nan"), 1.0
    dbar = float(np.add.reduce(d)) / n  # == d.mean(), without its Python overhead
    lag = min(lags, n - 1)
    pad = np.zeros(n + lag)
    dc = np.subtract(d, dbar, out=pad[:n])  # d - dbar, followed by `lag` zeros in `pad`
    # g[k] = dc[k:] @ dc[:n - k] for every lag at once
    g = np.correlate(pad, dc, "valid").tolist()
    var = g[0] / n
    for w, gk in zip(_bartlett(lags)[:lag], g[1:], strict=True):
        var += w * gk / n
    if not var > 0:
        return (0.0, 0.5) if dbar == 0 else (math.copysign(math.inf, -dbar), float(dbar > 0))
    h = lags + 1
    hln = math.sqrt((n + 1 - 2 * h + h * (h - 1) / n) / n) if n + 1 - 2 * h > 0 else 1.0
    stat = dbar / math.sqrt(var / n) * hln
    return stat, _stdtr(n - 1, stat)


def _ring_write(buf: np.ndarray, pos: int, window: int, vals: np.ndarray) -> int:
    """Write ``vals`` (last axis: up to ``window`` labels) at ``pos`` and ``pos + window``
    of the doubled ring ``buf``; returns the next position."""
    k = int(vals.shape[-1])
    first = min(k, window - pos)
    buf[..., pos:pos + first] = vals[..., :first]
    buf[..., pos + window:pos + window + first] = vals[..., :first]
    if first < k:
        buf[..., :k - first] = vals[..., first:]
        buf[..., window:window + k - first] = vals[..., first:]
    return (pos + k) % window


@dataclass
class Selector:
    """The live choice of ONE symbol (picklable: it is part of the flow's recovery state).

    :meth:`update` takes one matured label's losses per candidate (absent or NaN = that
    candidate made no prediction for it) and returns the new choice when it changed;
    :meth:`update_many` takes a block of labels and gives the same result."""

    rule: SelectionRule = field(default_factory=SelectionRule)
    choice: str = "persistence"
    since_ts_us: int | None = None
    reason: str = "default: no candidate has beaten persistence significantly yet"
    switches: int = 0
    labels: int = 0
    _since_switch: int = 0
    tests: dict[str, dict[str, float]] = field(default_factory=dict)  # challenger -> last test
    # the candidates with a record, in the order they first had a label (the order tests run in),
    # and their losses: row i of _buf is _names[i]'s doubled ring of the last `window` labels
    _names: list[str] = field(default_factory=list)
    _buf: np.ndarray = field(default_factory=lambda: np.empty((0, 0)))
    _pos: int = 0

    def __post_init__(self) -> None:
        if self._buf.shape != (len(self._names), 2 * self.rule.window):
            self._buf = np.full((len(self._names), 2 * self.rule.window), math.nan)

    def __setstate__(self, state: dict[str, Any]) -> None:
        if "_losses" in state:  # pickled before the ring buffers: one deque per candidate
            w = state["rule"].window
            losses = state.pop("_losses")
            state.pop("_sums", None)
            state["_names"] = list(losses)
            state["_buf"] = buf = np.full((len(losses), 2 * w), math.nan)
            state["_pos"] = 0
            for i, q in enumerate(losses.values()):
                if q:
                    buf[i, w - len(q):w] = buf[i, 2 * w - len(q):] = list(q)
        self.__dict__.update(state)

    def _window(self) -> np.ndarray:
        """(candidates, m): the last ``m = min(labels, window)`` losses, oldest first."""
        w = self.rule.window
        m = min(self.labels, w)
        return self._buf[:, self._pos + w - m:self._pos + w]

    def reset(self, name: str, ts_us: int | None = None, promote: bool = False, why: str = "") -> None:
        """Forget ``name``'s record (a new version). ``promote``: a new production version
        takes over from persistence at once (it passed the training gate)."""
        if name in self._names:
            self._buf[self._names.index(name)] = math.nan
        self.tests.pop(name, None)
        why = why or "promoted by the training gate (walk-forward test vs persistence); no live record yet"
        if promote and self.choice == "persistence":
            self._switch(name, ts_us, why)
        elif promote and self.choice == name:  # a new version of the choice: it stays, with a fresh record
            self.reason, self.since_ts_us, self._since_switch = why, ts_us, 0

    def drop(self, name: str, ts_us: int | None, why: str) -> None:
        """``name`` is no longer available: if it is the choice, fall back to persistence."""
        if name in self._names:
            i = self._names.index(name)
            del self._names[i]
            self._buf = np.delete(self._buf, i, axis=0)
        self.tests.pop(name, None)
        if self.choice == name:
            self._switch("persistence", ts_us, why)

    def _switch(self, to: str, ts_us: int | None, why: str) -> None:
        self.choice, self.since_ts_us, self.reason = to, ts_us, why
        self.switches += 1
        self._since_switch = 0

    def update(self, ts_us: int, losses: dict[str, float | None]) -> str | None:
        """One matured label; returns the new choice if it changed (:meth:`update_many` of
        one label, without the block machinery)."""
        r = self.rule
        w = r.window
        if self.since_ts_us is None:
            self.since_ts_us = ts_us
        added = [n for n in losses if n not in self._names]
        if added:
            self._names.extend(added)
            self._buf = np.concatenate((self._buf, np.full((len(added), 2 * w), math.nan)))
        col = [math.nan if (v := losses.get(n, math.nan)) is None else float(v) for n in self._names]
        p = self._pos
        self._buf[:, p] = col
        self._buf[:, p + w] = col
        self._pos = (p + 1) % w
        self.labels += 1
        self._since_switch += 1
        return self.check(ts_us) if self.labels % r.check_every == 0 else None

    def update_many(self, ts_us: Sequence[int], losses: dict[str, np.ndarray],
                    first: dict[str, int] | None = None) -> list[tuple[int, str]]:
        """``len(ts_us)`` matured labels at once, exactly as many :meth:`update` calls:
        ``losses[name][i]`` is ``name``'s loss on label ``i`` (NaN: none); a name gets a
        record from its label ``first[name]`` on (default 0: the first one; the label
        where it first predicted). Returns the switches: ``(label index, new choice)``."""
        k = len(ts_us)
        r = self.rule
        w = r.window
        if self.since_ts_us is None and k:
            self.since_ts_us = ts_us[0]
        new = sorted((first.get(n, 0) if first else 0, j, n) for j, n in enumerate(losses) if n not in self._names)
        out: list[tuple[int, str]] = []
        i = 0
        vals = None
        while i < k:
            step = min(k - i, r.check_every - self.labels % r.check_every, w)
            added = [n for f, _, n in new if f < i + step and n not in self._names]
            if added:
                self._names.extend(added)
                self._buf = np.concatenate((self._buf, np.full((len(added), 2 * w), math.nan)))
            if vals is None or added:  # every record's losses of the block (NaN: none)
                vals = np.empty((len(self._names), k))
                vals.fill(math.nan)
                for j, n in enumerate(self._names):
                    v = losses.get(n)
                    if v is not None:
                        vals[j] = v
            self._pos = _ring_write(self._buf, self._pos, w, vals[:, i:i + step])
            self.labels += step
            self._since_switch += step
            if self.labels % r.check_every == 0 and self.check(ts_us[i + step - 1]) is not None:
                out.append((i + step - 1, self.choice))
            i += step
        return out

    def check(self, ts_us: int) -> str | None:
        r = self.rule
        if self.choice not in self._names:
            return None
        win = self._window()
        m = win.shape[1]
        c = win[self._names.index(self.choice)]
        best: tuple[float, str, str] | None = None
        for name, k in zip(self._names, win, strict=True):
            if name == self.choice:
                continue
            d = k - c  # losses are >= 0 or NaN: d is finite exactly where both are
            ok = np.isfinite(d)
            n = int(np.count_nonzero(ok))
            if n < 2:
                self.tests.pop(name, None)
                continue
            a, b = (k, c) if n == m else (k[ok], c[ok])
            mae_k, mae_c = float(np.add.reduce(a)) / n, float(np.add.reduce(b)) / n  # == a.mean(), b.mean()
            margin = 1 - mae_k / mae_c if mae_c > 0 else 0.0
            p = one_sided_dm(d if n == m else d[ok], r.lags)[1] if n >= r.min_labels else math.nan
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
        if name not in self._names:
            return math.nan, 0
        v = self._window()[self._names.index(name)]
        ok = np.isfinite(v)
        n = int(np.count_nonzero(ok))
        if n == 0:
            return math.nan, 0
        return float(np.add.reduce(v if n == len(v) else v[ok])) / n, n


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
    L even when the residuals' distribution shifts. The quantiles move every
    ``refresh_every`` labels (every label until ``min_n``), so between two refreshes the
    half-widths are the constant quantiles times each row's sigma (:meth:`quantiles`).

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
    _z: np.ndarray = field(default_factory=lambda: np.empty(0))  # ring: normalised |residual| i at i % window
    _adj: dict[float, float] = field(default_factory=dict)  # level -> current miscoverage target
    _q: dict[float, float] = field(default_factory=dict)  # level -> current normalised quantile
    n: int = 0

    def __post_init__(self) -> None:
        if len(self._z) != self.window:
            self._z = np.full(self.window, math.nan)
        for lv in self.levels:
            self._adj.setdefault(lv, 1 - lv)

    def __setstate__(self, state: dict[str, Any]) -> None:
        z = state.get("_z")
        if isinstance(z, deque):  # pickled before the ring buffer
            ring = np.full(state["window"], math.nan)
            for i, v in enumerate(z, start=state["n"] - len(z)):
                ring[i % state["window"]] = v
            state["_z"] = ring
        self.__dict__.update(state)

    def add(self, sigma_then: float, bounds_then: float | dict[float, float] | None, err_bps: float) -> None:
        """A matured label: ``err_bps`` (actual vs predicted, log bps), ``sigma_then`` the
        scale at prediction time, ``bounds_then`` the half-widths published then (per
        level; for the coverage feedback; a float means "the same for all")."""
        b = bounds_then if isinstance(bounds_then, dict) else {}
        self.add_many(np.array([sigma_then], dtype=float),
                      np.array([[b.get(lv, math.nan)] for lv in self.levels], dtype=float).reshape(-1, 1),
                      np.array([err_bps], dtype=float))

    def adds_to_refresh(self) -> int:
        """How many more valid labels until the quantiles move (see :meth:`add_many`)."""
        if self.n < self.min_n:
            return self.min_n - self.n
        return self.refresh_every - self.n % self.refresh_every

    def add_many(self, sigma_then: np.ndarray, widths_then: np.ndarray, err_bps: np.ndarray) -> None:
        """A block of matured labels, exactly as :meth:`add` one by one: ``widths_then``
        is ``(len(levels), k)``, the half-widths published for each label (NaN: none).
        Labels with a non-finite error or scale are ignored."""
        ok = np.isfinite(err_bps) & np.isfinite(sigma_then) & (sigma_then > 0)
        if np.count_nonzero(ok) < len(ok):
            sigma_then, widths_then, err_bps = sigma_then[ok], widths_then[:, ok], err_bps[ok]
        e = np.abs(err_bps)
        self.add_valid(e / sigma_then, e, widths_then)

    def add_valid(self, z: np.ndarray, abs_err: np.ndarray, widths_then: np.ndarray) -> None:
        """:meth:`add_many` of labels known valid, given ``z = |err| / sigma_then`` and ``|err|``."""
        e, g = abs_err.tolist(), self.gamma
        wl = widths_then.tolist()
        i, k = 0, len(z)
        while i < k:
            step = min(k - i, self.adds_to_refresh(), self.window)
            for lv, w in zip(self.levels, wl, strict=True):
                # ACI, one label at a time: the step after a miss, after a hit (no half-width published: none)
                miss, hit = g * ((1 - lv) - 1.0), g * ((1 - lv) - 0.0)
                x = self._adj[lv]
                for ei, wi in zip(e[i:i + step], w[i:i + step], strict=True):
                    if wi == wi:
                        x += miss if ei > wi else hit
                        if x < 1e-4:
                            x = 1e-4
                        elif x > 0.5:
                            x = 0.5
                self._adj[lv] = x
            j = self.n % self.window
            first = min(step, self.window - j)
            self._z[j:j + first] = z[i:i + first]
            self._z[:step - first] = z[i + first:i + step]
            self.n += step
            if self.n == self.min_n or self.n > self.min_n and self.n % self.refresh_every == 0:
                self._refresh()
            i += step

    def add_one(self, z: float, abs_err: float, widths_then: list[float]) -> None:
        """:meth:`add_valid` of one label (the same arithmetic, without numpy)."""
        g = self.gamma
        for lv, w in zip(self.levels, widths_then, strict=True):
            if w == w:
                x = self._adj[lv] + (g * ((1 - lv) - 1.0) if abs_err > w else g * ((1 - lv) - 0.0))
                self._adj[lv] = 1e-4 if x < 1e-4 else 0.5 if x > 0.5 else x
        self._z[self.n % self.window] = z
        self.n += 1
        if self.n == self.min_n or self.n > self.min_n and self.n % self.refresh_every == 0:
            self._refresh()

    def _refresh(self) -> None:
        n = min(self.n, self.window)
        if n < self.min_n:
            self._q.clear()
            return
        # the "higher" empirical quantile of every level
        z = np.sort(self._z[:n])  # (a full sort of 720 is cheaper than a 2-point partition)
        for lv in self.levels:
            self._q[lv] = float(z[min(n - 1, math.ceil(min(1.0, 1 - self._adj[lv]) * (n - 1)))])
        self._qa = np.array(list(self._q.values()))

    def quantiles(self) -> np.ndarray | None:
        """The current normalised quantile per level (``levels`` order), or None while warming up."""
        if not self._q:
            return None
        qa = getattr(self, "_qa", None)  # (set by _refresh; a tracker pickled before it has none)
        return qa if qa is not None else np.array([self._q[lv] for lv in self.levels])

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
        return self.update_many([close])[0]

    def update_many(self, closes: Sequence[float]) -> list[float]:
        """The scale after each close (NaN until two closes), as :meth:`update` one by one."""
        a, b = 2 / (self.span + 1), 2 / (self.slow_span + 1)
        fast, slow, last = self.fast, self.slow, self.last_close
        out = []
        for close in closes:
            if math.isfinite(close) and close > 0:
                if math.isfinite(last):
                    r2 = (1e4 * math.log(close / last)) ** 2
                    if math.isnan(fast):
                        fast = slow = r2
                    else:
                        fast += a * (r2 - fast)
                        slow += b * (r2 - slow)
                last = close
            if math.isnan(fast):
                out.append(math.nan)
            else:
                s = math.sqrt(max(fast, 0.0625 * slow))
                out.append(s if s > 0 else math.nan)
        self.fast, self.slow, self.last_close = fast, slow, last
        return out

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

