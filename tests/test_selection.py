"""Live model selection and prediction intervals (tickcast.selection, tickcast.scoreboard),
through the same per-symbol pipeline the feature flow runs, on simulated markets.

Each market is a fresh seed not used to choose the rule's defaults (those came from
benchmarks/bench_selection.py's seeds 1000+); the intervals use only residuals that had
matured before each prediction, so every label below is held out for them."""

from __future__ import annotations

import pickle
from typing import Any

import pytest

from models.predictor import Predictor
from tickcast.learner import METRICS_EVERY
from tickcast.live_eval import drive_symbol, regime_switch, score_run, switches
from tickcast.pipeline import StepOutput, SymbolPipeline
from tickcast.selection import SelectionRule, Selector
from tickcast.sim import DEFAULT_START_US, MarketSimulator, SimParams

H, W = 60, 10
HOUR = 3600 * 1_000_000


def trades(params: SimParams, hours: float, seed: int) -> list[Any]:
    return MarketSimulator(["BTC/USD"], seed=seed, params=params).until(DEFAULT_START_US + int(hours * HOUR))


def drive(trades: list[Any], production: Any = None) -> tuple[StepOutput, SymbolPipeline]:
    return drive_symbol(trades, production, window_seconds=W, horizon_seconds=H)  # type: ignore[no-any-return]


def auto_kinds(out: StepOutput) -> list[str]:
    return [p.model_kind.split(":", 1)[1] for p in sorted(out.predictions, key=lambda p: p.ts_us)
            if p.model_version == "auto"]


@pytest.fixture(scope="module")
def random_walk() -> tuple[StepOutput, SymbolPipeline]:
    return drive(trades(SimParams(rate=2, spread_bps=0.0), 10, seed=71))


@pytest.fixture(scope="module")
def planted() -> tuple[StepOutput, SymbolPipeline]:
    return drive(trades(SimParams(rate=2, flow_impact=0.5), 10, seed=72))


def test_random_walk_auto_serves_persistence_and_never_flaps(random_walk: tuple[StepOutput, SymbolPipeline]) -> None:
    out, pipe = random_walk
    kinds = auto_kinds(out)
    assert len(kinds) > 3000
    assert set(kinds) == {"persistence"}  # never left it: no false switch, no flap
    assert pipe.board is not None and pipe.board.selector.switches == 0
    state = out.selection[-1]
    assert state["choice"] == "persistence" and state["reason"].startswith("default")
    online = state["candidates"]["online"]
    assert online["n"] == 720 and online["p_value"] > 0.01  # tested, and not significantly better


def test_planted_signal_auto_serves_the_online_model_after_warm_up(
        planted: tuple[StepOutput, SymbolPipeline]) -> None:
    out, _ = planted
    kinds = auto_kinds(out)
    first = kinds.index("online")
    assert first >= SelectionRule().min_labels  # not before the window holds enough labels
    assert kinds[-1] == "online" and switches(kinds) <= 2
    assert out.selection[-1]["reason"].startswith("online beats persistence")
    sc = score_run(out.predictions, out.features, H)
    assert sc.mae["auto"] < sc.mae["persistence"]


@pytest.mark.parametrize("market", ["random_walk", "planted"])
def test_interval_coverage_within_3_points_of_nominal(market: str, request: pytest.FixtureRequest) -> None:
    out, _ = request.getfixturevalue(market)
    sc = score_run(out.predictions, out.features, H)
    assert sc.covered_n > 3000
    assert set(sc.coverage) == {0.8, 0.95}
    for level, got in sc.coverage.items():
        assert abs(got - level) <= 0.03, (level, got)
    # the bounds are stored with every prediction (online rows too), lower < price < upper
    rows = [p for p in out.predictions if p.model_kind.startswith("online") and p.pi1_lower == p.pi1_lower]
    assert rows and all(p.pi2_lower < p.pi1_lower < p.predicted_price < p.pi1_upper < p.pi2_upper
                        for p in rows)


def test_interval_widens_when_volatility_jumps() -> None:
    calm = trades(SimParams(rate=2, spread_bps=0.0), 4, seed=73)
    wild = trades(SimParams(rate=2, spread_bps=0.0, vol_bps_per_sqrt_s=3.0), 2, seed=74)
    out, _ = drive(regime_switch(calm, wild))
    cut = calm[-1].ts_us
    auto = [p for p in out.predictions if p.model_version == "auto" and p.pi1_lower == p.pi1_lower]
    width = [(p.ts_us, p.pi1_upper / p.pi1_lower - 1) for p in auto]
    before = [w for t, w in width if cut - HOUR < t < cut]
    after = [w for t, w in width if cut + HOUR / 2 < t]
    assert sum(after) / len(after) > 2 * sum(before) / len(before)
    sc = score_run([p for p in out.predictions if p.ts_us > cut], out.features, H)
    assert abs(sc.coverage[0.8] - 0.8) <= 0.05  # right after a x3 volatility jump, still close


def test_a_decaying_production_model_is_demoted() -> None:
    # production: a model trained on a market with a planted signal (another seed)
    _, trained = drive(trades(SimParams(rate=2, flow_impact=0.5), 10, seed=75))
    assert trained.learner is not None
    prod = Predictor("river-linear", "river", [], trained.learner.model, "fs1-w10s", H)
    # live: the signal holds for 3 h, then vanishes (bid-ask bounce and order flow stay)
    before = trades(SimParams(rate=2, flow_impact=0.5), 3, seed=76)
    after = trades(SimParams(rate=2), 6, seed=77)
    out, pipe = drive(regime_switch(before, after), lambda _s: ("river-linear", "v1", prod))
    cut = before[-1].ts_us
    kinds = [(p.ts_us, p.model_kind.split(":")[1]) for p in out.predictions if p.model_version == "auto"]
    warm = kinds[0][0] + 40 * W * 1_000_000  # the batch model needs every indicator warm (26-candle EMA ...)
    assert {k for t, k in kinds if warm < t < cut} == {"production"}  # promoted: served from the start
    assert kinds[-1][1] != "production"  # demoted once the signal was gone
    state = out.selection[-1]
    assert state["choice"] in ("persistence", "online") and "beats production" in state["reason"]
    # scored like the online model: model_metrics rows named "production"
    prod_metrics = [m for m in out.metrics if m.model_name == "production"]  # one every METRICS_EVERY labels
    assert prod_metrics and [m.n for m in prod_metrics] == [METRICS_EVERY * (i + 1) for i in range(len(prod_metrics))]
    assert pickle.loads(pickle.dumps(pipe)).production is None  # the registry handle is never pickled


def test_selector_hysteresis_no_switch_back_without_evidence() -> None:
    """After a switch, a challenger that is merely as good never takes the choice back,
    and nothing switches before min_dwell labels."""
    rule = SelectionRule(window=100, min_labels=50, check_every=1, min_dwell=40, lags=0)
    s = Selector(rule)
    for i in range(60):
        s.update(i, {"persistence": 1.0 + (i % 3) * 0.1, "online": 0.8 + (i % 3) * 0.1})
    assert s.choice == "online" and s.switches == 1
    for i in range(60, 400):  # now equal on average, noisy: stays
        s.update(i, {"persistence": 1.0 + (i % 2) * 0.2, "online": 1.2 - (i % 2) * 0.2})
    assert s.choice == "online" and s.switches == 1
    s.drop("online", 400, "online model off")
    assert s.choice == "persistence" and s.reason == "online model off"


@pytest.mark.slow
def test_the_flow_scores_the_promoted_model_and_publishes_the_scoreboard(tmp_path: Any, redis_db_url: str) -> None:
    """Through `python -m bytewax.run dataflows.features`: the flow loads the production model
    from the registry, writes and scores its predictions like the online model's, serves it
    as auto (promoted), and puts the scoreboard in Redis."""
    import json

    import numpy as np
    import redis
    from sklearn.linear_model import Ridge

    from models.registry import registry_from_settings
    from tests.test_flow import flow_env, run_flow
    from tickcast.config import Settings
    from tickcast.features import FEATURE_NAMES
    from tickcast.model_inputs import model_inputs
    from tickcast.sim import write_replay
    from tickcast.stores.offline import open_offline

    replay = tmp_path / "sim.jsonl"
    write_replay(replay, 20_000, ["BTC/USD", "ETH/USD"], seed=12, params=SimParams(rate=5.0))
    inputs = list(model_inputs(100.0, {n: 1.0 for n in FEATURE_NAMES}) or {})
    est = Ridge().fit(np.zeros((10, len(inputs))), np.full(10, 1.0))  # predicts +1 bps
    reg = registry_from_settings(Settings.from_env({"TICKCAST_DATA_DIR": str(tmp_path)}), writer=True)
    v = reg.save("batch-BTC_USD", Predictor("ridge", "sklearn", inputs, est, "fs1-w10s", H), {"model": "ridge"})
    reg.set_alias("production-BTC_USD", "batch-BTC_USD", v, "test")
    lake = tmp_path / "offline"
    r = run_flow(flow_env(replay, lake, redis_db_url))
    assert r.returncode == 0, r.stderr[-3000:]
    store = open_offline(f"chdb://{lake}", read_only=True)
    try:
        kinds = dict(store.query("SELECT model_kind, count() FROM predictions WHERE symbol = 'BTC/USD' "
                                 "GROUP BY model_kind").result_rows)
        eth = dict(store.query("SELECT model_kind, count() FROM predictions WHERE symbol = 'ETH/USD' "
                               "GROUP BY model_kind").result_rows)
        n_prod, mae_prod = store.query("SELECT argMax(n, ts), argMax(mae, ts) FROM model_metrics "
                                       "WHERE symbol = 'BTC/USD' AND model_name = 'production'").result_rows[0]
        matured = store.query(
            "SELECT count() FROM predictions AS p INNER JOIN features AS f "
            "ON f.symbol = p.symbol AND f.ts = p.ts + toIntervalSecond(p.horizon_seconds) "
            "WHERE p.symbol = 'BTC/USD' AND p.model_kind = 'production:ridge'").result_rows[0][0]
        joined = store.query(  # the newest model_metrics row scores the first n_prod matured labels
            "SELECT count(), avg(e) FROM (SELECT abs(p.predicted_price - f.close) AS e FROM predictions AS p "
            "INNER JOIN features AS f ON f.symbol = p.symbol AND f.ts = p.ts + toIntervalSecond(p.horizon_seconds) "
            f"WHERE p.symbol = 'BTC/USD' AND p.model_kind = 'production:ridge' ORDER BY p.ts LIMIT {int(n_prod)})"
        ).result_rows[0]
        # the README's coverage query, as written
        coverage = store.query(
            "SELECT p.pi1_level, avg(f.close BETWEEN p.pi1_lower AND p.pi1_upper) AS coverage, count() AS n "
            "FROM predictions AS p JOIN features AS f ON f.symbol = p.symbol "
            "AND f.ts = p.ts + toIntervalSecond(p.horizon_seconds) "
            "WHERE p.model_version = 'auto' AND isFinite(p.pi1_lower) GROUP BY p.pi1_level").result_rows
    finally:
        store.close()
    assert kinds["production:ridge"] > 120 and "production:ridge" not in eth  # only BTC/USD has one
    assert kinds.get("auto:production", 0) == kinds["production:ridge"]  # promoted: auto served it (after indicator warm-up)
    assert n_prod == joined[0] and abs(mae_prod - joined[1]) < 1e-9 * joined[1]  # scored like the online model
    assert n_prod % METRICS_EVERY == 0 and n_prod <= matured < n_prod + METRICS_EVERY
    assert [r[0] for r in coverage] == [0.8] and coverage[0][2] > 50 and 0.5 < coverage[0][1] <= 1.0
    board = json.loads(redis.Redis.from_url(redis_db_url).hget("tickcast:selection:BTC/USD", "json"))
    assert board["candidates"]["production"]["version"] == v
    assert "production" in board["reason"]


def test_a_promoted_model_needing_news_does_not_freeze_the_choice() -> None:
    """The price flow cannot score a model that needs the news group: it is no live
    candidate, so auto still moves to a better online model instead of sitting on
    "production made no prediction"."""
    _, trained = drive(trades(SimParams(rate=2, flow_impact=0.5), 10, seed=75))
    assert trained.learner is not None
    needs_news = Predictor("river-linear", "river", [], trained.learner.model, "fs1-w10s", H,
                           groups=("price", "news"), group_versions=(("news", "nf1"),))
    out, _ = drive(trades(SimParams(rate=2, flow_impact=0.5), 10, seed=72), lambda _s: ("lasso+news", "v1", needs_news))
    kinds = auto_kinds(out)
    assert "production" not in kinds and kinds[-1] == "online"
    assert not any(p.model_kind.startswith("production") for p in out.predictions)


# ---- the block scoreboard equals the row-by-row one (tests/board_reference.py: the code before) ----

class _Model:
    """A production predictor with the API's predict_price: a fixed tilt of the close
    by one feature, and no prediction (raising, or NaN) on some rows."""

    feature_set_version = "fs1-w10s"

    def __init__(self, tilt: float) -> None:
        self.tilt = tilt

    def predict_price(self, close: float, values: dict[str, float]) -> list[float]:
        x = values.get("ret_1", 0.0)
        if x != x:
            raise ValueError("not warm")
        return [close * (1 + self.tilt * x) if abs(x) < 0.002 else float("nan")]


@pytest.fixture(scope="module")
def board_stream() -> tuple[list[Any], list[Any], list[Any]]:
    """(rows, online predictions or None, production per row) of a planted market: a
    promoted model, a new version of it, none, then it again; online predictions missing
    on some rows."""
    import random

    out, _ = drive(trades(SimParams(rate=2, flow_impact=0.5), 7, seed=78))
    rows = out.features
    online = {p.ts_us: p for p in out.predictions if p.model_kind.startswith("online")}
    rng = random.Random(5)
    onl = [online.get(r.ts_us) if i > 40 and rng.random() > 0.05 else None for i, r in enumerate(rows)]
    m1, m2 = ("ridge", "v1", _Model(0.5)), ("ridge", "v2", _Model(-0.3))
    n = len(rows)
    prod = [None if i < 100 else m1 if i < n // 3 else m2 if i < n // 2 else None if i < 2 * n // 3 else m1
            for i in range(n)]
    return rows, onl, prod


SMALL = SelectionRule(window=240, min_labels=100, check_every=5, min_dwell=60, lags=4)  # many checks/switches


def _run(board: Any, stream: tuple[list[Any], list[Any], list[Any]], cuts: list[int],
         repickle: bool = False) -> tuple[list[Any], list[Any], list[Any], list[dict[str, Any]]]:
    """Feed ``board`` the stream in calls cut at ``cuts`` (a call never spans a production
    change: the flow's production is fixed for a call); returns predictions, online rows,
    metrics and the scoreboard after every call."""
    rows, onl, prod = stream
    preds: list[Any] = []
    online: list[Any] = []
    metrics: list[Any] = []
    states = []
    bounds = sorted({0, len(rows), *cuts, *(i for i in range(1, len(rows)) if prod[i] is not prod[i - 1])})
    for a, b in zip(bounds, bounds[1:], strict=False):
        if hasattr(board, "on_rows"):
            out = board.on_rows(rows[a:b], onl[a:b], prod[a])
            online.extend(out.online)
        else:  # the reference: one row at a time
            out = None
            for i in range(a, b):
                o = board.on_row(rows[i], onl[i], prod[a])
                preds.extend(o.predictions)
                metrics.extend(o.metrics)
                online.append(o.online)
            states.append(board.state())
            continue
        preds.extend(out.predictions)
        metrics.extend(out.metrics)
        states.append(board.state())
        if repickle:
            board = pickle.loads(pickle.dumps(board))
    return preds, online, metrics, states


def _same_numbers(a: Any, b: Any, rel: float) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return (a != a and b != b) or a == b or abs(a - b) <= rel * max(abs(a), abs(b))
    if isinstance(a, dict):
        return isinstance(b, dict) and list(a) == list(b) and all(_same_numbers(a[k], b[k], rel) for k in a)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(_same_numbers(x, y, rel) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and bool(a == b)


def test_block_scoreboard_is_bitwise_the_same_however_the_rows_are_split(board_stream: Any) -> None:
    import random

    from tickcast.scoreboard import LiveBoard

    n = len(board_stream[0])
    rng = random.Random(3)
    runs = {"rows": list(range(n)), "one block": [],
            "random": sorted(rng.sample(range(1, n), n // 40)),
            "random+pickle": sorted(rng.sample(range(1, n), n // 25))}
    got = {}
    for name, cuts in runs.items():
        board = LiveBoard("BTC/USD", H, rule=SMALL)
        outs = _run(board, board_stream, cuts, repickle=name.endswith("pickle"))
        got[name] = (outs, None if name.endswith("pickle") else pickle.dumps(board))  # (the pickled run's board
    ref, ref_state = got["rows"]  # is the last unpickled copy: its outputs are what count)
    assert len(ref[0]) > 4000 and len(ref[2]) > 100
    for name, (outs, state) in got.items():
        assert _same_numbers(outs[:3], ref[:3], 0.0), name  # every float the same bit for bit (NaN = NaN)
        assert _same_numbers(outs[3][-1], ref[3][-1], 0.0), name
        assert state is None or state == ref_state, name


def test_block_scoreboard_decides_like_the_row_by_row_reference(board_stream: Any) -> None:
    """Same choices at the same rows, switches and reasons as the code before; prices and
    interval bounds to 1e-12, test p-values to 1e-9; production model_metrics rows: the
    reference's every METRICS_EVERY-th."""
    from tests.board_reference import LiveBoard as RefBoard
    from tickcast.scoreboard import LiveBoard

    ref = _run(RefBoard("BTC/USD", H, rule=SMALL), board_stream, [])
    new = _run(LiveBoard("BTC/USD", H, rule=SMALL), board_stream, [])
    kinds = [p.model_kind for p in ref[0] if p.model_version == "auto"]
    assert len(set(kinds)) == 3 and switches(kinds) >= 4  # the stream exercises the rule
    assert _same_numbers(ref[0], new[0], 1e-12) and _same_numbers(ref[1], new[1], 1e-12)
    assert new[2] == [m for m in ref[2] if m.n % METRICS_EVERY == 0] and new[2]
    assert _same_numbers(ref[3], new[3], 1e-9)  # scoreboards after every call: same strings, numbers to 1e-9


def test_a_board_pickled_before_the_block_version_keeps_going(board_stream: Any) -> None:
    """A board from the recovery state of the previous version (its pickle, with the
    module names of then) loads and continues exactly like the old code."""
    from tests.board_reference import LiveBoard as RefBoard

    rows, onl, prod = board_stream
    half = len(rows) // 2 + 50  # the selector and trackers are warm, a production model is live
    a, b = RefBoard("BTC/USD", H, rule=SMALL), RefBoard("BTC/USD", H, rule=SMALL)
    _run(a, (rows[:half], onl[:half], prod[:half]), [])
    _run(b, (rows[:half], onl[:half], prod[:half]), [])
    old = pickle.dumps(a, protocol=2)  # GLOBAL opcodes: "c<module>\n<name>\n"
    for cls, mod in (("LiveBoard", "scoreboard"), ("_Pending", "scoreboard"), ("Selector", "selection"),
                     ("IntervalTracker", "selection"), ("VolScale", "selection")):
        old = old.replace(f"ctests.board_reference\n{cls}\n".encode(), f"ctickcast.{mod}\n{cls}\n".encode())
    assert b"board_reference" not in old
    board = pickle.loads(old)
    rest = (rows[half:], onl[half:], prod[half:])
    want, got = _run(b, rest, []), _run(board, rest, [])
    assert _same_numbers(want[0], got[0], 1e-12) and _same_numbers(want[1], got[1], 1e-12)
    assert [s["choice"] for s in want[3]] == [s["choice"] for s in got[3]]


def test_a_row_back_in_time_voids_what_waits_and_the_board_keeps_going(board_stream: Any) -> None:
    """The windower never emits one, but a row at or before the newest (a replayed
    candle) must not crash the board or mature a label twice: the predictions waiting
    from its time on are dropped, and it is predicted like any row."""
    from tickcast.scoreboard import LiveBoard

    rows, onl, _ = board_stream
    board = LiveBoard("BTC/USD", H, rule=SMALL)
    board.on_rows(rows[:300], onl[:300], None)
    labels = board.selector.labels
    again = board.on_rows([rows[295], rows[150], *rows[300:310]], [onl[295], onl[150], *onl[300:310]], None)
    assert sum(p.model_version == "auto" for p in again.predictions) == 12 and len(again.online) == 12
    # 10-s rows, 60-s horizon: rows 300-305 would score rows 294-299, voided by the replayed rows;
    # only rows 306-309 find theirs (rows 300-303, predicted in this very call)
    assert board.selector.labels == labels + 4
    out = board.on_rows(rows[310:400], onl[310:400], None)
    assert len(out.online) == 90 and board.selector.labels == labels + 4 + 90
