"""The live scoreboard of ONE symbol, inside the feature flow: every candidate predicts
at every feature row, is scored when the label matures, and the choice and the
prediction intervals follow (framework-free; driven by :class:`tickcast.pipeline.SymbolPipeline`).

At row ``t`` (after the online learner's own step) :meth:`LiveBoard.on_row`

1. **matures** the predictions made at ``t - horizon``: the label is the close at
   ``t``; each candidate's absolute error feeds the :class:`~tickcast.selection.Selector`
   and its log-return residual feeds its :class:`~tickcast.selection.IntervalTracker`;
   the production model is also scored into ``model_metrics`` (``model_name =
   "production"``) exactly like the online model, so a decaying promoted model shows
   up in the same table;
2. **predicts**: persistence (the close), the online model (its prediction of this row,
   given), the production model (``production = (name, version, predictor)``, supplied
   by the flow from the registry; its ``predict_price(close, values)`` is the API's);
   each gets interval bounds from its tracker (``pi1_*``/``pi2_*`` columns of
   ``predictions``), and an ``auto`` prediction row records what ``model=auto`` serves.

:meth:`LiveBoard.state` is the JSON-able scoreboard the flow writes to the online store
for ``/predict`` and ``/models``: the choice, why and since when, each candidate's MAE
and test against the choice on the window, and each candidate's interval half-widths
at the newest row (log-return bps).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from tickcast.learner import ErrorStats
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
