"""The live scoreboard of ONE symbol, inside the feature flow: every candidate predicts
at every feature row, is scored when the label matures, and the choice and the
prediction intervals follow (framework-free; driven by :class:`tickcast.pipeline.SymbolPipeline`).

At row ``t`` (after the online learner's own step) :meth:`LiveBoard.on_rows`

1. **matures** the predictions made at ``t - horizon``: the label is the close at
   ``t``; each candidate's absolute error feeds the :class:`~tickcast.selection.Selector`
   and its log-return residual feeds its :class:`~tickcast.selection.IntervalTracker`;
   the production model is also scored into ``model_metrics`` (``model_name =
   "production"``, one row every ``METRICS_EVERY`` labels) exactly like the online
   model, so a decaying promoted model shows up in the same table;
2. **predicts**: persistence (the close), the online model (its prediction of this row,
   given), the production model (``production = (name, version, predictor)``, supplied
   by the flow from the registry; its ``predict_price(close, values)`` is the API's);
   each gets interval bounds from its tracker (``pi1_*``/``pi2_*`` columns of
   ``predictions``), and an ``auto`` prediction row records what ``model=auto`` serves.

:meth:`LiveBoard.on_rows` takes all the rows of one call at once (a replay hands over
dozens per call; live, one) and gives exactly what that many one-row calls would, bit
for bit, with the same state after it: every row is still treated in the order above,
but the work is done per block. The choice moves only at a selector check (every
``check_every`` labels) and an interval's quantiles only at a refresh (every
``refresh_every`` labels), so between two such events the half-widths are the
quantiles times each row's sigma, one numpy operation for the whole run of rows; the
predictions waiting for their label are numpy columns matched to their label rows by
time (``np.searchsorted``). A one-row call (live) takes a plain-Python path with the same
arithmetic in the same order. Bit-for-bit equality holds because within a call only
elementwise operations and sequential scalar loops are used (reductions run over whole
windows, see ``tickcast.selection``), and the residual logs and interval bounds always
use ``np.log``/``np.exp`` on contiguous arrays, whose result for an element does not
depend on the array's length (one row or a block: the same kernel; tested). Rows must
come in increasing time (the windower emits them so); a row at or before the newest one
drops the predictions waiting from that time on.

:meth:`LiveBoard.state` is the JSON-able scoreboard the flow writes to the online store
for ``/predict`` and ``/models``: the choice, why and since when, each candidate's MAE
and test against the choice on the window, and each candidate's interval half-widths
at the newest row (log-return bps).
"""

from __future__ import annotations

import bisect
import itertools
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tickcast.learner import METRICS_EVERY, ErrorStats
from tickcast.schema import FeatureRow, ModelMetrics, Prediction, json_safe, us_to_iso
from tickcast.selection import (
    IntervalTracker,
    SelectionRule,
    Selector,
    VolScale,
    interval,
    level_key,
)

DEFAULT_LEVELS = (0.8, 0.95)


_CANDS = ("persistence", "online", "production")  # a row's predictions, in the order every step visits them
_NEW = tuple.__new__  # a Prediction from a ready tuple (no per-field call: the per-row output is the hot loop)


@dataclass(slots=True)
class _Pending:  # a waiting prediction of a board pickled before the block version (see __setstate__)
    price: float  # close at prediction time
    sigma: float
    preds: dict[str, tuple[float, dict[float, float]]]  # candidate -> (predicted price, half-widths)


@dataclass
class BoardOutput:
    predictions: list[Prediction] = field(default_factory=list)  # production + auto rows, in row order
    metrics: list[ModelMetrics] = field(default_factory=list)  # production model_metrics rows
    online: list[Prediction | None] = field(default_factory=list)  # per row: the online prediction with its intervals


def _nans(shape: tuple[int, ...]) -> np.ndarray:
    a = np.empty(shape)  # (np.full is a Python-level wrapper: this is a third of its cost)
    a.fill(math.nan)
    return a


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


def _production_prices(predictor: Any, rows: list[FeatureRow]) -> list[float]:
    """The production model's price per row, NaN where it made none (features not warm,
    a model raising, a non-positive or non-finite price: no prediction, no crash)."""
    out = []
    for row in rows:
        try:
            price = float(predictor.predict_price(row.close, row.values)[0])
        except Exception:  # noqa: BLE001
            price = math.nan
        out.append(price if math.isfinite(price) and price > 0 else math.nan)
    return out


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
        self.prod_stats = ErrorStats()
        self.prod_id: tuple[str, str] | None = None  # (name, version) of the production model
        self.online_id: tuple[str, str] | None = None
        self.last_ts_us: int | None = None
        self.served: dict[str, int] = {}  # candidate -> rows it was the choice
        # the predictions waiting for their label (rows newer than the newest row - horizon),
        # one column per row: time, close, sigma, and per candidate (_CANDS order) whether it
        # predicted, its price and its half-widths per level
        n = len(self.levels)
        self._p_ts = np.empty(0, np.int64)
        self._p_close = np.empty(0)
        self._p_sig = np.empty(0)
        self._p_has = np.empty((3, 0), bool)
        self._p_price = np.empty((3, 0))
        self._p_wid = np.empty((3, n, 0))

    def __setstate__(self, state: dict[str, Any]) -> None:
        state.pop("_preds", None)  # (before the block version: the newest row's, now read from the columns)
        state.pop("_widths", None)
        pend = state.pop("pending", None)
        if pend is not None:  # pickled before the block version: its waiting predictions become columns
            levels = state["levels"]
            n = len(pend)
            has, price, wid = np.zeros((3, n), bool), np.full((3, n), math.nan), np.full((3, len(levels), n), math.nan)
            for k, p in enumerate(pend.values()):
                for name, (v, widths) in p.preds.items():
                    c = _CANDS.index(name)
                    has[c, k], price[c, k] = True, v
                    wid[c, :, k] = [widths.get(lv, math.nan) for lv in levels]
            state.update(_p_ts=np.array(list(pend), np.int64), _p_close=np.array([p.price for p in pend.values()]),
                         _p_sig=np.array([p.sigma for p in pend.values()]), _p_has=has, _p_price=price, _p_wid=wid)
        self.__dict__.update(state)

    def on_row(self, row: FeatureRow, online: Prediction | None,
               production: tuple[str, str, Any] | None) -> BoardOutput:
        """One feature row: :meth:`on_rows` of a one-row call."""
        return self.on_rows([row], [online], production)

    def on_rows(self, rows: list[FeatureRow], online: list[Prediction | None],
                production: tuple[str, str, Any] | None) -> BoardOutput:
        """The feature rows of one call, in time order. ``online[i]``: the online model's
        prediction of ``rows[i]``, or None (the output's ``online[i]`` is that record with its
        interval columns); ``production``: ``(name, version, predictor)`` of the promoted
        model, or None. Output and state are those of one :meth:`on_row` per row."""
        out = BoardOutput()
        if production is not None:
            fsv = {r.feature_set_version for r in rows}
            ok = {v: _scorable_here(production[2], r) for v, r in {r.feature_set_version: r for r in rows}.items()}
            if len(fsv) > 1:  # never within one flow; still row by row if so
                prods = [production if ok[r.feature_set_version] else None for r in rows]
            else:
                prods = [production if fsv and ok[next(iter(fsv))] else None] * len(rows)
        else:
            prods = [None] * len(rows)
        start = 0
        for i in range(1, len(rows) + 1):  # blocks: a run of rows in increasing time with one production model
            if i == len(rows) or prods[i] is not prods[i - 1] or rows[i].ts_us <= rows[i - 1].ts_us:
                if i - start == 1 and (self.last_ts_us is None or rows[start].ts_us > self.last_ts_us):
                    self._one(rows[start], online[start], prods[start], out)  # a live call: one row
                else:
                    self._block(rows[start:i], online[start:i], prods[start], out)
                start = i
        return out

    def _block(self, rows: list[FeatureRow], online: list[Prediction | None],
               production: tuple[str, str, Any] | None, out: BoardOutput) -> None:
        n, hor, levels = len(rows), self.horizon_us, self.levels
        ts = [r.ts_us for r in rows]
        close = [r.close for r in rows]
        if self.last_ts_us is not None and ts[0] <= self.last_ts_us:  # time went back: those waiting are void
            keep = self._p_ts < ts[0]
            self._p_ts, self._p_close, self._p_sig = self._p_ts[keep], self._p_close[keep], self._p_sig[keep]
            self._p_has, self._p_price, self._p_wid = self._p_has[:, keep], self._p_price[:, keep], self._p_wid[..., keep]
        self.last_ts_us = ts[-1]
        sig_l = self.vol.update_many(close)
        sig = np.array(sig_l)
        # 1. every candidate's prediction at every row (NaN price: none)
        has = np.zeros((3, n), bool)
        price = _nans((3, n))
        has[0], price[0] = True, close
        if any(o is not None for o in online):
            has[1] = [o is not None for o in online]
            price[1] = [o.predicted_price if o is not None else math.nan for o in online]
        if production is not None:
            price[2] = _production_prices(production[2], rows)
            has[2] = np.isfinite(price[2])
        # all waiting predictions and this block's, as columns: block row i is column npend + i
        npend = len(self._p_ts)
        cts = np.concatenate((self._p_ts, np.array(ts, np.int64)))
        cclose = np.concatenate((self._p_close, close))
        csig = np.concatenate((self._p_sig, sig))
        chas = np.concatenate((self._p_has, has), axis=1)
        cprice = np.concatenate((self._p_price, price), axis=1)
        cwid = np.concatenate((self._p_wid, _nans((3, len(levels), n))), axis=2)
        # 2. the labels: block row i matures the predictions made at ts_i - horizon
        want = cts[npend:] - hor
        j = np.minimum(np.searchsorted(cts, want), npend + n - 1)
        lab = np.flatnonzero((cts[j] == want) & (j < np.arange(npend, npend + n)))  # block rows with a label
        lj = j[lab]  # the column of the predictions each label scores
        label = cclose[npend + lab]
        pres = chas[:, lj]
        lprice = cprice[:, lj]
        losses = np.where(pres, np.abs(lprice - label), math.nan)
        elig = pres & (lprice > 0) & (label > 0)  # a residual for the candidate's tracker
        err = _nans(lprice.shape)  # 1e4 * ln(label / price) where eligible (np.log of contiguous arrays: split-proof)
        np.log(np.divide(label, lprice, out=_nans(lprice.shape), where=elig), out=err, where=elig)
        err *= 1e4
        sig_then = csig[lj]
        lab_ts = cts[npend + lab].tolist()
        # 3. selector and production stats; a new production model (only ever at a block's first row)
        # takes effect after that row's label
        pid = (production[0], production[1]) if production is not None else None
        change = pid != self.prod_id
        split = 1 if change and len(lab) and lab[0] == 0 else 0
        sel = self.selector
        steps: list[tuple[int, str]] = [(-1, sel.choice)]  # (block row, choice from that row on)
        for k, (a, b) in enumerate(((0, split), (split, len(lab))) if change else ((0, len(lab)),)):
            if b > a:
                names = [c for c in range(3) if np.count_nonzero(pres[c, a:b])]  # a name's record starts where it first predicted
                got = sel.update_many(lab_ts[a:b], {_CANDS[c]: losses[c, a:b] for c in names},
                                      {_CANDS[c]: int(pres[c, a:b].argmax()) for c in names})
                steps.extend((int(lab[a + i]), choice) for i, choice in got)
                if 2 in names:
                    self._score_production(lab[a:b], lj[a:b], label[a:b], cprice, cclose, ts, out)
            if change and k == 0:
                self._new_production(pid, ts[0])
                steps.append((0, sel.choice))
        # 4. the intervals: trackers in the order one row at a time creates them, then per
        # tracker the runs of rows between quantile refreshes
        valid = elig & np.isfinite(err) & np.isfinite(sig_then) & (sig_then > 0)
        if change and split:
            elig[2, 0] = valid[2, 0] = False  # that label went to the replaced model's tracker
        firsts = []
        for c, name in enumerate(_CANDS):
            if name not in self.trackers:
                ev = [(int(lab[elig[c]][0]), 0) if np.count_nonzero(elig[c]) else (n, 0),
                      (int(has[c].argmax()), 1) if np.count_nonzero(has[c]) else (n, 1)]
                if min(ev)[0] < n:
                    firsts.append((*min(ev), c))
        for *_, c in sorted(firsts):
            self.trackers[_CANDS[c]] = IntervalTracker(self.levels, window=self.rule.window)
        for c, name in enumerate(_CANDS):
            t = self.trackers.get(name)
            if t is not None:
                self._track(t, cwid[c], npend, sig, lab[valid[c]], lj[valid[c]], sig_then[valid[c]], err[c, valid[c]])
        # 5. the rows: online (with intervals), production and auto predictions
        self._emit(rows, ts, close, online, production, has, price, cwid[:, :, npend:], steps, out)
        # what still waits for its label (and the newest row: state() reads it)
        k = min(int(np.searchsorted(cts, ts[-1] - hor, "right")), len(cts) - 1)  # (the newest row stays: state())
        self._p_ts, self._p_close, self._p_sig = cts[k:].copy(), cclose[k:].copy(), csig[k:].copy()
        self._p_has, self._p_price, self._p_wid = chas[:, k:].copy(), cprice[:, k:].copy(), cwid[..., k:].copy()

    def _one(self, row: FeatureRow, o: Prediction | None, production: tuple[str, str, Any] | None,
             out: BoardOutput) -> None:
        """:meth:`_block` of one row in plain Python (a live flow calls with one row at a
        time): the same steps and arithmetic in the same order, so the same bits."""
        hor, levels, sym, h = self.horizon_us, self.levels, self.symbol, self.horizon_seconds
        ts, close = row.ts_us, row.close
        self.last_ts_us = ts
        sigma = self.vol.update_many([close])[0]
        has = [True, o is not None, False]
        price = [close, o.predicted_price if o is not None else math.nan, math.nan]
        if production is not None:
            price[2] = _production_prices(production[2], [row])[0]
            has[2] = price[2] == price[2]
        pid = (production[0], production[1]) if production is not None else None
        change = pid != self.prod_id
        pts = self._p_ts
        ptl = pts.tolist()
        j = bisect.bisect_left(ptl, ts - hor)
        elig: list[int] = []
        if j < len(ptl) and ptl[j] == ts - hor:  # 1. the label of the predictions made at ts - horizon
            phas, pprice = self._p_has[:, j].tolist(), self._p_price[:, j].tolist()
            self.selector.update(ts, {_CANDS[c]: abs(pprice[c] - close) for c in range(3) if phas[c]})
            if phas[2]:
                stats = self.prod_stats
                stats.add(pprice[2], close, float(self._p_close[j]))
                if stats.n % METRICS_EVERY == 0:
                    out.metrics.append(stats.metrics_row(sym, ts, "production", h))
            elig = [c for c in range(3) if phas[c] and pprice[c] > 0 and close > 0 and not (c == 2 and change)]
        if change:
            self._new_production(pid, ts)
        # 2. the trackers (created in the order one row at a time creates them), their labels, and their widths now
        for c in [*elig, *(c for c in range(3) if has[c])]:
            if _CANDS[c] not in self.trackers:
                self.trackers[_CANDS[c]] = IntervalTracker(self.levels, window=self.rule.window)
        if elig:
            ratio = np.array([close / pprice[c] for c in elig])
            err = np.log(ratio, out=np.empty(len(elig)), where=np.ones(len(elig), bool)).tolist()
            sig_then = float(self._p_sig[j])
            for c, e in zip(elig, err, strict=True):
                e *= 1e4
                if math.isfinite(e) and math.isfinite(sig_then) and sig_then > 0:
                    self.trackers[_CANDS[c]].add_one(abs(e) / sig_then, abs(e), self._p_wid[c, :, j].tolist())
        wid = [[math.nan] * len(levels) for _ in range(3)]
        for c, name in enumerate(_CANDS):
            t = self.trackers.get(name)
            q = t.quantiles() if t is not None else None
            if q is not None:
                wid[c] = [x * sigma for x in q.tolist()]
        # 3. the records
        nl = min(2, len(levels))
        lv1 = levels[0] if levels else math.nan
        lv2 = levels[1] if len(levels) > 1 else math.nan
        bounds = [[math.nan] * 4 for _ in range(3)]
        present = [c for c in range(3) if has[c]]
        if nl:
            f = np.exp(np.array([wid[c][:nl] for c in present]) / 1e4).tolist()
            for c, fc in zip(present, f, strict=True):
                for lv in range(nl):
                    bounds[c][2 * lv], bounds[c][2 * lv + 1] = price[c] / fc[lv], price[c] * fc[lv]
        if o is not None:
            self.online_id = (o.model_name, o.model_version)
            b = bounds[1]
            out.online.append(_NEW(Prediction, o[:10] + (lv1, b[0], b[1], lv2, b[2], b[3])))
        else:
            out.online.append(None)
        if has[2] and production is not None:
            p, b = price[2], bounds[2]
            out.predictions.append(_NEW(Prediction, (sym, ts, production[1], h, p, f"production:{production[0]}",
                                                     production[0], close, math.log(p / close), 0,
                                                     lv1, b[0], b[1], lv2, b[2], b[3])))
        choice = self.selector.choice
        c = 1 if choice == "online" else 2 if choice == "production" else 0
        if not has[c]:
            c = 0
        name = _CANDS[c]
        self.served[name] = self.served.get(name, 0) + 1
        p, b = price[c], bounds[c]
        ident = self.prod_id if c == 2 else self.online_id if c == 1 else None
        out.predictions.append(_NEW(Prediction, (sym, ts, "auto", h, p, f"auto:{name}", ident[0] if ident else name,
                                                 close, math.log(p / close), 0, lv1, b[0], b[1], lv2, b[2], b[3])))
        # 4. what waits for its label (and this row: state() reads it)
        k = bisect.bisect_right(ptl, ts - hor)
        self._p_ts = np.concatenate((pts[k:], np.array([ts], np.int64)))
        self._p_close = np.concatenate((self._p_close[k:], [close]))
        self._p_sig = np.concatenate((self._p_sig[k:], [sigma]))
        self._p_has = np.concatenate((self._p_has[:, k:], np.array(has)[:, None]), axis=1)
        self._p_price = np.concatenate((self._p_price[:, k:], np.array(price)[:, None]), axis=1)
        self._p_wid = np.concatenate((self._p_wid[..., k:], np.array(wid)[..., None]), axis=2)

    def _score_production(self, lab: np.ndarray, lj: np.ndarray, label: np.ndarray, cprice: np.ndarray,
                          cclose: np.ndarray, ts: list[int], out: BoardOutput) -> None:
        """The production model's running errors (a model_metrics row every METRICS_EVERY labels)."""
        stats = self.prod_stats
        for i, col, y in zip(lab.tolist(), lj.tolist(), label.tolist(), strict=True):
            p = cprice[2, col]
            if p == p:
                stats.add(float(p), y, float(cclose[col]))
                if stats.n % METRICS_EVERY == 0:
                    out.metrics.append(stats.metrics_row(self.symbol, ts[i], "production", self.horizon_seconds))

    def _new_production(self, pid: tuple[str, str] | None, ts: int) -> None:
        sel = self.selector
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

    @staticmethod
    def _track(t: IntervalTracker, wid: np.ndarray, npend: int, sig: np.ndarray, rows: np.ndarray,
               cols: np.ndarray, sig_then: np.ndarray, err: np.ndarray) -> None:
        """Feed ``t`` its labels (at block ``rows``, scoring the predictions of columns ``cols``)
        and fill its half-widths of the block's rows (``wid[:, npend:]``): a row's half-widths
        are the quantiles after that row's label times the row's sigma."""
        n, k, row = len(sig), 0, 0
        e = np.abs(err)
        z = e / sig_then
        while True:
            end = k + t.adds_to_refresh()  # the label after which the quantiles move
            stop = int(rows[end - 1]) if end <= len(rows) else n
            q = t.quantiles()
            if q is not None and stop > row:
                wid[:, npend + row:npend + stop] = q[:, None] * sig[None, row:stop]
            if min(end, len(rows)) > k:  # every label here scores a row before `stop`: its widths exist
                t.add_valid(z[k:end], e[k:end], wid[:, cols[k:end]])
            if stop == n:
                return
            k, row = end, stop

    def _emit(self, rows: list[FeatureRow], ts: list[int], close: list[float], online: list[Prediction | None],
              production: tuple[str, str, Any] | None, has: np.ndarray, price: np.ndarray, wid: np.ndarray,
              steps: list[tuple[int, str]], out: BoardOutput) -> None:
        """The rows' online (with intervals), production and auto predictions. ``steps``:
        ``(row, choice from that row on)``; a choice with no prediction at a row serves persistence."""
        sym, h, levels, n = self.symbol, self.horizon_seconds, self.levels, len(rows)
        lv1 = levels[0] if levels else math.nan
        lv2 = levels[1] if len(levels) > 1 else math.nan
        ar = np.arange(n)
        # bounds[c] = (lo1, hi1, lo2, hi2) x rows, as `interval` gives them (np.exp of contiguous
        # arrays: the same bits for an element whatever the array's length, so however rows are split)
        bounds = _nans((3, 4, n))
        nl = min(2, len(levels))
        for c in range(3):
            if np.count_nonzero(has[c]):
                f = np.exp(wid[c, :nl] / 1e4)
                bounds[c, 0:2 * nl:2] = price[c] / f
                bounds[c, 1:2 * nl:2] = price[c] * f
        cidx = np.zeros(n, np.intp)
        for row, choice in steps:
            cidx[max(row, 0):] = _CANDS.index(choice)
        cidx = np.where(has[cidx, ar], cidx, 0)
        served, chosen = self.served, cidx.tolist()
        for c in sorted(set(chosen), key=chosen.index):  # (dict order: first served, first key)
            served[_CANDS[c]] = served.get(_CANDS[c], 0) + chosen.count(c)
        # the online model's name at each row: its newest identity up to that row (only needed where auto serves it)
        online_id = self.online_id
        onames: list[str] | itertools.repeat[str]
        if 1 in chosen:
            onames = []
            for o in online:
                if o is not None:
                    online_id = (o.model_name, o.model_version)
                onames.append(online_id[0] if online_id else "online")
        else:
            onames = itertools.repeat("online")
            last = next((o for o in reversed(online) if o is not None), None)
            if last is not None:
                online_id = (last.model_name, last.model_version)
        self.online_id = online_id
        auto_p = price[cidx, ar]
        log = math.log
        kinds = [f"auto:{name}" for name in _CANDS]
        pname = self.prod_id[0] if self.prod_id else "production"
        auto = [_NEW(Prediction, (sym, t, "auto", h, p, kinds[c], "persistence" if c == 0 else pname if c == 2 else on,
                                  cl, log(p / cl), 0, lv1, b[0], b[1], lv2, b[2], b[3]))
                for t, p, c, on, cl, b in zip(ts, auto_p.tolist(), chosen, onames, close,
                                               bounds[cidx, :, ar].tolist(), strict=False)]  # (onames may repeat)
        out.online.extend([_NEW(Prediction, o[:10] + (lv1, b[0], b[1], lv2, b[2], b[3])) if o is not None else None
                           for o, b in zip(online, bounds[1].T.tolist(), strict=True)])
        if production is None or not np.count_nonzero(has[2]):
            out.predictions.extend(auto)
            return
        name, version = production[0], production[1]
        kind = f"production:{name}"
        prod = [_NEW(Prediction, (sym, t, version, h, p, kind, name, cl, log(p / cl), 0,
                                  lv1, b[0], b[1], lv2, b[2], b[3])) if ok else None
                for t, p, ok, cl, b in zip(ts, price[2].tolist(), has[2].tolist(), close, bounds[2].T.tolist(),
                                           strict=True)]
        out.predictions.extend([x for pr, au in zip(prod, auto, strict=True) for x in ((pr, au) if pr else (au,))])

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
        preds: set[str] = set()  # the candidates that predicted the newest row, and their half-widths then
        widths: dict[str, dict[float, float]] = {}
        if len(self._p_ts) and self._p_ts[-1] == self.last_ts_us:
            has, wid = self._p_has[:, -1].tolist(), self._p_wid[:, :, -1].tolist()
            preds = {name for c, name in enumerate(_CANDS) if has[c]}
            widths = {name: {lv: w for lv, w in zip(self.levels, wid[c], strict=True) if w == w}
                      for c, name in enumerate(_CANDS) if has[c]}
        cands: dict[str, Any] = {}
        for name in CANDIDATE_ORDER:
            if name not in preds and name not in sel.tests and name != sel.choice:
                continue
            mae, n = sel.mae(name)
            t = sel.tests.get(name, {})
            cands[name] = {"name": self._name(name), "version": self._version(name), "mae": mae, "n": n,
                           "p_value": t.get("p_value") if name != sel.choice else None,
                           "margin": t.get("margin") if name != sel.choice else None,
                           "intervals_bps": {level_key(lv): w for lv, w in widths.get(name, {}).items()}}
        choice = sel.choice if sel.choice in preds else "persistence"
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
