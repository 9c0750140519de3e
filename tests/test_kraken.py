"""Kraken wire-format parsing: real captures, every malformed category, and garbage."""

from __future__ import annotations

import csv
import json
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tickcast.kraken import (
    KrakenError,
    is_error_ack,
    parse_message,
    parse_rest_trades,
    parse_rfc3339_us,
    trades_to_message,
)
from tickcast.schema import Trade, dt_to_us

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def need(p: Path) -> Path:
    if not p.exists():
        pytest.skip(f"{p} is absent (real-data tests need ../shared/data beside the repo)")
    return p


def parse_file(path: Path) -> tuple[list[Trade], list]:  # type: ignore[type-arg]
    trades, dead = [], []
    for i, line in enumerate(path.read_bytes().splitlines()):
        t, d = parse_message(line, "test", 0, str(i))
        trades += t
        dead += d
    return trades, dead


def test_v2_trade_capture_equals_normalised_csv() -> None:
    trades, dead = parse_file(need(SHARED / "kraken_ws" / "v2_trade_session_2026-07-07.jsonl"))
    assert dead == [] and len(trades) == 17
    with need(SHARED / "trades" / "kraken_v2_BTCUSD_ETHUSD_2026-07-07_ws_trades.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 17
    for t, r in zip(trades, rows, strict=True):
        assert (t.symbol, t.trade_id, t.side, t.ord_type) == (r["symbol"], int(r["trade_id"]), r["side"], r["ord_type"])
        assert t.price == float(r["price"]) and t.qty == float(r["qty"])
        assert t.ts_us == dt_to_us(datetime.fromisoformat(r["ts_iso"].replace("Z", "+00:00")))


def test_book_and_trade_capture_skips_other_channels() -> None:
    path = need(SHARED / "kraken_ws" / "v2_book_and_trade_session_2026-07-07.jsonl")
    trades, dead = parse_file(path)
    independent = sum(len(m["data"]) for m in map(json.loads, path.read_text().splitlines())
                      if m.get("channel") == "trade")
    assert dead == [] and len(trades) == independent > 0


def test_rest_page_parses_with_cursor() -> None:
    page = json.loads(need(SHARED / "kraken_rest" / "trades_XBTUSDT_2025-11-10.json").read_text())
    trades, last = parse_rest_trades(page, "BTC/USDT")
    assert len(trades) == 1000 and last == 1762820035982277754
    assert trades[0].trade_id == 10218208 and trades[0].side == "buy" and trades[0].ord_type == "limit"
    assert trades[0].price == 105433.6 and trades[0].ts_us == 1762795433971745
    with pytest.raises(KrakenError, match="EQuery:Unknown asset pair"):
        parse_rest_trades({"error": ["EQuery:Unknown asset pair"]}, "X/Y")


def msg(**fields: object) -> bytes:
    base = {"symbol": "BTC/USD", "side": "buy", "price": 100.5, "qty": 0.25, "ord_type": "limit",
            "trade_id": 7, "timestamp": "2026-01-01T00:00:00.000001Z"}
    base.update(fields)
    base = {k: v for k, v in base.items() if v is not DROP}
    return orjson.dumps({"channel": "trade", "type": "update", "data": [base]})


DROP = object()


@pytest.mark.parametrize(("raw", "reason"), [
    (b"{nope", "not valid JSON"),
    (b"\xff\xfe garbage", "not valid JSON"),
    (b"[1, 2]", "message must be a JSON object; got list"),
    (b'{"channel":"trade","type":"update","data":{}}', "data must be a list; got dict"),
    (b'{"channel":"trade","type":"weird","data":[]}', 'type must be "update" or "snapshot"'),
    (b'{"channel":"trade","type":"update","data":[5]}', "trade entry must be an object; got int"),
    (msg(price=-1), "trade.price must be a number > 0; got -1"),
    (msg(price=0), "trade.price must be a number > 0; got 0"),
    (msg(price="100.5"), "trade.price must be a number > 0; got str"),
    (msg(price=True), "trade.price must be a number > 0; got bool"),
    (msg(qty=DROP), "trade.qty must be a number > 0; got missing"),
    (msg(qty=1e300), "trade.qty is a huge number"),
    (b'{"channel":"trade","type":"update","data":[{"symbol":"BTC/USD","side":"buy","price":1e999,'
     b'"qty":1,"trade_id":1,"timestamp":"2026-01-01T00:00:00Z"}]}', "not valid JSON"),
    (msg(side="short"), 'trade.side must be "buy" or "sell"'),
    (msg(symbol=""), "trade.symbol must be a non-empty string"),
    (msg(trade_id=-3), "trade.trade_id must be a non-negative integer"),
    (msg(trade_id=1.5), "trade.trade_id must be a non-negative integer; got float"),
    (msg(timestamp="yesterday"), "trade.timestamp"),
    (msg(timestamp="2026-02-30T00:00:00Z"), "day 30 out of range"),
    (msg(timestamp="2026-01-01T00:00:00"), "missing time zone"),
    (msg(timestamp=1767225600), "trade.timestamp must be an RFC 3339 string; got int"),
])
def test_each_malformed_input_is_one_precise_dead_letter(raw: bytes, reason: str) -> None:
    trades, dead = parse_message(raw, "src", 123, "pos")
    assert trades == []
    assert len(dead) == 1
    assert reason in dead[0].reason, dead[0].reason
    assert dead[0].source == "src" and dead[0].received_at_us == 123 and dead[0].position == "pos"


def test_good_trades_of_a_message_survive_a_bad_one() -> None:
    m = {"channel": "trade", "type": "snapshot", "data": [
        {"symbol": "ETH/USD", "side": "sell", "price": 3000.01, "qty": 1.5, "ord_type": "market", "trade_id": 1,
         "timestamp": "2026-01-01T00:00:00.5Z"},
        {"symbol": "ETH/USD", "side": "sell", "price": -5, "qty": 1.5, "ord_type": "market", "trade_id": 2,
         "timestamp": "2026-01-01T00:00:00.5Z"}]}
    trades, dead = parse_message(orjson.dumps(m), "s", 0, "L9")
    assert [t.trade_id for t in trades] == [1] and len(dead) == 1 and dead[0].position == "L9#1"
    assert '"trade_id":2' in dead[0].raw


@pytest.mark.parametrize("raw", [
    b'{"channel":"heartbeat"}', b'{"channel":"status","type":"update","data":[{"connection_id":18446744073709551615}]}',
    b'{"method":"subscribe","result":{"channel":"trade","symbol":"BTC/USD"},"success":true}',
    b'{"channel":"book","type":"update","data":[]}', b'{"method":"pong"}',
])
def test_non_trade_messages_are_skipped(raw: bytes) -> None:
    assert parse_message(raw, "s", 0) == ([], [])


def test_error_ack() -> None:
    assert is_error_ack({"method": "subscribe", "success": False, "error": "Currency pair not supported XBT/USD"}) \
        == "Currency pair not supported XBT/USD"
    assert is_error_ack({"method": "subscribe", "success": True}) is None


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
    max_leaves=20,
)
trade_like = st.fixed_dictionaries({}, optional={
    "symbol": st.sampled_from(["BTC/USD", "", 5, None]), "side": st.sampled_from(["buy", "sell", "x", 1]),
    "price": st.one_of(st.floats(), st.integers(), st.text(max_size=5), st.booleans()),
    "qty": st.one_of(st.floats(), st.integers(min_value=-5, max_value=10**20)),
    "trade_id": st.one_of(st.integers(), st.floats(), st.none()),
    "timestamp": st.one_of(st.text(max_size=30), st.just("2026-01-01T00:00:00Z"), st.integers()),
    "ord_type": st.one_of(st.just("limit"), st.integers())})


@settings(max_examples=300, deadline=None)
@given(st.one_of(
    st.binary(max_size=200),
    st.text(max_size=200),
    json_values.map(lambda v: json.dumps(v).encode()),  # stdlib: also writes big ints and Infinity
    st.builds(lambda d, typ: json.dumps({"channel": "trade", "type": typ, "data": d}).encode(),
              st.lists(trade_like, max_size=4) | json_values, st.sampled_from(["update", "snapshot", "x"])),
))
def test_garbage_never_raises_and_is_never_lost(raw: bytes | str) -> None:
    trades, dead = parse_message(raw, "fuzz", 0)
    for t in trades:
        assert t.price > 0 and t.qty > 0 and t.side in ("buy", "sell")
    for d in dead:
        assert d.reason
    try:
        m = orjson.loads(raw)
    except orjson.JSONDecodeError:
        assert len(dead) == 1 and trades == []
        return
    if isinstance(m, dict) and m.get("channel") == "trade" and "method" not in m:
        data = m.get("data")
        if m.get("type") in ("update", "snapshot") and isinstance(data, list):
            assert len(trades) + len(dead) == len(data)  # every element accounted for
        else:
            assert len(dead) == 1


@settings(max_examples=300, deadline=None)
@given(st.decimals(min_value=Decimal("0.00000001"), max_value=Decimal("9999999.99999999"), places=8, allow_nan=False))
def test_decimal_literals_round_trip_exactly(d: Decimal) -> None:
    """Up to 15 significant digits (all Kraken precisions) survive parsing exactly."""
    if d <= 0:
        return
    lit = format(d.normalize(), "f")
    trades, _ = parse_message(msg(price=None).replace(b'"price":null', b'"price":' + lit.encode()), "s", 0)
    assert Decimal(repr(trades[0].price)) == Decimal(lit)


@settings(max_examples=300, deadline=None)
@given(st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2200, 1, 1)),  # noqa: DTZ001 - naive bounds
       st.integers(min_value=-23 * 60, max_value=23 * 60), st.sampled_from(["T", " ", "t"]))
def test_rfc3339_agrees_with_datetime(naive: datetime, offset_min: int, sep: str) -> None:
    tz = timezone(timedelta(minutes=offset_min))
    ts = naive.replace(tzinfo=tz)
    text = ts.isoformat(sep=sep)
    if offset_min == 0:
        text = text.replace("+00:00", "Z")
    assert parse_rfc3339_us(text) == dt_to_us(ts)


@pytest.mark.parametrize("bad", ["2026-13-01T00:00:00Z", "2025-02-29T00:00:00Z", "2026-01-01T24:00:00Z",
                                 "2026-01-01T00:00:00+25:00", "2026-01-01T00:00:00.Z", "20260101T000000Z",
                                 "2026-01-01T00:00:00ZZ", "２０２６-01-01T00:00:00Z"])
def test_rfc3339_rejects(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_rfc3339_us(bad)


def test_trades_to_message_round_trips() -> None:
    ts = [Trade("BTC/USD", i, 1_767_225_600_123_456 + i, 60000.1 + i, 0.00012345, "buy" if i % 2 else "sell",
                "limit") for i in range(5)]
    back, dead = parse_message(orjson.dumps(trades_to_message(ts)), "s", 0)
    assert back == ts and dead == []
