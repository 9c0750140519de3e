"""Online learning: no leakage, labels learned only at maturity, honest baselines."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest

from models.evaluation import diebold_mariano
from tickcast.features import FEATURE_NAMES
from tickcast.learner import OnlineLearner
from tickcast.pipeline import StepOutput, run_batch
from tickcast.schema import FeatureRow
from tickcast.sim import MarketSimulator, SimParams

H = 60
W = 10


def simulate(params: SimParams, n: int = 150_000, seed: int = 4) -> StepOutput:
    trades = MarketSimulator(["BTC/USD"], seed=seed, params=params).next_trades(n)
    return run_batch(trades, W, 0.0, horizon_seconds=H, online_model="linear", snapshot_every=0)


def realised(out: StepOutput) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(predicted, actual, price at prediction) per matured prediction — the SQL join
    of predictions with the feature row at ts + horizon, done in Python."""
    close = {f.ts_us: f.close for f in out.features}
    rows = [(p.predicted_price, close[p.ts_us + H * 1_000_000], p.price_at_ts)
            for p in out.predictions if p.ts_us + H * 1_000_000 in close
            and p.model_kind.startswith("online")]  # not the scoreboard's auto rows
    a = np.array(rows)
    return a[:, 0], a[:, 1], a[:, 2]


@pytest.fixture(scope="module")
def random_walk() -> StepOutput:
    return simulate(SimParams(rate=5, spread_bps=0.0, flow_impact=0.0))


@pytest.fixture(scope="module")
def planted() -> StepOutput:
    return simulate(SimParams(rate=5, spread_bps=1.0, flow_impact=0.5))


def skill_and_p(out: StepOutput) -> tuple[float, float, int]:
    pred, actual, now = realised(out)
    e_model, e_pers = pred - actual, now - actual
    skill = 1 - np.mean(np.abs(e_model)) / np.mean(np.abs(e_pers))
    return float(skill), diebold_mariano(e_model, e_pers, H // W)["p_value"], len(pred)


def test_leakage_self_test_random_walk_has_no_skill(random_walk: StepOutput) -> None:
    """On a pure random walk nothing can beat persistence; a leak would show as skill."""
    skill, p, n = skill_and_p(random_walk)
    assert n > 2500
    assert -0.05 < skill < 0.01, skill  # stated tolerance: |skill| small, and never clearly positive
    assert p > 0.05, p  # not significantly better than persistence


def test_planted_order_flow_signal_is_learned(planted: StepOutput) -> None:
    skill, p, n = skill_and_p(planted)
    assert skill > 0.02, skill
    assert p < 0.01, p


def test_progressive_metrics_score_model_and_baselines_on_the_same_labels(planted: StepOutput) -> None:
    last = {m.model_name: m for m in planted.metrics}
    assert set(last) == {"river-linear", "persistence", "mean_last_10"}
    assert len({m.n for m in last.values()}) == 1  # exactly the same matured labels
    pred, actual, now = realised(planted)
    assert last["persistence"].n == len(pred)
    assert math.isclose(last["persistence"].mae, float(np.mean(np.abs(now - actual))), rel_tol=1e-9)
    assert math.isclose(last["river-linear"].mae, float(np.mean(np.abs(pred - actual))), rel_tol=1e-9)


def rows(n: int, start: int = 0) -> list[FeatureRow]:
    rng = np.random.default_rng(1)
    out, close = [], 100.0
    for i in range(start, start + n):
        close *= math.exp(rng.normal(0, 1e-3))
        vals = {k: float(rng.normal()) for k in FEATURE_NAMES}
        vals.update(ema_12=close, ema_26=close, rsi_14=50.0)
        out.append(FeatureRow("X/USD", (i + 1) * W * 1_000_000, close, vals, "fs1-w10s"))
    return out


def test_a_label_is_never_learned_before_its_horizon() -> None:
    learner = OnlineLearner("X/USD", H, "linear", snapshot_every=0)
    steps = H // W
    for i, r in enumerate(rows(200)):
        out = learner.on_row(r)
        # the prediction at row i has seen exactly the labels of rows <= i - steps,
        # i.e. those whose horizon has passed by this row's event time
        assert learner.samples_seen == max(0, i - steps + 1)
        assert out.predictions[0].samples_seen == learner.samples_seen
        assert all(ts > r.ts_us - H * 1_000_000 for ts in learner.pending)


def test_non_finite_inputs_are_skipped_and_counted() -> None:
    learner = OnlineLearner("X/USD", H, "linear", snapshot_every=0)
    rs = rows(30)
    rs[5].values["ret_1"] = float("nan")
    rs[6].values["macd"] = float("inf")
    rs[7].values.update({k: float("nan") for k in rs[7].values})
    rs[8] = FeatureRow(rs[8].symbol, rs[8].ts_us, float("nan"), rs[8].values, rs[8].feature_set_version)
    outs = [learner.on_row(r).predictions for r in rs]
    assert sum(map(len, outs)) == 28 and not outs[7] and not outs[8]
    # row 7 (no finite input), row 8 (no price) and the label that row 8 should have given
    assert learner.skipped_nonfinite == 3 and learner.skipped_values == 2
    assert all(math.isfinite(p[0].predicted_price) for p in outs if p)


def test_learner_pickles_and_resumes_identically() -> None:
    a = OnlineLearner("X/USD", H, "linear", snapshot_every=0)
    rs = rows(300)
    for r in rs[:150]:
        a.on_row(r)
    b = pickle.loads(pickle.dumps(a))
    pa = [a.on_row(r).predictions for r in rs[150:]]
    pb = [b.on_row(r).predictions for r in rs[150:]]
    assert pa == pb and a.samples_seen == b.samples_seen > 100


def test_drift_detector_records_a_regime_change() -> None:
    learner = OnlineLearner("X/USD", H, "linear", snapshot_every=0)
    rng = np.random.default_rng(2)
    close, events = 100.0, []
    for i in range(3000):
        vol = 1e-4 if i < 1500 else 3e-3  # volatility regime change
        close *= math.exp(rng.normal(0, vol))
        vals = {k: 0.0 for k in FEATURE_NAMES}
        vals.update(ema_12=close, ema_26=close, rsi_14=50.0)
        events += learner.on_row(FeatureRow("X/USD", (i + 1) * W * 1_000_000, close, vals, "v")).drift_events
    change, us = 1500 * W * 1_000_000, 1_000_000
    # detected within 300 rows (50 minutes) of the change; early warm-up detections may exist too
    assert any(change < e.ts_us < change + 300 * W * us for e in events), [e.ts_us for e in events]
    assert events[0].detector.startswith("ADWIN")


def test_snapshots_are_due_every_n_samples() -> None:
    trades = MarketSimulator(["BTC/USD"], seed=1, params=SimParams(rate=5)).next_trades(30_000)
    out = run_batch(trades, W, 0.0, horizon_seconds=H, online_model="linear", snapshot_every=100)
    assert len(out.snapshots) >= 2
    s = out.snapshots[0]
    assert s.symbol == "BTC/USD" and s.meta["samples_seen"] == 100
    assert s.meta["model_kind"] == "online:linear" and "persistence" in s.meta["metrics"]
    assert pickle.loads(s.payload).predict_one({"ret_1_bps": 0.0}) is not None


def test_linear_fast_path_is_bit_identical_to_river() -> None:
    """The default model's fast path (tickcast.learner._LinearFastPath) against River's own
    predict_one/learn_one: same predictions, same state, same pickled bytes, through
    warm-up (features appearing one by one), non-finite gaps and a pickle round trip."""
    from tickcast.learner import _LinearFastPath, make_model
    from tickcast.model_inputs import model_inputs

    trades = MarketSimulator(["BTC/USD"], seed=3, params=SimParams(rate=3, flow_impact=0.3)).next_trades(40_000)
    feats = run_batch(trades, 5, 0.0, online_model="off").features
    assert len(feats) > 2000
    xs = [model_inputs(f.close, f.values, partial=True) for f in feats]
    for i in range(100, 2000, 97):  # sparse gaps after warm-up too
        xs[i] = {k: v for j, (k, v) in enumerate(xs[i].items()) if j % 3}  # type: ignore[union-attr]
    river_model, fast_model = make_model("linear"), make_model("linear")
    fast = _LinearFastPath.of(fast_model)
    assert fast is not None and _LinearFastPath.of(make_model("sgd")) is None
    ys = [1e4 * math.log(b.close / a.close) for a, b in zip(feats, feats[6:], strict=False)]
    for i, (x, y) in enumerate(zip(xs, ys, strict=False)):
        assert x
        want, got = river_model.predict_one(x), fast.predict(x)
        assert want == got or (want == 0 and got == 0), (i, want, got)
        river_model.learn_one(x, y)
        fast.learn(x, y)
        if i == len(ys) // 2:  # resume from a pickle, as Bytewax recovery does (both)
            river_model = pickle.loads(pickle.dumps(river_model))
            fast_model = pickle.loads(pickle.dumps(fast_model))
            fast = _LinearFastPath.of(fast_model)
            assert fast is not None
    assert pickle.dumps(river_model) == pickle.dumps(fast_model)
    assert river_model.predict_one(xs[-1]) == fast.predict(xs[-1]) != 0.0
