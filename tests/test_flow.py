"""The feature dataflow end to end, as users run it: ``python -m bytewax.run
dataflows.features`` in a subprocess, real chdb engine, real Valkey server.

Keystone: what the stream writes to the stores equals what the batch driver
(tickcast.pipeline.run_batch, the same feature code driven by a plain loop) computes
from the same file — with 1 worker, 2 workers, 2 processes, and after a kill -9 and a
recovery restart.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest
import redis

from tests.helpers import (
    REPO,
    SHARED,
    assert_matches_batch,
    batch_expected,
    flow_env,
    free_port,
    kill_9_mid_run_then_recover,
    run_flow,
)
from tickcast.kraken import parse_message
from tickcast.pipeline import StepOutput
from tickcast.stores.offline import open_offline


@pytest.fixture(scope="module")
def sim_replay(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tickcast.sim import SimParams, write_replay

    path = tmp_path_factory.mktemp("replay") / "sim.jsonl"
    write_replay(path, 40_000, ["BTC/USD", "ETH/USD"], seed=11, params=SimParams(rate=5.0))
    return path


@pytest.fixture(scope="module")
def expected(sim_replay: Path) -> StepOutput:
    return batch_expected(sim_replay)


def test_replay_stream_equals_batch_and_fills_online_store(
    sim_replay: Path, expected: StepOutput, tmp_path: Path, redis_db_url: str
) -> None:
    lake = tmp_path / "offline"
    r = run_flow(flow_env(sim_replay, lake, redis_db_url))
    assert r.returncode == 0, r.stderr[-3000:]
    assert len(expected.candles) > 100 and len(expected.features) == len(expected.candles)
    assert_matches_batch(lake, expected)
    store = open_offline(f"chdb://{lake}", read_only=True)
    # realised error per prediction is one SQL join of predictions with the features at ts + horizon
    joined = store.query(
        "SELECT p.symbol, count(), avg(abs(p.predicted_price - f.close)), avg(abs(p.price_at_ts - f.close)) "
        "FROM predictions AS p INNER JOIN features AS f ON f.symbol = p.symbol "
        "AND f.ts = p.ts + toIntervalSecond(p.horizon_seconds) WHERE p.model_kind LIKE 'online:%' "
        "GROUP BY p.symbol ORDER BY p.symbol").result_rows
    metrics = store.query("SELECT symbol, model_name, argMax(n, ts), argMax(mae, ts) FROM model_metrics "
                          "GROUP BY symbol, model_name ORDER BY symbol, model_name").result_rows
    store.close()
    assert [r[0] for r in joined] == ["BTC/USD", "ETH/USD"]
    by = {(m[0], m[1]): m for m in metrics}
    for sym, n, mae_model, mae_pers in joined:
        # the flow's progressive metrics are exactly the join's numbers
        assert by[(sym, "river-linear")][2] == by[(sym, "persistence")][2] == n
        assert abs(by[(sym, "river-linear")][3] - mae_model) < 1e-9 * mae_model
        assert abs(by[(sym, "persistence")][3] - mae_pers) < 1e-9 * mae_pers
    # the online model was snapshotted to the registry (file:// under the data dir)
    from models.registry import registry_from_settings
    from tickcast.config import Settings

    reg = registry_from_settings(Settings.from_env({"TICKCAST_DATA_DIR": str(tmp_path)}))
    model, manifest = reg.load("online-BTC_USD")
    assert manifest["meta"]["samples_seen"] == 360 and hasattr(model, "predict_one")
    # online store: newest feature row per symbol
    client = redis.Redis.from_url(redis_db_url)
    for sym in ("BTC/USD", "ETH/USD"):
        newest = max((f for f in expected.features if f.symbol == sym), key=lambda f: f.ts_us)
        h = {k.decode(): v.decode() for k, v in client.hgetall(f"tickcast:features:{sym}").items()}
        assert int(h["ts_us"]) == newest.ts_us
        assert float(h["close"]) == newest.close
        assert client.ttl(f"tickcast:features:{sym}") > 0
        # the live scoreboard (tickcast.scoreboard) of the newest row, for /predict?model=auto
        board = json.loads(client.hget(f"tickcast:selection:{sym}", "json"))
        assert board["ts_us"] == newest.ts_us and board["choice"] in ("online", "persistence")
        assert board["labels"] >= by[(sym, "persistence")][2] > 0


def test_replay_is_idempotent(sim_replay: Path, expected: StepOutput, tmp_path: Path, redis_db_url: str) -> None:
    lake = tmp_path / "offline"
    env = flow_env(sim_replay, lake, redis_db_url)
    for _ in range(2):
        r = run_flow(env)
        assert r.returncode == 0, r.stderr[-3000:]
    assert_matches_batch(lake, expected)  # twice the input, one row per key


def test_two_workers_equal_one(sim_replay: Path, expected: StepOutput, tmp_path: Path, redis_db_url: str) -> None:
    lake = tmp_path / "offline"
    r = run_flow(flow_env(sim_replay, lake, redis_db_url), "-w", "2")
    assert r.returncode == 0, r.stderr[-3000:]
    assert_matches_batch(lake, expected)


def test_two_processes_equal_one(sim_replay: Path, expected: StepOutput, tmp_path: Path, redis_db_url: str) -> None:
    lake = tmp_path / "offline"
    env = flow_env(sim_replay, lake, redis_db_url)
    addrs = f"127.0.0.1:{free_port()};127.0.0.1:{free_port()}"
    cmd = [sys.executable, "-m", "bytewax.run", "dataflows.features", "-a", addrs]
    procs = [subprocess.Popen([*cmd, "-i", str(i)], env=env, cwd=REPO, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for i in range(2)]
    for p in procs:
        out, _ = p.communicate(timeout=180)
        assert p.returncode == 0, out[-3000:]
    assert_matches_batch(lake, expected)


def test_bad_input_becomes_dead_letters(tmp_path: Path, redis_db_url: str) -> None:
    good = [
        {"channel": "trade", "type": "update", "data": [
            {"symbol": "BTC/USD", "side": "buy", "price": 100.5, "qty": 0.5, "ord_type": "market",
             "trade_id": i, "timestamp": f"2026-01-01T00:00:{i:02d}.000000Z"}]}
        for i in range(1, 40)
    ]
    lines = [orjson.dumps(m) for m in good]
    garbage = [b"{not json", b"[1,2,3]", b'{"channel":"trade","type":"update","data":"x"}',
               b'{"channel":"trade","type":"update","data":[{"symbol":"BTC/USD","side":"buy","price":-1,'
               b'"qty":1,"ord_type":"limit","trade_id":99,"timestamp":"2026-01-01T00:00:05.000000Z"}]}',
               b'{"channel":"heartbeat"}']
    for i, g in enumerate(garbage):
        lines.insert(5 + 7 * i, g)
    # a trade 20 s older than the stream, after its window closed: late
    lines.append(orjson.dumps({"channel": "trade", "type": "update", "data": [
        {"symbol": "BTC/USD", "side": "sell", "price": 100.0, "qty": 1.0, "ord_type": "limit",
         "trade_id": 100, "timestamp": "2026-01-01T00:00:15.000000Z"}]}))
    replay = tmp_path / "bad.jsonl"
    replay.write_bytes(b"\n".join(lines) + b"\n")
    lake = tmp_path / "offline"
    env = flow_env(replay, lake, redis_db_url)
    for _ in range(2):  # the second run proves dead letters are not duplicated by a replay
        r = run_flow(env)
        assert r.returncode == 0, r.stderr[-3000:]
    store = open_offline(f"chdb://{lake}", read_only=True)
    dead = store.query("SELECT reason, raw FROM dead_letters ORDER BY position").result_rows
    n_trades = store.query("SELECT sum(trades) FROM candles").result_rows[0][0]
    store.close()
    reasons = [d[0] for d in dead]
    assert len(dead) == 5, reasons  # 4 garbage lines + 1 late trade; the heartbeat is not an error
    assert sum("late trade" in r for r in reasons) == 1
    assert any("price" in r for r in reasons)
    assert n_trades == 39


@pytest.mark.skipif(not (SHARED / "kraken_ws").exists(), reason="../shared/data/kraken_ws is absent")
def test_real_kraken_capture_replays(tmp_path: Path, redis_db_url: str) -> None:
    replay = SHARED / "kraken_ws" / "v2_book_and_trade_session_2026-07-07.jsonl"
    lake = tmp_path / "offline"
    r = run_flow(flow_env(replay, lake, redis_db_url, TICKCAST_WINDOW_SECONDS="1",
                          TICKCAST_HORIZON_SECONDS="60"))
    assert r.returncode == 0, r.stderr[-3000:]
    store = open_offline(f"chdb://{lake}", read_only=True)
    n = store.query("SELECT sum(trades) FROM candles").result_rows[0][0]
    dead = store.query("SELECT count() FROM dead_letters").result_rows[0][0]
    store.close()
    expected = sum(len(parse_message(line, "x", 0)[0]) for line in replay.read_bytes().splitlines())
    assert n == expected > 0
    assert dead == 0


def test_kill_9_and_recover_loses_and_duplicates_nothing(tmp_path: Path, redis_db_url: str) -> None:
    from tickcast.sim import SimParams, write_replay

    replay = tmp_path / "big.jsonl"
    write_replay(replay, 400_000, ["BTC/USD", "ETH/USD"], seed=5, params=SimParams(rate=5.0))
    expected = batch_expected(replay)
    lake = tmp_path / "offline"
    kill_9_mid_run_then_recover(flow_env(replay, lake, redis_db_url), lake, expected, tmp_path / "recovery")


@pytest.mark.parametrize("idle_us, late", [(0, 1), (None, 0)])
def test_live_watermark_waits_an_idle_grace_before_wall_time_closes_windows(idle_us: int | None, late: int) -> None:
    """A live flow that stalls for 0.5 s (a busy machine, a Kafka backlog) and then reads
    the trades it fell behind on: with the idle grace (default one window) they count;
    with none, wall time closed their window during the stall and one became late."""
    import dataflows.features as features_flow
    from tickcast.pipeline import SymbolPipeline
    from tickcast.schema import Trade

    pipe = SymbolPipeline("BTC/USD", 1, 100_000)
    logic = features_flow.PipelineLogic(pipe, live=True, idle_us=idle_us)
    start = (time.time_ns() // 1000 // 1_000_000) * 1_000_000  # a window [start, start + 1 s)

    def trade(tid: int, ts_us: int) -> Trade:
        return Trade("BTC/USD", tid, ts_us, 100.0, 1.0, "buy", "limit")

    logic.on_item([trade(1, start + 700_000)])
    wm = logic._watermark()
    assert wm is not None and 0 <= wm - (start + 700_000 - 100_000) < (50_000 if idle_us == 0 else 1)
    logic._anchor_wall -= 500_000  # 0.5 s pass without a trade reaching this step
    logic.on_notify()
    out, _ = logic.on_item([trade(2, start + 900_000)])  # the trade it was behind on
    assert sum(len(o.dead_letters) for o in out) == late
    assert pipe.late_count == late
    if idle_us is None:
        # ... and a market that really went quiet still gets its candle, when notify_at says:
        # window end + lateness, one idle grace (a window) after the newest trade arrived
        due = logic.notify_at()
        assert due is not None
        wall_due_us = int(due.timestamp() * 1e6)
        assert abs(wall_due_us - (logic._anchor_wall + 1_000_000 + (start + 1_000_000 + 100_000)
                                  - (start + 900_000))) <= 1_001
        logic._anchor_wall -= 1_200_000 + 50_000  # grace + (end + lateness - newest event) + 50 ms
        closed, _ = logic.on_notify()
        candles = [c for o in closed for c in o.candles]
        assert [(c.window_start_us, c.trades) for c in candles] == [(start, 2)]


def test_kafka_watermark_follows_how_far_every_partition_is_complete() -> None:
    """On the Kafka path the clock is how far the stream is known complete (the ingest's
    heartbeats, read from each partition behind the trades): the smallest value over
    all partitions. A consumer that is behind, an ingest that is down and a broker that
    does not answer all leave it standing, however much wall time passes."""
    import dataflows.features as features_flow
    from dataflows.features import SourceProgress, progress_items
    from tickcast.pipeline import SymbolPipeline
    from tickcast.schema import Trade

    pipe = SymbolPipeline("", 1, 100_000)
    logic = features_flow.PipelineLogic(pipe, live=True, lag_aware=True)
    start = (time.time_ns() // 1000 // 1_000_000) * 1_000_000

    def closed(out: list) -> list[tuple[int, int]]:  # type: ignore[type-arg]
        return [(c.window_start_us, c.trades) for o in out for c in o.candles]

    # a progress chunk becomes one item per configured symbol; the first binds the pipeline
    items = progress_items(("kafka-progress:t", [("1/2", b"-1")]), ("BTC/USD", "ETH/USD"))
    assert items == [("BTC/USD", SourceProgress("BTC/USD", 1, 2, None)),
                     ("ETH/USD", SourceProgress("ETH/USD", 1, 2, None))]
    logic.on_item(items[0][1])
    assert pipe.symbol == "BTC/USD"
    logic.on_item([Trade("BTC/USD", 1, start + 500_000, 100.0, 1.0, "buy", "limit")])
    arrived = logic._anchor_wall
    logic._anchor_wall -= 60_000_000  # a minute passes with no trade, nothing known
    arrived -= 60_000_000
    assert logic.notify_at() is None and closed(logic.on_notify()[0]) == []
    out, _ = logic.on_item(SourceProgress("BTC/USD", 0, 2, arrived + 30_000_000))  # one of two
    assert closed(out) == []
    # the other partition is complete only up to 5 s after the trade arrived: the clock is
    # the smaller value, so 5 s - the grace (a window) have passed: the trade's window + 3
    out, _ = logic.on_item(SourceProgress("BTC/USD", 1, 2, arrived + 5_000_000))
    got = closed(out)
    assert got[0] == (start, 1) and 2 <= len(got) <= 4 and all(n == 0 for _, n in got[1:]), got
    # a partition stops being known (broker down): the clock stops, however long
    logic.on_item(SourceProgress("BTC/USD", 1, 2, None))
    logic._anchor_wall -= 60_000_000
    assert closed(logic.on_notify()[0]) == []
    # known again, up to where partition 0 was: the rest of those 30 s close
    out, _ = logic.on_item(SourceProgress("BTC/USD", 1, 2, arrived + 40_000_000))
    assert closed(out) and all(n == 0 for _, n in closed(out))


def test_a_flow_run_on_its_own_stops_the_valkey_it_started_and_keeps_its_data(tmp_path: Path) -> None:
    """`python -m bytewax.run dataflows.features` with the embedded defaults starts a Valkey
    server under the data dir; at the end of a replay it stops it (30 replays used to
    leave 30 servers), saving what it holds, so an API started later still finds the
    newest features. `tickcast stop` is the one command that stops a server left running
    (here: the one the API-like reader started again; after a kill -9 of a flow, the same)."""
    from tests.helpers import leftovers
    from tickcast.embedded import ensure_valkey, stop_valkey
    from tickcast.sim import write_replay
    from tickcast.stores.online import OnlineStore

    replay = tmp_path / "r.jsonl"
    write_replay(replay, 3000, ["BTC/USD", "ETH/USD"], seed=4)
    data = tmp_path / "data"
    env = flow_env(replay, data / "offline", "", TICKCAST_DATA_DIR=str(data), TICKCAST_ONLINE_MODEL="off")
    del env["TICKCAST_REDIS_URL"]
    try:
        r = run_flow(env)
        assert r.returncode == 0, r.stderr[-3000:]
        assert leftovers(data) == []
        store = OnlineStore(ensure_valkey(data))  # what an API started now does
        try:
            assert store.get_features("BTC/USD") is not None
        finally:
            store.close()
        r2 = subprocess.run([sys.executable, "-m", "tickcast.cli", "stop", "--data-dir", str(data)], cwd=REPO,
                            env=env, capture_output=True, text=True, timeout=60)
        assert r2.returncode == 0 and "stopped the embedded Valkey" in r2.stderr, r2.stderr
        assert leftovers(data) == []
    finally:
        stop_valkey(data)  # whatever failed above, no server outlives the test


@pytest.mark.parametrize("module", ["dataflows.batching", "dataflows.chunks", "dataflows.kafka.topic"])
def test_dataflows_doctests(module: str) -> None:
    """The runnable examples of dataflows/ (not collected by --doctest-modules: importing
    dataflows.ingest or dataflows.features builds a flow from the environment)."""
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(module))
    assert result.attempted > 0 and result.failed == 0, result
