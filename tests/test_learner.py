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
    assert last["persistence"].n == len(pred)  # rows every 12 labels, and the final figures at the end
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
        # ... and learns them in mini-batches of 12 (the prediction says how many it learned)
        assert out.predictions[0].samples_seen == learner.learned == learner.samples_seen // 12 * 12
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
    model = pickle.loads(s.payload)  # the registry serves it through predict_one (kind "river")
    assert model.learned == 96 and model.predict_one({"ret_1_bps": 5.0}) != model.predict_one({"ret_1_bps": -5.0})


def test_default_model_is_rivers_bayesian_linear_regression() -> None:
    """BayesLinear learning one row at a time is River's StandardScaler | BayesianLinearRegression
    (same predictions to 1e-9) through warm-up, sparse inputs and a pickle round trip; the
    mini-batch form (the default, 12 labels) learns the same model in blocks."""
    from river import linear_model, preprocessing

    from tickcast.bayes_linear import BayesLinear
    from tickcast.model_inputs import input_block, input_names

    trades = MarketSimulator(["BTC/USD"], seed=3, params=SimParams(rate=3, flow_impact=0.3)).next_trades(40_000)
    feats = run_batch(trades, 5, 0.0, online_model="off").features
    raw = tuple(feats[0].values)
    names = input_names(raw)
    X = input_block(raw, [f.close for f in feats], [list(f.values.values()) for f in feats])
    X[100:2000:97, ::3] = np.nan  # sparse gaps after warm-up too
    y = np.array([1e4 * math.log(b.close / a.close) for a, b in zip(feats, feats[6:], strict=False)])
    river = preprocessing.StandardScaler() | linear_model.BayesianLinearRegression(alpha=1.0, beta=1 / 60)
    ours = BayesLinear(names)
    for i in range(len(y)):
        x = {n: float(v) for n, v in zip(names, X[i], strict=True) if v == v}
        want, got = river.predict_one(x), float(ours.predict_block(X[i:i + 1])[0])
        assert abs(want - got) <= 1e-9 * max(1.0, abs(want)), (i, want, got)
        river.learn_one(x, float(y[i]))
        ours.learn_batch(X[i:i + 1], y[i:i + 1])
        if i == len(y) // 2:
            ours = pickle.loads(pickle.dumps(ours))
    x_last = {n: float(v) for n, v in zip(names, X[-1], strict=True) if v == v}
    assert ours.learned == len(y) and river.predict_one(x_last) != 0.0
    assert abs(ours.predict_one(x_last) - river.predict_one(x_last)) <= 1e-9 * abs(river.predict_one(x_last))


def _canonical(model: object) -> dict[str, object]:
    """A model's state by value (pickled bytes also encode which objects are shared)."""
    return {k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in vars(model).items()}


def test_outputs_do_not_depend_on_how_rows_are_grouped_into_calls() -> None:
    """The flow hands the learner one row (live) or dozens (replay) per call; stream/batch
    parity and kill -9 recovery need every output bit-identical either way."""
    trades = MarketSimulator(["BTC/USD"], seed=5, params=SimParams(rate=3, flow_impact=0.3)).next_trades(30_000)
    feats = run_batch(trades, 5, 0.0, online_model="off").features
    rng = np.random.default_rng(0)

    def drive(sizes: list[int]) -> tuple[list[object], str]:
        learner = OnlineLearner("BTC/USD", H, "linear", snapshot_every=120)
        got: list[list[object]] = [[], [], [], []]
        i = 0
        for k in sizes:
            out = learner.on_rows(feats[i:i + k])
            for part, new in zip(got, (out.online, out.metrics, out.drift_events, out.snapshots), strict=True):
                part.extend(new)
            i += k
            if rng.random() < 0.1:  # recovery: resume from a pickle
                learner = pickle.loads(pickle.dumps(learner))
        got[3] = [(meta, _canonical(pickle.loads(payload))) for payload, meta in got[3]]  # type: ignore[misc]
        flat = [x for part in got for x in part]
        state = (_canonical(learner.model), learner.samples_seen, learner.learned, learner.skipped_values,
                 learner.label_sq, learner.batch_y, sorted(learner.pending), learner.stats)
        return flat, repr((flat, state))  # repr: exact floats, and NaN fields compare equal

    ones = drive([1] * len(feats))
    for _ in range(3):
        sizes = rng.integers(1, 90, len(feats)).tolist()
        while sum(sizes) > len(feats):
            sizes.pop()
        sizes.append(len(feats) - sum(sizes))
        assert drive(sizes)[1] == ones[1]
    assert sum(1 for x in ones[0] if isinstance(x, tuple) and len(x) == 2) > 10  # snapshots were taken
    assert sum(1 for x in ones[0] if type(x).__name__ == "DriftEvent") > 0


def test_drift_detector_is_rivers_adwin_without_rivers_heavy_imports() -> None:
    """tickcast.learner.adwin() loads River's ADWIN without scikit-learn/pandas (river.drift's
    package init imports them: ~1.4 CPU-s per flow process); River's own package still
    imports afterwards and shares the very class (a learner pickle stays a River ADWIN)."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from tickcast.learner import adwin\n"
        "d = adwin(); d.update(1.0)\n"
        "assert type(d).__module__ == 'river.drift.adwin', type(d)\n"
        "assert not {'sklearn', 'pandas', 'scipy'} & set(sys.modules), 'heavy import'\n"
        "from river import drift, forest\n"
        "assert drift.ADWIN is type(d) and forest.ARFRegressor\n"
        "import pickle; assert type(pickle.loads(pickle.dumps(d))) is drift.ADWIN\n"
        "print('ok')\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-2000:]


def test_recovery_state_of_the_previous_version_loads_and_keeps_learning() -> None:
    """tests/data/old_pipeline_38efb87.pkl: a SymbolPipeline pickled by the code before
    mini-batches (River's model, dict inputs, 12 waiting predictions) after 3,000 simulated
    BTC/USD trades (seed 21). It loads, its River model becomes the same BayesLinear
    (equal predictions), the waiting predictions are counted as unmatured, and it goes on."""
    from pathlib import Path

    from tickcast.bayes_linear import BayesLinear
    from tickcast.model_inputs import model_inputs

    raw = (Path(__file__).parent / "data" / "old_pipeline_38efb87.pkl").read_bytes()
    pipe = pickle.loads(raw)
    river_model = pickle.loads(raw).learner.model
    assert pipe.learner.unmatured == 12 and pipe.learner.samples_seen == 291
    trades = MarketSimulator(["BTC/USD"], seed=21, params=SimParams(rate=2)).next_trades(6000)[3000:]
    outs = [pipe.on_trades(trades[i:i + 500]) for i in range(0, 3000, 500)]
    outs.append(pipe.on_eof())
    learner = pipe.learner
    assert isinstance(learner.model, BayesLinear) and learner.learn_every == 12
    online = [p for o in outs for p in o.predictions if p.model_kind == "online:linear"]
    assert len(online) > 250 and learner.samples_seen == 291 + len(online) - 12  # the last 12 wait
    # the conversion kept what the River model had learned: same predictions on a new row
    row = outs[0].features[0]
    x = model_inputs(row.close, row.values, partial=True)
    converted = pickle.loads(raw).learner
    converted._start(tuple(row.values))
    assert x and river_model.predict_one(x) != 0.0
    assert abs(converted.model.predict_one(x) - river_model.predict_one(x)) < 1e-9 * abs(river_model.predict_one(x))


def test_rows_given_as_columns_give_the_same_outputs() -> None:
    """Training's progressive pass hands the learner columns (OnlineLearner.on_arrays), the
    flow hands it feature rows (on_rows): same predictions, metrics and state."""
    trades = MarketSimulator(["BTC/USD"], seed=8, params=SimParams(rate=3)).next_trades(20_000)
    feats = run_batch(trades, 5, 0.0, online_model="off").features
    names = tuple(feats[0].values)
    a, b = OnlineLearner("BTC/USD", H, snapshot_every=0), OnlineLearner("BTC/USD", H, snapshot_every=0)
    ra = [a.on_rows(feats[i:i + 300]) for i in range(0, len(feats), 300)]
    vals = np.array([[f.values[n] for n in names] for f in feats])
    rb = [b.on_arrays([f.ts_us for f in feats[i:i + 500]], [f.close for f in feats[i:i + 500]], vals[i:i + 500],
                      names) for i in range(0, len(feats), 500)]
    pa = [p for o in ra for p in o.online]
    pb = [p for o in rb for p in o.online]
    assert len(pa) == len(feats) > 1000 and repr(pa) == repr(pb)
    assert repr([m for o in ra for m in o.metrics]) == repr([m for o in rb for m in o.metrics])
    assert repr(_canonical(a.model)) == repr(_canonical(b.model))
