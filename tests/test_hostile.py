"""Hostile input: no single record can stop the flows, make them do unbounded work, or
change what the good records produce. A replay of our own — far-future and ancient
times, a symbol shaped like an internal marker, unconfigured and malformed symbols, an
implausible trade id, a multi-megabyte line, deep nesting — runs to the end through
the real feature flow (and through ingest -> Kafka -> features); the stores equal what
the good trades alone produce, and every hostile line is a dead letter with a reason.
A property-based test drives extreme-but-parseable trades through the flow's code path
(parse + gate -> per-symbol pipeline), not only the parser."""

from __future__ import annotations

import resource
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dataflows.sources import TradeGate, is_dead, parse_chunk
from tests.helpers import REPO, assert_matches_batch, batch_expected, flow_env, run_flow
from tickcast.kraken import parse_message
from tickcast.pipeline import SymbolPipeline
from tickcast.schema import us_to_iso
from tickcast.sim import write_replay
from tickcast.stores.offline import open_offline

pytestmark = pytest.mark.slow


def trade_line(symbol: str, tid: int, ts: str, price: float = 100.0) -> bytes:
    return orjson.dumps({"channel": "trade", "type": "update", "data": [
        {"symbol": symbol, "side": "buy", "price": price, "qty": 1.0, "ord_type": "limit", "trade_id": tid,
         "timestamp": ts}]})


def hostile_replay(tmp: Path) -> tuple[Path, Path, dict[str, str]]:
    """(the good replay, the same with hostile lines inserted, {hostile line name: reason
    substring its dead letter must carry})."""
    good = tmp / "good.jsonl"
    write_replay(good, 4000, ["BTC/USD", "ETH/USD"], seed=21)
    lines = good.read_bytes().splitlines()
    mid = len(lines) // 2
    btc = next(t for line in lines[mid:] for t in parse_message(line, "x", 0)[0] if t.symbol == "BTC/USD")
    day_ahead = us_to_iso(time.time_ns() // 1000 + 86_400_000_000)
    hostile = {
        "day ahead": (trade_line("BTC/USD", btc.trade_id + 1, day_ahead), "after it was received"),
        "centuries ahead": (trade_line("BTC/USD", btc.trade_id + 1, "2400-01-01T00:00:00.000000Z"),
                            "after it was received"),
        "year 1": (trade_line("BTC/USD", btc.trade_id + 1, "0001-01-01T00:00:00.000000Z"), ""),
        "marker symbol": (trade_line("\x00dead", 1, us_to_iso(btc.ts_us)), ""),
        "unconfigured symbol": (trade_line("DOGE/USD", 1, us_to_iso(btc.ts_us)), "not one of TICKCAST_SYMBOLS"),
        "symbol with a space": (trade_line("BTC USD", 1, us_to_iso(btc.ts_us)), ""),
        "huge trade id": (trade_line("BTC/USD", 2**63 - 1, us_to_iso(btc.ts_us), btc.price), "implausible trade_id"),
        "3 MB line": (b'{"channel":"trade","type":"update","data":[{"symbol":"' + b"A" * 3_000_000 + b'"}]}',
                      "longer than"),
        "deep nesting": (b"[" * 100_000 + b"]" * 100_000, ""),
    }
    bad = tmp / "hostile.jsonl"
    out = lines[:mid] + [line for line, _ in hostile.values()] + lines[mid:]
    bad.write_bytes(b"\n".join(out) + b"\n")
    return good, bad, {k: why for k, (_, why) in hostile.items()}


def dead_letters(lake: Path) -> list[tuple[str, str]]:
    store = open_offline(f"chdb://{lake}", read_only=True)
    try:
        return [(r[0], r[1]) for r in store.query("SELECT source, reason FROM dead_letters").result_rows]
    finally:
        store.close()


def check_dead(dead: list[tuple[str, str]], expect: dict[str, str]) -> None:
    reasons = [r for _, r in dead if not r.startswith("late trade")]
    assert len(reasons) == len(expect), reasons
    assert all(r.strip() for r in reasons)
    for name, why in expect.items():
        if why:
            assert any(why in r for r in reasons), (name, why, reasons)
    assert not [r for _, r in dead if r.startswith("late trade")], "a hostile record made good trades late"


def test_hostile_replay_through_the_feature_flow(tmp_path: Path, redis_db_url: str) -> None:
    good, bad, expect = hostile_replay(tmp_path)
    lake = tmp_path / "offline"
    r = run_flow(flow_env(bad, lake, redis_db_url))
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Traceback" not in r.stderr
    assert_matches_batch(lake, batch_expected(good))
    check_dead(dead_letters(lake), expect)
    # bounded memory: the 3 MB line is skipped in pieces, never a candle per window up to 2400
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    assert peak_mb < 2048, f"peak RSS of a child {peak_mb:.0f} MB"


def test_hostile_replay_through_ingest_kafka_and_features(tmp_path: Path, valkey_url: str) -> None:
    from tickcast.tansu import TansuBroker

    good, bad, expect = hostile_replay(tmp_path)
    lake = tmp_path / "offline"
    with TansuBroker.start(log_path=tmp_path / "tansu.log") as broker:
        env = flow_env(bad, lake, valkey_url, TICKCAST_KAFKA_BROKERS=broker.bootstrap,
                       TICKCAST_TRADES_TOPIC="hostile", TICKCAST_KAFKA_STOP_AT_END="1")
        r = subprocess.run([sys.executable, "-m", "bytewax.run", "dataflows.ingest"], env=env, cwd=REPO,
                           capture_output=True, text=True, timeout=180)
        assert r.returncode == 0, r.stderr[-3000:]
        r = run_flow({**env, "TICKCAST_SOURCE": "kafka"})
        assert r.returncode == 0, r.stderr[-3000:]
    assert_matches_batch(lake, batch_expected(good))
    check_dead(dead_letters(lake), expect)


# -- property: extreme but parseable trades through parse + gate + pipeline -------------------------

NOW_US = time.time_ns() // 1000
_trades = st.lists(st.tuples(
    st.sampled_from(["BTC/USD", "ETH/USD", "DOGE/USD", "BTC/EUR"]),
    st.integers(1, 2**63 - 1),  # trade ids, any
    st.integers(-62_135_596_800_000_000 + 1, 253_402_300_799_000_000),  # year 1 .. 9999
    st.floats(1e-12, 1e12, allow_nan=False, allow_infinity=False),
    st.floats(1e-12, 1e9, allow_nan=False, allow_infinity=False),
), min_size=1, max_size=60)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_trades)
def test_extreme_trades_never_crash_and_cost_bounded_work(rows: list) -> None:  # type: ignore[type-arg]
    """Whatever the values, the flow's per-record path (parse -> gate -> pipeline with
    online learning) neither raises nor builds more candles than the accepted trades'
    time span allows; every trade is in a candle or a dead letter."""
    gate = TradeGate(("BTC/USD", "ETH/USD"), 60.0)
    lines = []
    for i, (sym, tid, ts, price, qty) in enumerate(rows):
        lines.append((str(i), trade_line(sym, tid, us_to_iso(ts), price).replace(b'"qty":1.0', b'"qty":%r' % qty)))
    out = parse_chunk(("replay:x", lines), gate)
    dead = [d for kv in out if is_dead(kv) for d in kv[1]]
    total = len(dead)
    for sym, trades in (kv for kv in out if not is_dead(kv)):
        assert sym in gate.symbols
        assert all(1_230_940_800_000_000 <= t.ts_us <= NOW_US + 120_000_000 for t in trades)
        pipe = SymbolPipeline(sym, 10, 0, online_model="linear")
        res = pipe.on_trades(trades, 0)
        res.extend(pipe.on_eof())
        in_candles = sum(c.trades for c in res.candles)
        assert in_candles + len(res.dead_letters) == len(trades)
        total += len(trades)
        span = max(t.ts_us for t in trades) - min(t.ts_us for t in trades)
        assert len(res.candles) <= span // 10_000_000 + 2
    assert total == len(rows)


def test_pipeline_drops_repeats_refuses_implausible_ids_and_recovers_from_a_hostile_first_id() -> None:
    """The Kafka path's repeat filter lives in the per-symbol pipeline, after decoding and
    the trade gate: re-sends (ids at or below the newest) are dropped; an id more than
    MAX_TRADE_ID_JUMP above the newest is a dead letter, never a new mark; and a hostile
    *first* record with a huge id cannot make every genuine trade a 'repeat'."""
    from tickcast.schema import MAX_TRADE_ID_JUMP, Trade

    def t(tid: int, k: int) -> Trade:
        return Trade("BTC/USD", tid, 1_700_000_000_000_000 + k * 1000, 100.0, 1.0, "buy", "limit")

    pipe = SymbolPipeline("BTC/USD", 10, 0, dedupe=True)
    out = pipe.on_trades([t(1, 1), t(2, 2), t(2, 3), t(1, 4), t(3, 5), t(3 + MAX_TRADE_ID_JUMP + 1, 6), t(4, 7)], 0)
    out.extend(pipe.on_eof())
    assert sum(c.trades for c in out.candles) == 4 and pipe.repeats == 2
    assert [d.reason.split(":")[0] for d in out.dead_letters] == ["implausible trade_id 10000004"]
    assert pipe.max_trade_id == 4
    hostile = SymbolPipeline("BTC/USD", 10, 0, dedupe=True)
    out = hostile.on_trades([t(2**63 - 1, 1), t(10, 2), t(11, 3), t(11, 4)], 0)
    out.extend(hostile.on_eof())
    assert sum(c.trades for c in out.candles) == 3 and hostile.max_trade_id == 11 and hostile.repeats == 1
    # without dedupe (the direct path: the live client dedupes itself; late recovered trades
    # below the newest id are kept) only the implausible jump is refused
    direct = SymbolPipeline("BTC/USD", 10, 0)
    out = direct.on_trades([t(5, 1), t(3, 2), t(5 + MAX_TRADE_ID_JUMP + 1, 3)], 0)
    out.extend(direct.on_eof())
    assert sum(c.trades for c in out.candles) == 2 and len(out.dead_letters) == 1
