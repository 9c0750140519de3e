"""Online learning, framework-free: predict at every feature row, learn a row only
when its label has matured.

For one symbol, :class:`OnlineLearner` receives feature rows in event-time order
(one per candle, empty windows included), a block at a time (:meth:`OnlineLearner.on_rows`:
the rows one call of the flow produced — one live, dozens in a replay). At row ``t`` it

1. **matures** the prediction made at ``t - horizon``: its label is the close at
   ``t`` (the very row just received), so it was not knowable before ``t``; the model
   and both baselines (persistence = the price at prediction time; mean of the last 10
   closes) are scored on exactly that label, and ``(x captured at t - horizon, label)``
   joins the model's next mini-batch;
2. **predicts** the log-return to ``t + horizon`` from the inputs at ``t`` and keeps
   ``x`` until that label matures.

So a label is never learned before its horizon has passed in event time (tested),
and every prediction is scored against a price the model could not have seen.

**Mini-batches.** The model learns every ``LEARN_EVERY`` (12) matured labels at once
(the default ``linear`` model; River's other kinds learn each label as it matures):
a prediction uses the model as of the last completed mini-batch, at most 11 labels
older than per-row learning would. That is what makes the per-candle cost small on
thin markets (~10 trades per candle), where the model's per-row work used to be most
of the flow's: rows between two mini-batches are predicted with one vectorised call.
A row's outputs do not depend on how rows are grouped into calls (tested bit for bit:
stream/batch parity and kill -9 recovery rely on it). The accuracy cost of learning in
mini-batches is measured in ``benchmarks/bench_online.py``.

Inputs (:func:`tickcast.model_inputs.input_block`) are standardised online; a
non-finite input value counts as missing (the model predicts from the first candle
with whatever indicators are already warm); predictions are clipped to
``clip_sigmas`` standard deviations of the labels seen so far, so one wild step
cannot produce an absurd price. ``model_metrics`` rows are written every
``METRICS_EVERY`` (12) matured labels (running figures: nothing is lost between rows).
"""

from __future__ import annotations

import itertools
import math
import pickle
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tickcast.bayes_linear import BayesLinear
from tickcast.model_inputs import input_block, input_names
from tickcast.schema import DriftEvent, FeatureRow, ModelMetrics, Prediction

BASELINES = ("persistence", "mean_last_10")
LEARN_EVERY = 12  # matured labels per mini-batch of the default model
METRICS_EVERY = 12  # model_metrics rows: one per model every this many matured labels


def _linear(seed: int, names: Sequence[str]) -> Any:
    # beta = noise precision of the label: 60 s log-returns of ~8 bps -> 1/60 bps^-2
    return BayesLinear(names, alpha=1.0, beta=1 / 60)


def _sgd(seed: int, names: Sequence[str]) -> Any:
    from river import linear_model, optim, preprocessing

    return preprocessing.StandardScaler() | linear_model.LinearRegression(
        optimizer=optim.SGD(0.005), intercept_lr=0.001, l2=1e-3)


def _arf(seed: int, names: Sequence[str]) -> Any:
    from river import forest, preprocessing

    return preprocessing.StandardScaler() | forest.ARFRegressor(n_models=5, seed=seed)


def _knn(seed: int, names: Sequence[str]) -> Any:
    from river import neighbors, preprocessing

    return preprocessing.StandardScaler() | neighbors.KNNRegressor(n_neighbors=10)


#: The online model kinds: name -> factory(seed, input names) of a fresh regressor
#: with River's ``predict_one(x)`` (the registry serves snapshots through it), inputs
#: standardised online. THE table: ``TICKCAST_ONLINE_MODEL``, ``--online-model`` and
#: the snapshots' ``model_kind`` all take their names from here, so a new kind is one
#: entry. A model with ``learn_batch(X, y)`` / ``predict_block(X)`` (numpy, NaN =
#: missing input) learns in mini-batches of ``LEARN_EVERY``; any other River regressor
#: learns and predicts one dict at a time.
#:
#: ``linear`` (default) is Bayesian linear regression (:class:`tickcast.bayes_linear.BayesLinear`,
#: River's ``StandardScaler | BayesianLinearRegression`` in numpy): an exact online ridge with
#: no learning rate to tune, whose predictions stay near zero until the data support a
#: signal. Measured on simulated BTC/USD (3,008 matured 60-s labels, 10-s candles; skill =
#: 1 - MAE/MAE_persistence) with flow_impact 0 / 0.3 / 2.0 (River, per-row learning):
#: linear -0.020 / +0.034 / +0.317; sgd (lr 0.005) -0.169 / -0.105 / +0.242; arf (5 trees,
#: ~7x slower) -0.055 / -0.004 / +0.234; knn -0.119 / -0.073 / +0.253.
MODEL_KINDS: dict[str, Callable[[int, Sequence[str]], Any]] = {
    "linear": _linear, "sgd": _sgd, "arf": _arf, "knn": _knn}


def make_model(kind: str, seed: int = 42, names: Sequence[str] = ()) -> Any:
    """A fresh regressor of the given kind (a key of :data:`MODEL_KINDS`) over ``names``."""
    try:
        factory = MODEL_KINDS[kind]
    except KeyError:
        raise ValueError(f"model kind must be one of {', '.join(MODEL_KINDS)}; got {kind!r}") from None
    return factory(seed, tuple(names))


def _adwin_class() -> Any:
    """River's ``ADWIN`` class, imported without ``river.drift``'s package ``__init__``: that
    one imports ``river.datasets`` -> ``river.stream`` -> scikit-learn, pandas and scipy
    (~1.4 CPU-s and ~170 MB of memory in a flow process that needs none of them). ``river.drift.adwin``
    itself needs only ``river.base`` and its compiled core, so it is loaded under a bare
    placeholder package that is removed again at once: a later ``from river import drift``
    imports the real package, which reuses the same ``adwin`` module (same class; tested).
    Runs once, when this module is imported (before any flow thread exists). River is pinned
    (pyproject); a River whose ``adwin`` module needs more falls back to the plain import."""
    import sys

    mod = sys.modules.get("river.drift.adwin")
    if mod is None and "river.drift" not in sys.modules:
        import importlib
        import os
        import types

        import river

        placeholder = types.ModuleType("river.drift")
        placeholder.__path__ = [os.path.join(os.path.dirname(river.__file__), "drift")]
        sys.modules["river.drift"] = placeholder
        try:
            mod = importlib.import_module("river.drift.adwin")
        except ImportError:
            sys.modules.pop("river.drift.adwin", None)
            mod = None
        finally:
            if sys.modules.get("river.drift") is placeholder:
                del sys.modules["river.drift"]
    if mod is None:
        from river import drift

        return drift.ADWIN
    return mod.ADWIN


_ADWIN = _adwin_class()


def adwin() -> Any:
    """A fresh River ``ADWIN`` drift detector (see :func:`_adwin_class`)."""
    return _ADWIN()


def _from_river_linear(model: Any, names: tuple[str, ...]) -> Any:
    """The state of River's ``StandardScaler | BayesianLinearRegression`` (the default model
    of earlier versions, still in their recovery state) as a :class:`BayesLinear`: the same
    statistics and posterior, so an upgraded flow keeps what it learned and runs on the
    mini-batch path. Anything else (another pipeline) is returned unchanged."""
    try:
        scaler, reg = model.steps.values()
        counts, means, vars_ = scaler.counts, scaler.means, scaler.vars
        idx, ss, eta = reg._idx, reg._ss_arr, reg._eta_arr
        out = BayesLinear(names, alpha=reg.alpha, beta=reg.beta)
        for i, n in enumerate(names):
            out.count[i], out.mean[i], out.var[i] = counts.get(n, 0), means.get(n, 0.0), vars_.get(n, 0.0)
        pos = [idx.get(n) for n in names]
        for i, a in enumerate(pos):
            if a is None:
                continue
            out.eta[i] = eta[a]
            for j, b in enumerate(pos):
                if b is not None:
                    out.prec[i, j] = ss[a, b]
        out.coef = np.asarray(np.linalg.solve(out.prec, out.eta), dtype=np.float64)
        std = np.sqrt(out.var)
        out.w = out.coef * np.divide(1.0, std, out=np.zeros_like(std), where=std > 0)
        out.learned = int(max(counts.values(), default=0))
        return out
    except (AttributeError, ValueError, TypeError, KeyError, np.linalg.LinAlgError):
        return model


class _PerRow:
    """Block interface over a River regressor that learns and predicts one dict at a time
    (so it learns every label: mini-batches of 1)."""

    def __init__(self, model: Any, names: tuple[str, ...]) -> None:
        self.model, self.names = model, names

    def _x(self, row: np.ndarray) -> dict[str, float]:
        return {n: v for n, v in zip(self.names, row.tolist(), strict=True) if v == v}

    def predict_block(self, X: np.ndarray) -> np.ndarray:
        return np.array([float(self.model.predict_one(self._x(r)) or 0.0) for r in X], dtype=np.float64)

    def learn_batch(self, X: np.ndarray, y: np.ndarray) -> None:
        for r, yi in zip(X, y.tolist(), strict=True):
            self.model.learn_one(self._x(r), yi)


def _block_model(model: Any, names: tuple[str, ...]) -> Any:
    if hasattr(model, "learn_batch") and hasattr(model, "predict_block"):
        return model
    return _PerRow(model, names)


@dataclass
class ErrorStats:
    """Running price errors of one predictor on matured labels."""

    n: int = 0
    abs_sum: float = 0.0
    sq_sum: float = 0.0
    dir_hits: int = 0  # predicted direction (vs the price at prediction time) was right
    dir_n: int = 0  # labels where both prediction and outcome moved
    recent: deque[float] = field(default_factory=lambda: deque(maxlen=360))
    recent_sum: float = 0.0  # running sum of `recent` (re-summed exactly when it wraps)

    def add(self, predicted: float, actual: float, price_then: float) -> None:
        e = predicted - actual
        self.n += 1
        self.abs_sum += abs(e)
        self.sq_sum += e * e
        r = self.recent
        if len(r) == r.maxlen:
            self.recent_sum -= r[0]
        r.append(abs(e))
        self.recent_sum += abs(e)
        if self.n % 3600 == 0:
            self.recent_sum = math.fsum(r)  # no drift from the running sum
        dp, da = predicted - price_then, actual - price_then
        if dp != 0 and da != 0:
            self.dir_n += 1
            self.dir_hits += (dp > 0) == (da > 0)

    def metrics_row(self, symbol: str, ts_us: int, model_name: str, horizon_seconds: int) -> ModelMetrics:
        """One ``model_metrics`` row."""
        n = self.n or 1
        r = self.recent
        return ModelMetrics(
            symbol, ts_us, model_name, horizon_seconds, self.n, self.abs_sum / n, math.sqrt(self.sq_sum / n),
            (self.dir_hits / self.dir_n) if self.dir_n else float("nan"),
            (self.recent_sum / len(r)) if r else float("nan"),
        )

    def row(self) -> dict[str, float | int]:
        n = self.n or 1
        return {
            "n": self.n,
            "mae": self.abs_sum / n,
            "rmse": math.sqrt(self.sq_sum / n),
            "directional_accuracy": (self.dir_hits / self.dir_n) if self.dir_n else float("nan"),
            "mae_recent": (self.recent_sum / len(self.recent)) if self.recent else float("nan"),
        }


@dataclass  # no slots: recovery state pickled before them holds these as dicts
class Pending:
    """A prediction waiting for its label (its inputs, the price then, the baselines')."""

    x: np.ndarray  # model inputs at prediction time (NaN = missing)
    price: float
    mean10: float
    predicted_bps: float = math.nan  # NaN: the model made no finite prediction
    predicted_price: float = math.nan


@dataclass
class LearnOutput:
    online: list[Prediction | None] = field(default_factory=list)  # aligned with the rows given
    metrics: list[ModelMetrics] = field(default_factory=list)
    drift_events: list[DriftEvent] = field(default_factory=list)
    snapshots: list[tuple[bytes, dict[str, Any]]] = field(default_factory=list)  # (pickled model, meta)

    @property
    def predictions(self) -> list[Prediction]:
        return [p for p in self.online if p is not None]


class OnlineLearner:
    """Predict-now, learn-at-maturity online model of ONE symbol (picklable).

    Feed it the symbol's feature rows in event-time order, as many per call as there
    are; each call returns what those rows produced. With 10-s rows and a 20-s horizon,
    the prediction made at row ``i`` is scored at row ``i + 2``, when its label (that
    row's close) exists, and learned with the mini-batch it completes:

    >>> import math
    >>> from tickcast.schema import FeatureRow
    >>> learner = OnlineLearner("X/USD", horizon_seconds=20)
    >>> rows = [FeatureRow("X/USD", (i + 1) * 10_000_000, 100.0 + math.sin(i / 5),
    ...                    {"ret_1": math.cos(i / 5) / 500}) for i in range(300)]
    >>> out = learner.on_rows(rows[:100])
    >>> learner.samples_seen, learner.model.learned  # 2 not matured yet; learned in batches of 12
    (98, 96)
    >>> out.predictions[0].model_name, sorted({m.model_name for m in out.metrics})
    ('river-linear', ['mean_last_10', 'persistence', 'river-linear'])
    >>> out = learner.on_rows(rows[100:])
    >>> mae = {name: st.row()["mae"] for name, st in learner.stats.items()}
    >>> mae["river-linear"] < mae["persistence"]  # the sine is learnable: it beats "no change"
    True
    """

    def __init__(self, symbol: str, horizon_seconds: int, kind: str = "linear", seed: int = 42,
                 snapshot_every: int = 360, clip_sigmas: float = 4.0, learn_every: int = LEARN_EVERY) -> None:
        if kind not in MODEL_KINDS:
            make_model(kind)  # the one error message for an unknown kind
        self.symbol = symbol
        self.kind = kind
        self.seed = seed
        self.horizon_us = horizon_seconds * 1_000_000
        self.horizon_seconds = horizon_seconds
        self.model: Any = None  # built at the first row (its inputs name the model's columns)
        self.raw_names: tuple[str, ...] = ()
        self.model_name = f"river-{kind}"
        self.pending: dict[int, Pending] = {}
        self.batch_x: list[np.ndarray] = []  # matured, not yet learned
        self.batch_y: list[float] = []
        self.closes: deque[float] = deque(maxlen=10)
        self.stats = {name: ErrorStats() for name in (self.model_name, *BASELINES)}
        self.samples_seen = 0  # matured labels (scored; learned once their mini-batch completes)
        self.learned = 0
        self.skipped_nonfinite = 0  # rows not predicted: no finite input at all, or a bad price
        self.skipped_values = 0  # non-finite input values left out (indicators warming up)
        self.nonfinite_predictions = 0  # rows whose prediction was not finite (not served, not scored)
        self.refused = 0  # matured labels in mini-batches the model refused (non-finite update)
        self.unmatured = 0  # predictions whose label never arrived (should stay 0)
        self.label_sq = 0.0  # running second moment of labels (bps^2), for clipping
        self.clip_sigmas = clip_sigmas
        self.learn_every = learn_every  # mini-batch size of a model that learns in blocks
        self.snapshot_every = snapshot_every
        self.detector = adwin()
        self.drifts = 0
        self.last_ts_us: int | None = None
        self.last_label_ts_us: int | None = None
        self._block: Any = None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.pop("_block", None)  # derived from the model; not part of the recovery state
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        if "raw_names" not in state:  # a learner pickled before mini-batches: keep its model, per row
            state.update(raw_names=(), batch_x=[], batch_y=[], learned=state.get("samples_seen", 0), learn_every=1,
                         nonfinite_predictions=0, refused=0,
                         seed=42, unmatured=state.get("unmatured", 0) + len(state.get("pending", {})),
                         pending={})
        self.__dict__.update(state)
        self._block = None

    @property
    def version(self) -> str:
        """Lineage of this online model (the registry adds a version per snapshot)."""
        return f"{self.model_name}-online"

    def _start(self, raw_names: tuple[str, ...]) -> None:
        if not self.raw_names:
            self.raw_names = raw_names
        names = input_names(self.raw_names)
        if self.model is None:
            self.model = make_model(self.kind, self.seed, names)
        elif self.kind == "linear" and not isinstance(self.model, BayesLinear):
            self.model = _from_river_linear(self.model, names)  # recovery state of an earlier version
            self.learn_every = LEARN_EVERY
        self._block = _block_model(self.model, names)

    def _inputs(self, rows: Sequence[FeatureRow]) -> np.ndarray:
        names = self.raw_names
        flat: Iterable[float]
        if all(tuple(r.values) == names for r in rows):  # the common case: the model's own key order
            flat = itertools.chain.from_iterable(r.values.values() for r in rows)
        else:
            flat = (r.values.get(n, math.nan) for r in rows for n in names)
        raw = np.fromiter(flat, np.float64, len(rows) * len(names)).reshape(len(rows), len(names))
        X: np.ndarray = input_block(names, [r.close for r in rows], raw)
        return X

    def on_row(self, row: FeatureRow) -> LearnOutput:
        """One row (:meth:`on_rows` of a single row)."""
        return self.on_rows((row,))

    def on_rows(self, rows: Sequence[FeatureRow]) -> LearnOutput:
        out = LearnOutput()
        if not rows:
            return out
        if self._block is None:
            first = next((r for r in rows if r.values), None)
            if first is None:  # no feature values at all yet: nothing to name the model's inputs by
                self.skipped_nonfinite += len(rows)
                self.closes.extend(r.close for r in rows)
                out.online = [None] * len(rows)
                return out
            self._start(tuple(first.values))
        return self._block_rows([r.ts_us for r in rows], [r.close for r in rows], self._inputs(rows))

    def on_arrays(self, ts_us: Sequence[int], close: Sequence[float], values: np.ndarray,
                  names: Sequence[str]) -> LearnOutput:
        """:meth:`on_rows` of rows given as columns (training's progressive pass): event times,
        closes, and the rows x ``names`` array of feature values. Same outputs as the rows."""
        names = tuple(names)
        if self._block is None:
            self._start(names)
        if names != self.raw_names:
            pos = {n: j for j, n in enumerate(names)}
            values = np.column_stack([values[:, pos[n]] if n in pos else np.full(len(values), np.nan)
                                      for n in self.raw_names])
        X: np.ndarray = input_block(self.raw_names, close, values)
        return self._block_rows(list(ts_us), list(close), X)

    def _block_rows(self, ts_list: list[int], close_list: list[float], X: np.ndarray) -> LearnOutput:
        out = LearnOutput()
        block = self._block
        ok = np.isfinite(X)
        n_ok = ok.sum(axis=1).tolist()
        width = X.shape[1]
        h = self.horizon_us
        pending, closes = self.pending, self.closes
        every = 1 if isinstance(block, _PerRow) else self.learn_every
        # 1. schedule (scalar, in row order): maturities, mini-batches, clip limits, pending entries
        matured: list[tuple[Pending, float, float, int] | None] = []  # (entry, label bps, label price, n)
        learn_at: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # row -> mini-batch learned before its prediction
        limits: list[float] = []
        entries: list[Pending | None] = []
        counts: list[tuple[int, int]] = []  # (skipped_nonfinite, skipped_values) after each row: snapshot metas
        for i, (ts, close) in enumerate(zip(ts_list, close_list, strict=True)):
            m = pending.pop(ts - h, None)
            if pending:
                cutoff = ts - h  # keys are in event-time order: stale ones are the first ones
                stale = []
                for k in pending:
                    if k > cutoff:
                        break
                    stale.append(k)
                for k in stale:  # a label that can no longer arrive (a gap in the rows)
                    del pending[k]
                    self.unmatured += 1
            item = None
            if m is not None:
                y = math.log(close / m.price) * 1e4 if close > 0 and math.isfinite(close) else math.nan
                if math.isfinite(y):
                    self.samples_seen += 1
                    item = (m, y, close, self.samples_seen)
                    self.label_sq += y * y
                    self.batch_x.append(m.x)
                    self.batch_y.append(y)
                    if len(self.batch_y) >= every:
                        learn_at[i] = (np.array(self.batch_x), np.array(self.batch_y))
                        self.batch_x, self.batch_y = [], []
                else:
                    self.skipped_nonfinite += 1
            matured.append(item)
            closes.append(close)
            seen = self.samples_seen
            limits.append(self.clip_sigmas * math.sqrt(self.label_sq / seen) if seen >= 30 else math.inf)
            k = n_ok[i]
            if k == 0 or not (close > 0 and math.isfinite(close)):
                self.skipped_nonfinite += 1
                entries.append(None)
            else:
                self.skipped_values += width - k
                entries.append(Pending(X[i], close, sum(closes) / len(closes)))
                pending[ts] = entries[-1]  # type: ignore[assignment]
            counts.append((self.skipped_nonfinite, self.skipped_values))
        # 2. segments between mini-batches: predict each with one call, then score row by row
        starts = sorted({0, *learn_at})
        ends = [*starts[1:], len(ts_list)]
        stats = self.stats
        model_stats, pers, mean10 = stats[self.model_name], stats["persistence"], stats["mean_last_10"]
        sym, hz, kind, mname, version = (self.symbol, self.horizon_seconds, f"online:{self.kind}",
                                         self.model_name, self.version)
        for a, b in zip(starts, ends, strict=True):
            if a in learn_at:
                Xb, yb = learn_at[a]
                if block.learn_batch(Xb, yb) is not False:
                    self.learned += len(yb)
                else:
                    self.refused += len(yb)
            if a == b:
                continue
            closes_seg = np.array(close_list[a:b], dtype=np.float64)
            with np.errstate(invalid="ignore", over="ignore"):
                y_hat = block.predict_block(X[a:b])
                lim = np.array(limits[a:b], dtype=np.float64)
                y_hat = np.minimum(np.maximum(y_hat, -lim), lim)
                price = closes_seg * np.exp(y_hat / 1e4)
            y_list, p_list = y_hat.tolist(), price.tolist()
            for j in range(a, b):
                ts = ts_list[j]
                item = matured[j]
                if item is not None:
                    m, y, label, seen = item
                    if m.predicted_bps == m.predicted_bps:  # it made a prediction: score all on this label
                        model_stats.add(m.predicted_price, label, m.price)
                        pers.add(m.price, label, m.price)
                        mean10.add(m.mean10, label, m.price)
                        self.last_label_ts_us = ts
                        if model_stats.n % METRICS_EVERY == 0:
                            for name, st in stats.items():
                                out.metrics.append(st.metrics_row(sym, ts, name, hz))
                        self._drift(abs(y - m.predicted_bps), ts, seen, out)
                    if self.snapshot_every and seen % self.snapshot_every == 0:
                        out.snapshots.append(self._snapshot(ts, seen, counts[j]))
                e = entries[j]
                yh, pr = y_list[j - a], p_list[j - a]
                if e is None or not (math.isfinite(yh) and math.isfinite(pr)):
                    if e is not None:
                        self.nonfinite_predictions += 1
                    out.online.append(None)
                    continue
                e.predicted_bps, e.predicted_price = yh, pr
                out.online.append(Prediction(sym, ts, version, hz, pr, kind, mname, close_list[j], yh / 1e4,
                                             self.learned))
        self.last_ts_us = ts_list[-1]
        return out

    def final_metrics(self) -> list[ModelMetrics]:
        """The ``model_metrics`` rows of the newest label if it was not written yet (rows are
        written every ``METRICS_EVERY`` labels): at the end of a replay, so the table ends
        at the exact final figures."""
        n = self.stats[self.model_name].n
        ts = getattr(self, "last_label_ts_us", None)
        if not n or n % METRICS_EVERY == 0 or ts is None:
            return []
        return [st.metrics_row(self.symbol, ts, name, self.horizon_seconds) for name, st in self.stats.items()]

    def _drift(self, residual: float, ts_us: int, seen: int, out: LearnOutput) -> None:
        self.detector.update(residual)
        if self.detector.drift_detected:
            self.drifts += 1
            out.drift_events.append(DriftEvent(
                self.symbol, ts_us, self.version, "ADWIN(abs residual bps)",
                f"drift #{self.drifts} after {seen} samples; "
                f"recent MAE {self.stats[self.model_name].row()['mae_recent']:.4g}",
            ))

    def _snapshot(self, ts_us: int, seen: int, skipped: tuple[int, int]) -> tuple[bytes, dict[str, Any]]:
        """The model as it is when the ``seen``-th label matures at ``ts_us`` (mid-block;
        ``skipped``: the skip counters as they were then)."""
        meta = self.snapshot_meta()
        meta.update(samples_seen=seen, skipped_nonfinite=skipped[0] + self.nonfinite_predictions,
                    skipped_values=skipped[1], source_position={"last_feature_ts_us": ts_us})
        return pickle.dumps(self.model, protocol=5), meta

    def snapshot_meta(self) -> dict[str, Any]:
        return {
            "model_kind": f"online:{self.kind}", "symbol": self.symbol, "lineage": self.version,
            "horizon_seconds": self.horizon_seconds, "samples_seen": self.samples_seen,
            "learned": self.learned, "refused": getattr(self, "refused", 0),
            "skipped_nonfinite": self.skipped_nonfinite + self.nonfinite_predictions,
            "skipped_values": self.skipped_values,
            "drifts": self.drifts,
            "metrics": {k: v.row() for k, v in self.stats.items()},
            "source_position": {"last_feature_ts_us": self.last_ts_us},
        }
