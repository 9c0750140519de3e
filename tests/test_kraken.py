"""Kraken wire formats (tickcast.kraken): real captures, every malformed category, garbage.

The real-data tests read ``../shared/data`` and skip when it is absent; every property is
also tested on data built here.
"""

from __future__ import annotations

import csv
import json
import math
from datetime import UTC, datetime, timedelta, timezone
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from tickcast import kraken
from tickcast.kraken import (
    MAX_NUMBER,
    KrakenError,
    format_rfc3339_us,
    is_error_ack,
    parse_message,
    parse_rest_trades,
    parse_rfc3339_us,
    subscribe_message,
    trades_to_message,
)
from tickcast.schema import MAX_RAW_CHARS, DeadLetter, Trade, dt_to_us, us_to_iso

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def shared(*parts: str) -> Path:
    p = SHARED.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"{p} is absent: real-data tests need ../shared/data beside the repository")
    return p


def parse_lines(lines: list[bytes]) -> tuple[list[Trade], list[DeadLetter]]:
    trades: list[Trade] = []
    dead: list[DeadLetter] = []
    for i, line in enumerate(lines):
        t, d = parse_message(line, "test", 0, str(i))
        trades += t
        dead += d
    return trades, dead


# -- real captures ------------------------------------------------------------------------------


def test_every_v2_capture_parses_without_dead_letters() -> None:
    files = sorted(shared("kraken_ws").glob("*v2*.jsonl"))
    assert len(files) >= 2, files
    for path in files:
        lines = path.read_bytes().splitlines()
        trades, dead = parse_lines(lines)
        assert dead == [], (path.name, dead[:3])
        # independent count with the stdlib: elements of the trade channel's data lists
        msgs = [json.loads(line) for line in lines]
        expected = sum(len(m["data"]) for m in msgs if m.get("channel") == "trade")
        assert len(trades) == expected > 0, path.name
        if path.name.startswith("v2_trade_session"):
            assert len(trades) == 17
        # the status message's connection_id exceeds 2**53 and is skipped, not mangled
        assert any(m.get("channel") == "status" and m["data"][0]["connection_id"] > 2**53 for m in msgs)


def test_v2_trade_capture_equals_the_normalised_csv() -> None:
    lines = shared("kraken_ws", "v2_trade_session_2026-07-07.jsonl").read_bytes().splitlines()
    trades, dead = parse_lines(lines)
    with shared("trades", "kraken_v2_BTCUSD_ETHUSD_2026-07-07_ws_trades.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert dead == [] and len(rows) == 17
    for t, r in zip(trades, rows, strict=True):
        assert (t.symbol, t.trade_id, t.side, t.ord_type) == (r["symbol"], int(r["trade_id"]), r["side"], r["ord_type"])
        assert (t.price, t.qty) == (float(r["price"]), float(r["qty"]))
        assert t.ts_us == dt_to_us(datetime.fromisoformat(r["ts_iso"].replace("Z", "+00:00")))
        assert format_rfc3339_us(t.ts_us) == r["ts_iso"]


def test_rest_page_equals_the_normalised_csv_and_cursor() -> None:
    text = shared("kraken_rest", "trades_XBTUSDT_2025-11-10.json").read_text()
    trades, last = parse_rest_trades(json.loads(text), "BTC/USDT")
    assert len(trades) == 1000
    assert last == int(json.loads(text)["result"]["last"]) == 1762820035982277754
    with shared("trades", "kraken_BTCUSDT_2025-11-10_rest_trades.csv").open() as f:
        rows = list(csv.DictReader(f))
    ties = 0
    for t, r in zip(trades, rows, strict=True):
        assert (t.symbol, t.trade_id, t.side, t.ord_type) == ("BTC/USDT", int(r["trade_id"]), r["side"], r["ord_type"])
        assert (t.price, t.qty) == (float(r["price"]), float(r["qty"]))
        csv_us = dt_to_us(datetime.fromisoformat(r["ts_iso"].replace("Z", "+00:00")))
        if len(r["ts_unix"].split(".")[1]) == 7 and r["ts_unix"].endswith("5"):
            # a tie at 7 decimals (100 of the 1000 rows): we round the decimal literal half
            # up; the CSV was made with datetime.fromtimestamp(float), which rounds the
            # double's binary value (float noise) half-even. They differ by 1 µs at most.
            ties += 1
            assert abs(t.ts_us - csv_us) <= 1
            assert t.ts_us == int(Decimal(r["ts_unix"]).scaleb(6).to_integral_value(rounding=ROUND_HALF_UP))
        else:
            assert t.ts_us == csv_us
    assert ties == 100
    # the same page decoded by orjson gives the same trades
    assert parse_rest_trades(orjson.loads(text), "BTC/USDT") == (trades, last)
    ids = [t.trade_id for t in trades]
    assert ids == list(range(ids[0], ids[0] + 1000))  # contiguous: usable for gap detection


# -- malformed input: one dead letter each, with a precise reason -------------------------------

DROP = object()


def element(**fields: object) -> dict[str, Any]:
    base: dict[str, Any] = {"symbol": "BTC/USD", "side": "buy", "price": 100.5, "qty": 0.25, "ord_type": "limit",
                            "trade_id": 7, "timestamp": "2026-01-01T00:00:00.000001Z"}
    base.update(fields)
    return {k: v for k, v in base.items() if v is not DROP}


def msg(*elements: object, type_: str = "update") -> bytes:
    return orjson.dumps({"channel": "trade", "type": type_, "data": list(elements)})


BAD_ELEMENTS = [
    (element(price=-1), "trade.price must be a number > 0; got -1"),
    (element(price=0), "trade.price must be a number > 0; got 0"),
    (element(price=-0.5), "trade.price must be a number > 0; got -0.5"),
    (element(price="100.5"), "trade.price must be a number > 0; got str '100.5'"),
    (element(price=True), "trade.price must be a number > 0; got bool true"),
    (element(price=None), "trade.price must be a number > 0; got null"),
    (element(price=DROP), "trade.price must be a number > 0; got missing"),
    (element(qty=[1]), "trade.qty must be a number > 0; got array [1]"),
    (element(qty=1e300), "trade.qty must be a number > 0 and <= 1e+15; got huge number 1e+300"),
    (element(price=10**16), "trade.price must be a number > 0 and <= 1e+15; got huge number 10000000000000000"),
    (element(side="short"), "trade.side must be \"buy\" or \"sell\"; got str 'short'"),
    (element(side="BUY"), "trade.side must be \"buy\" or \"sell\"; got str 'BUY'"),
    (element(side=DROP), "trade.side must be \"buy\" or \"sell\"; got missing"),
    (element(symbol=""), "trade.symbol must be a non-empty string; got str ''"),
    (element(symbol=5), "trade.symbol must be a non-empty string; got 5"),
    (element(trade_id=-3), "trade.trade_id must be a non-negative integer; got -3"),
    (element(trade_id=1.5), "trade.trade_id must be a non-negative integer; got 1.5"),
    (element(trade_id=7.0), "trade.trade_id must be a non-negative integer; got 7.0"),
    (element(trade_id=False), "trade.trade_id must be a non-negative integer; got bool false"),
    (element(trade_id="7"), "trade.trade_id must be a non-negative integer; got str '7'"),
    (element(timestamp=1767225600), "trade.timestamp must be an RFC 3339 string; got 1767225600"),
    (element(timestamp=DROP), "trade.timestamp must be an RFC 3339 string; got missing"),
    (element(timestamp="yesterday"),
     "trade.timestamp 'yesterday' is not RFC 3339: too short (9 characters); "
     "expected YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)"),
    (element(timestamp="2026-02-30T00:00:00Z"),
     "trade.timestamp '2026-02-30T00:00:00Z' is not RFC 3339: day 30 is out of range for 2026-02 (28 days)"),
    (element(timestamp="2026-01-01T00:00:00"),
     "trade.timestamp '2026-01-01T00:00:00' is not RFC 3339: missing time zone (Z or ±HH:MM)"),
    (element(ord_type=1), 'trade.ord_type must be a string ("market" or "limit"); got 1'),
    (5, "trade element must be an object; got 5"),
    ("x", "trade element must be an object; got str 'x'"),
    ([element()], "trade element must be an object; got array [{\"symbol\":\"BTC/USD\""),
]


@pytest.mark.parametrize(("bad", "reason"), BAD_ELEMENTS)
def test_each_bad_element_is_one_precise_dead_letter(bad: object, reason: str) -> None:
    trades, dead = parse_message(msg(bad), "src", 123, "pos")
    assert trades == []
    assert len(dead) == 1
    assert dead[0].reason.startswith(reason), dead[0].reason
    assert (dead[0].source, dead[0].received_at_us, dead[0].position) == ("src", 123, "pos")
    assert dead[0].raw == orjson.dumps(bad).decode()  # the element, re-serialised compactly


@pytest.mark.parametrize(("raw", "reason"), [
    (b"{nope", "not valid JSON: "),
    (b"", "not valid JSON: "),
    (b'{"channel":"trade"', "not valid JSON: "),
    (b"NaN", "not valid JSON: "),
    (b"\xff\xfe garbage", "not valid UTF-8: byte 0xff at offset 0 (invalid start byte)"),
    (b'{"channel":"trade","data":"\xc3"}', "not valid UTF-8: byte 0xc3 at offset 27 (invalid continuation byte)"),
    ('{"channel":"trade","x":"\ud800"}', "not valid UTF-8: lone surrogate '\\ud800' at character 24"),
    (b"[1, 2]", "message must be a JSON object; got array"),
    (b'"trade"', "message must be a JSON object; got str"),
    (b"null", "message must be a JSON object; got null"),
    (b'{"channel":"trade","type":"update","data":{}}', 'trade message "data" must be a list; got object {}'),
    (b'{"channel":"trade","type":"update"}', 'trade message "data" must be a list; got missing'),
    (b'{"channel":"trade","type":"weird","data":[]}',
     'trade message "type" must be "update" or "snapshot"; got str \'weird\''),
    (b'{"channel":"trade","data":[]}', 'trade message "type" must be "update" or "snapshot"; got missing'),
    (msg(element()).replace(b"100.5", b"1e999"), "number out of range (beyond ±1.8e308) in the JSON: "),
])
def test_each_bad_message_is_one_precise_dead_letter(raw: bytes | str, reason: str) -> None:
    trades, dead = parse_message(raw, "src", 123, "pos")
    assert trades == []
    assert len(dead) == 1
    assert dead[0].reason.startswith(reason), dead[0].reason
    assert (dead[0].source, dead[0].received_at_us, dead[0].position) == ("src", 123, "pos")
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw.encode("utf-8", "replace").decode()
    assert dead[0].raw == text  # the whole line, storable as UTF-8
    dead[0].raw.encode("utf-8")


def test_raw_of_a_wrong_type_is_a_dead_letter_not_a_crash() -> None:
    for raw in (None, 5, ["x"]):
        trades, dead = parse_message(raw, "s", 0)  # type: ignore[arg-type]
        assert trades == [] and len(dead) == 1 and "must be str or bytes" in dead[0].reason


def test_dead_letter_raw_is_truncated() -> None:
    raw = b'{"channel":"trade","type":"update","data":"' + b"x" * (3 * MAX_RAW_CHARS) + b'"}'
    (d,) = parse_message(raw, "s", 0)[1]
    assert len(d.raw) == MAX_RAW_CHARS and raw.decode().startswith(d.raw)
    (d,) = parse_message(b"\xff" * (5 * MAX_RAW_CHARS), "s", 0)[1]
    assert d.raw == "\ufffd" * MAX_RAW_CHARS
    big = element(symbol="S" * (2 * MAX_RAW_CHARS), side="nope")
    (d,) = parse_message(msg(big), "s", 0)[1]
    assert len(d.raw) == MAX_RAW_CHARS and len(d.reason) < 100
    (d,) = parse_message(msg(element(side="S" * 1000)), "s", 0)[1]
    assert d.reason == "trade.side must be \"buy\" or \"sell\"; got str '" + "S" * 40 + "'... (1000 characters)"


def test_good_elements_survive_bad_ones_and_positions_are_distinct() -> None:
    m = msg(element(trade_id=1), element(trade_id=2, price=-5), element(trade_id=3), "junk",
            element(trade_id=5, price=63500), type_="snapshot")
    trades, dead = parse_message(m, "s", 0, "L9")
    assert [t.trade_id for t in trades] == [1, 3, 5]
    assert [(d.position, d.reason) for d in dead] == [
        ("L9#1", "trade.price must be a number > 0; got -5"),
        ("L9#3", "trade element must be an object; got str 'junk'")]
    assert '"trade_id":2' in dead[0].raw


def test_accepted_variants() -> None:
    # integer prices and quantities become floats; a missing ord_type becomes ""
    (t,), dead = parse_message(msg(element(price=63500, qty=2, ord_type=DROP)), "s", 0)
    assert dead == [] and t.ord_type == "" and type(t.price) is float and (t.price, t.qty) == (63500.0, 2.0)
    # big integers: orjson reads integers beyond 64 bits as floats, so they are no trade_id
    raw = msg(element()).replace(b'"trade_id":7', b'"trade_id":' + str(2**64).encode())
    assert parse_message(raw, "s", 0)[1][0].reason == (
        "trade.trade_id must be a non-negative integer; got 1.8446744073709552e+19")
    raw = msg(element()).replace(b'"trade_id":7', b'"trade_id":' + str(2**64 - 1).encode())
    assert parse_message(raw, "s", 0)[0][0].trade_id == 2**64 - 1
    # str, bytes, bytearray and memoryview are all accepted; extra fields are ignored
    raw = msg(element(extra={"a": 1}))
    for r in (raw, raw.decode(), bytearray(raw), memoryview(raw)):
        assert parse_message(r, "s", 0) == ([Trade("BTC/USD", 7, 1767225600000001, 100.5, 0.25, "buy", "limit")], [])
    assert parse_message(msg(), "s", 0) == ([], [])  # an empty update


@pytest.mark.parametrize("raw", [
    b'{"channel":"heartbeat"}',
    b'{"channel":"status","type":"update","data":[{"version":"2.0.10","system":"online","api_version":"v2",'
    b'"connection_id":18446744073709551615}]}',
    b'{"channel":"status","type":"update","data":[{"connection_id":123456789012345678901234567890}]}',
    b'{"method":"subscribe","result":{"channel":"trade","snapshot":true,"symbol":"BTC/USD"},"success":true,'
    b'"time_in":"2026-07-07T23:00:03.515033Z","time_out":"2026-07-07T23:00:03.515064Z"}',
    b'{"error":"Currency pair not supported XBT/USD","method":"subscribe","success":false,"symbol":"XBT/USD"}',
    b'{"method":"unsubscribe","result":{"channel":"trade","symbol":"BTC/USD"},"success":true}',
    b'{"method":"pong","req_id":3,"time_in":"2026-07-07T23:00:03.515033Z"}',
    b'{"method":"subscribe","channel":"trade","type":"update","data":"nonsense"}',
    b'{"channel":"book","type":"snapshot","data":[{"symbol":"BTC/USD","bids":[{"price":1.5,"qty":2}]}]}',
    b'{"channel":"ticker","type":"update","data":[{"symbol":"BTC/USD","last":63500.1}]}',
    b'{"channel":"ohlc","type":"update","data":"whatever"}',
    b'{"channel":"Trade","type":"update","data":"not ours"}',
    b"{}",
])
def test_non_trade_messages_are_skipped(raw: bytes) -> None:
    assert parse_message(raw, "s", 0) == ([], [])


def test_error_ack_and_subscribe() -> None:
    ack = orjson.loads(b'{"error":"Currency pair not supported XBT/USD","method":"subscribe",'
                       b'"success":false,"symbol":"XBT/USD"}')
    assert is_error_ack(ack) == "Currency pair not supported XBT/USD"
    assert is_error_ack({"method": "subscribe", "success": False}) == "subscribe failed without an error text: missing"
    assert is_error_ack({"method": "subscribe", "success": True, "result": {}}) is None
    assert is_error_ack({"channel": "heartbeat"}) is None
    assert is_error_ack(["x"]) is None  # type: ignore[arg-type]
    assert subscribe_message(("BTC/USD", "ETH/USD"), snapshot=False) == {
        "method": "subscribe", "params": {"channel": "trade", "symbol": ["BTC/USD", "ETH/USD"], "snapshot": False}}


# -- garbage in: never raises, nothing lost -----------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
    max_leaves=20,
)
timestamps = st.one_of(st.just("2026-01-01T00:00:00.000001Z"), st.just("2025-02-29T00:00:00Z"),
                       st.text(max_size=30), st.integers(), st.none())
trade_like = st.fixed_dictionaries({}, optional={
    "symbol": st.sampled_from(["BTC/USD", "ETH/USD", "", 5, None]),
    "side": st.sampled_from(["buy", "sell", "x", 1, None]),
    "price": st.one_of(st.floats(), st.integers(min_value=-5, max_value=10**20), st.text(max_size=5), st.booleans()),
    "qty": st.one_of(st.floats(min_value=1e-9, max_value=1e3), st.integers(min_value=-5, max_value=10**17)),
    "trade_id": st.one_of(st.integers(min_value=-3, max_value=2**65), st.floats(), st.none()),
    "timestamp": timestamps,
    "ord_type": st.one_of(st.just("limit"), st.just("market"), st.integers())})


def stdlib_json(v: object) -> bytes:
    return json.dumps(v).encode()  # also writes Infinity, NaN and integers beyond 64 bits


@FAST
@given(st.one_of(
    st.binary(max_size=200),
    st.text(max_size=200),
    json_values.map(stdlib_json),
    st.builds(lambda d, typ, ch: stdlib_json({"channel": ch, "type": typ, "data": d}),
              st.lists(trade_like, max_size=5) | json_values,
              st.sampled_from(["update", "snapshot", "x"]), st.sampled_from(["trade", "trade", "book"])),
))
@example(b'{"channel":"trade","type":"update","data":[{"symbol":"BTC/USD","side":"buy","price":1,"qty":1,'
         b'"trade_id":1,"timestamp":"2026-01-01T00:00:00Z"},{"price":Infinity}]}')
def test_garbage_never_raises_and_nothing_is_lost(raw: bytes | str) -> None:
    trades, dead = parse_message(raw, "fuzz", 0, "p")
    for t in trades:
        assert type(t) is Trade and type(t.price) is float and type(t.qty) is float
        assert 0 < t.price <= MAX_NUMBER and 0 < t.qty <= MAX_NUMBER and math.isfinite(t.price)
        assert t.side in ("buy", "sell") and t.symbol and type(t.trade_id) is int and t.trade_id >= 0
    for d in dead:
        assert d.reason and d.source == "fuzz" and len(d.raw) <= MAX_RAW_CHARS
        d.raw.encode("utf-8")  # storable
    assert len({d.position for d in dead}) == len(dead)  # distinct
    try:
        m = orjson.loads(raw)
    except orjson.JSONDecodeError:
        assert trades == [] and len(dead) == 1
        return
    if not isinstance(m, dict):
        assert trades == [] and len(dead) == 1
    elif m.get("channel") != "trade" or "method" in m:
        assert trades == [] and dead == []  # a recognised non-trade message
    elif m.get("type") in ("update", "snapshot") and isinstance(m.get("data"), list):
        assert len(trades) + len(dead) == len(m["data"])  # every element accounted for
    else:
        assert trades == [] and len(dead) == 1


@FAST
@given(st.lists(st.builds(
    Trade,
    symbol=st.sampled_from(["BTC/USD", "ETH/USD", "SOL/EUR"]),
    trade_id=st.integers(min_value=0, max_value=2**64 - 1),
    ts_us=st.integers(min_value=0, max_value=dt_to_us(datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC))),
    price=st.floats(min_value=1e-10, max_value=MAX_NUMBER),
    qty=st.floats(min_value=1e-10, max_value=MAX_NUMBER),
    side=st.sampled_from(["buy", "sell"]),
    ord_type=st.sampled_from(["market", "limit", ""]),
), max_size=12), st.sampled_from(["update", "snapshot"]))
def test_trades_to_message_round_trips(trades: list[Trade], type_: str) -> None:
    m = trades_to_message(trades, type_)
    assert m["channel"] == "trade" and m["type"] == type_
    back, dead = parse_message(orjson.dumps(m), "s", 0)
    assert back == trades and dead == []
    for t, e in zip(trades, m["data"], strict=True):
        assert list(e) == ["symbol", "side", "price", "qty", "ord_type", "trade_id", "timestamp"]  # Kraken's order
        if t.ts_us < dt_to_us(datetime(9999, 1, 1, tzinfo=UTC)):
            assert e["timestamp"] == us_to_iso(t.ts_us)


# -- numbers: decimal literals survive ---------------------------------------------------------


@FAST
@given(st.integers(min_value=1, max_value=10**15 - 1), st.integers(min_value=-10, max_value=2))
@example(4134, -8)  # 0.00004134, a real Kraken qty
@example(635019, -1)  # 63501.9
@example(999999999999999, -6)  # 15 significant digits
def test_decimal_literals_with_15_significant_digits_round_trip(digits: int, exponent: int) -> None:
    lit = format(Decimal(digits).scaleb(exponent), "f")  # a plain literal, as Kraken writes it
    assume(Decimal(lit) <= Decimal(int(MAX_NUMBER)))
    raw = msg(element(price=0.5, qty=0.5)).replace(b'"price":0.5', b'"price":' + lit.encode())
    raw = raw.replace(b'"qty":0.5', b'"qty":' + lit.encode())
    (t,), dead = parse_message(raw, "s", 0)
    assert dead == []
    # the shortest repr of the double is the literal again (exactly, as a decimal)
    assert Decimal(repr(t.price)) == Decimal(lit) == Decimal(repr(t.qty))
    assert repr(t.price) == repr(float(lit))


# -- RFC 3339 -----------------------------------------------------------------------------------


@st.composite
def rfc3339(draw: st.DrawFn) -> tuple[str, str]:
    """(an RFC 3339 text, the same instant written for datetime.fromisoformat)."""
    dt = draw(st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)))  # noqa: DTZ001
    n_frac = draw(st.integers(min_value=0, max_value=9))
    frac = "".join(draw(st.lists(st.sampled_from("0123456789"), min_size=n_frac, max_size=n_frac)))
    sep = draw(st.sampled_from("Tt "))
    offset_min = draw(st.integers(min_value=-(23 * 60 + 59), max_value=23 * 60 + 59))
    if offset_min == 0:
        zone = draw(st.sampled_from(["Z", "z", "+00:00", "-00:00"]))
    else:
        sign = "+" if offset_min > 0 else "-"
        zone = f"{sign}{abs(offset_min) // 60:02d}:{abs(offset_min) % 60:02d}"
    body = dt.strftime("%Y-%m-%d") if dt.year >= 1000 else f"{dt.year:04d}-{dt.month:02d}-{dt.day:02d}"
    text = f"{body}{sep}{dt:%H:%M:%S}{'.' + frac if frac else ''}{zone}"
    iso = f"{body}T{dt:%H:%M:%S}{'.' + (frac + '000000')[:6] if frac else ''}"
    iso += "+00:00" if zone in ("Z", "z") else zone
    return text, iso


@settings(max_examples=300, deadline=None)
@given(rfc3339())
@example(("2026-07-07T23:00:04.590753Z", "2026-07-07T23:00:04.590753+00:00"))
@example(("2024-02-29T23:59:59.999999999-23:59", "2024-02-29T23:59:59.999999-23:59"))
@example(("2000-02-29 00:00:00+14:00", "2000-02-29T00:00:00+14:00"))
def test_rfc3339_agrees_with_datetime(case: tuple[str, str]) -> None:
    text, iso = case
    expected = dt_to_us(datetime.fromisoformat(iso))  # fractions beyond 6 digits truncated, never rounded
    assert parse_rfc3339_us(text) == expected
    assert parse_rfc3339_us(text) == expected  # again, now from the caches
    if text.endswith(("Z", "z", "+00:00", "-00:00")) and "." in text:
        kraken_form = format_rfc3339_us(expected)
        assert parse_rfc3339_us(kraken_form) == expected
        assert kraken_form == us_to_iso(expected) or expected < 0


@FAST
@given(rfc3339(), st.data())
def test_rfc3339_rejects_broken_timestamps(case: tuple[str, str], data: st.DataObject) -> None:
    text, _ = case
    parse_rfc3339_us(text)  # valid, and now cached: the caches must not let a broken variant through
    digit_positions = [i for i in range(19) if i not in (4, 7, 10, 13, 16)]
    kind = data.draw(st.sampled_from(["digit", "separator", "zone", "fraction", "range", "junk"]))
    if kind == "digit":
        i = data.draw(st.sampled_from(digit_positions))
        bad = text[:i] + data.draw(st.sampled_from(["x", " ", "+", "-", "_", "٣", "²", ""])) + text[i + 1:]
    elif kind == "separator":
        i = data.draw(st.sampled_from([4, 7, 10, 13, 16]))
        bad = text[:i] + data.draw(st.sampled_from(["/", "_", "x", "", "--", "0"])) + text[i + 1:]
    elif kind == "zone":
        body = text[:19] + (text[19:].split("Z")[0].split("z")[0].split("+")[0].split("-")[0])
        bad = body + data.draw(st.sampled_from(["", "ZZ", "UTC", "+0200", "+02", "+24:00", "-12:60", "+02:00Z", " Z",
                                                "Z ", "\nZ"]))
    elif kind == "fraction":
        bad = text[:19] + data.draw(st.sampled_from([".", ".1234567890", ".12 3", "..1", ".٣"])) + "Z"
    elif kind == "range":
        field = data.draw(st.sampled_from(["month", "day", "hour", "minute", "second", "year"]))
        if field == "month":
            bad = text[:5] + data.draw(st.sampled_from(["00", "13", "99"])) + text[7:]
        elif field == "day":
            y, mo = int(text[:4]), int(text[5:7])
            dim = (31, 29 if y % 4 == 0 and (y % 100 or y % 400 == 0) else 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)[mo - 1]
            bad = text[:8] + f"{data.draw(st.sampled_from([0, dim + 1, 32, 99])):02d}" + text[10:]
        elif field == "year":
            bad = "0000" + text[4:]
        else:
            a, top = {"hour": (11, 24), "minute": (14, 60), "second": (17, 60)}[field]
            bad = text[:a] + f"{data.draw(st.integers(min_value=top, max_value=99)):02d}" + text[a + 2:]
    else:
        bad = text + data.draw(st.sampled_from(["x", " ", "Z", "0", "\x00"]))
    with pytest.raises(ValueError, match=r"^timestamp "):
        parse_rfc3339_us(bad)


@pytest.mark.parametrize(("bad", "why"), [
    ("2025-02-29T00:00:00Z", "day 29 is out of range for 2025-02 (28 days)"),
    ("1900-02-29T00:00:00Z", "day 29 is out of range for 1900-02 (28 days)"),
    ("2026-04-31T00:00:00Z", "day 31 is out of range for 2026-04 (30 days)"),
    ("2026-13-01T00:00:00Z", "month 13 is out of range 01-12"),
    ("2026-01-01T24:00:00Z", "hour 24 is out of range 00-23"),
    ("2026-01-01T23:60:00Z", "minute 60 is out of range 00-59"),
    ("2026-12-31T23:59:60Z", "second 60 is out of range 00-59 (leap seconds are not supported)"),
    ("0000-01-01T00:00:00Z", "year 0000 is out of range 0001-9999"),
    ("2026-01-01T00:00:00", "missing time zone (Z or ±HH:MM)"),
    ("2026-01-01T00:00:00.123", "missing time zone (Z or ±HH:MM)"),
    ("2026-01-01T00:00:00+0200", "bad time zone '+0200'; expected Z or ±HH:MM"),
    ("2026-01-01T00:00:00+24:00", "zone offset '+24:00' is out of range (hours 00-23, minutes 00-59)"),
    ("2026-01-01T00:00:00.Z", "'.' must be followed by 1-9 fractional digits"),
    ("2026-01-01T00:00:00.1234567890Z", "10 fractional digits; at most 9 are accepted"),
    ("2026-01-01T00:00:00,5Z", "bad time zone ',5Z'; expected Z or ±HH:MM"),
    ("2026-01-01X00:00:00Z", "expected 'T', 't' or ' ' between date and time at position 10; got 'X'"),
    ("20260101T000000.000000Z", "expected '-' at position 4; got '0' (YYYY-MM-DDTHH:MM:SS)"),
    ("2026-1-01T00:00:00Z", "expected '-' at position 7; got '0' (YYYY-MM-DDTHH:MM:SS)"),
    ("2026-01-01T0a:00:00Z", "hour '0a' is not 2 digits"),
    ("+026-01-01T00:00:00Z", "year '+026' is not 4 digits"),
    ("２０２６-01-01T00:00:00Z", "it holds non-ASCII characters"),
    ("2026-01-01T00:00Z", "too short (17 characters)"),
])
def test_rfc3339_reasons_are_precise(bad: str, why: str) -> None:
    with pytest.raises(ValueError) as err:
        parse_rfc3339_us(bad)
    assert str(err.value).startswith(f"timestamp {bad!r} is not RFC 3339: {why}"), str(err.value)


def test_rfc3339_caches_let_nothing_broken_through() -> None:
    kraken._MINUTE_US.clear()
    good = "2026-07-07T23:00:04.590753Z"
    assert parse_rfc3339_us(good) == 1783465204590753
    assert parse_rfc3339_us("2026-07-07T23:00:59.000001Z") == 1783465259000001  # minute tier
    for bad in ["2026-07-07T23:00:04.59075xZ", "2026-07-07T23:00:04.+90753Z", "2026-07-07T23:00:04.590753ZZ",
                "2026-07-07T23:00:04.590753", "2026-07-07T23:00:04. 90753Z",
                "2026-07-07T23:00:60.590753Z", "2026-07-07T23:00:4_.590753Z", "2026-07-07T23:00:04.59075٣Z",
                "2026-07-07T23:00:+4.590753Z", "2026-07-07T23:00:04.1_2345Z"]:
        with pytest.raises(ValueError):
            parse_rfc3339_us(bad)
    for not_text in (None, 5, 1.5, ["2026-07-07T23:00:04.590753Z"], {"a": 1}, b"2026-07-07T23:00:04.590753Z"):
        with pytest.raises(ValueError, match="timestamp must be an RFC 3339 string"):
            parse_rfc3339_us(not_text)  # type: ignore[arg-type]
    assert parse_rfc3339_us("2026-07-07T23:00:04.5907539Z") == 1783465204590753  # 7 digits: truncated
    # the lower-case forms are not confused with the cached upper-case ones
    assert parse_rfc3339_us("2026-07-07t23:00:04.590753z") == 1783465204590753
    assert parse_rfc3339_us("2026-07-07 23:00:04.590753Z") == 1783465204590753


@FAST
@given(st.integers(min_value=dt_to_us(datetime(1, 1, 1, tzinfo=UTC)),
                   max_value=dt_to_us(datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC))))
def test_format_rfc3339_us_inverts_the_parser(us: int) -> None:
    text = format_rfc3339_us(us)
    assert len(text) == 27 and parse_rfc3339_us(text) == us
    dt = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=us)
    assert text == f"{dt.year:04d}-{dt:%m-%dT%H:%M:%S.%f}Z"


# -- REST ---------------------------------------------------------------------------------------


def rest_page(rows: list[list[Any]], last: object = "1783465204590753500") -> dict[str, Any]:
    return {"error": [], "result": {"XXBTZUSD": rows, "last": last}}


def test_rest_rows_and_errors() -> None:
    rows = [["63501.90000", "0.00004134", 1783465204.5907535, "s", "l", "", 1],
            ["63502.00000", "1.00000000", 1783465205, "b", "m", "", 2],
            ["63502.10000", "0.5", "1783465205.0000004", "b", "x", "", 3]]
    trades, last = parse_rest_trades(rest_page(rows), "BTC/USD")
    assert last == 1783465204590753500
    assert trades == [Trade("BTC/USD", 1, 1783465204590754, 63501.9, 4.134e-05, "sell", "limit"),
                      Trade("BTC/USD", 2, 1783465205000000, 63502.0, 1.0, "buy", "market"),
                      Trade("BTC/USD", 3, 1783465205000000, 63502.1, 0.5, "buy", "")]
    assert parse_rest_trades(rest_page([], last=None), "BTC/USD") == ([], None)
    with pytest.raises(KrakenError, match="^Kraken REST error: EQuery:Unknown asset pair$"):
        parse_rest_trades({"error": ["EQuery:Unknown asset pair"]}, "X/Y")
    with pytest.raises(KrakenError, match="EGeneral:Too many requests; EService:Busy"):
        parse_rest_trades({"error": ["EGeneral:Too many requests", "EService:Busy"], "result": {}}, "X/Y")
    broken: list[tuple[Any, str]] = [
        ({"error": [], "result": {"last": "1"}}, 'must hold exactly one pair besides "last"; got []'),
        ({"error": [], "result": {"A": [], "B": [], "last": "1"}}, "got ['A', 'B']"),
        ({"error": []}, '"result" must be an object; got missing'),
        (rest_page("x"), "rows of XXBTZUSD must be a list"),  # type: ignore[arg-type]
        (rest_page([["1", "1", 1.0, "b", "l", ""]]), "Trades row 0 must be [price, volume, time, side"),
        (rest_page([["-1", "1", 1.0, "b", "l", "", 1]]), "Trades row 0: price must be a decimal string > 0"),
        (rest_page([["1", "nan", 1.0, "b", "l", "", 1]]), "Trades row 0: volume must be"),
        (rest_page([["1", "1", 1.0, "buy", "l", "", 1]]), "Trades row 0: side must be \"b\" or \"s\"; got str 'buy'"),
        (rest_page([["1", "1", "soon", "b", "l", "", 1]]), "Trades row 0: time must be seconds since the epoch"),
        (rest_page([["1", "1", 1.0, "b", "l", "", "1"]]), "Trades row 0: trade_id must be a non-negative integer"),
        (rest_page([], last="12ab"), '"last" cursor must be a non-negative integer (nanoseconds)'),
    ]
    for payload, why in broken:
        with pytest.raises(KrakenError) as err:
            parse_rest_trades(payload, "BTC/USD")
        assert why in str(err.value), str(err.value)
    with pytest.raises(KrakenError, match="must be a JSON object; got array"):
        parse_rest_trades([], "BTC/USD")  # type: ignore[arg-type]


@FAST
@given(st.integers(min_value=1_000_000_000, max_value=2_000_000_000), st.integers(min_value=0, max_value=9_999_999),
       st.integers(min_value=4, max_value=7))
@example(1762795433, 9717445, 7)  # .9717445 -> .971745 (half up), as the normalised CSV has it
def test_rest_time_to_us_is_exact(sec: int, frac7: int, decimals: int) -> None:
    lit = f"{sec}.{frac7:07d}"[: 11 + decimals]
    via_float = json.loads(json.dumps({"t": float(lit)}))["t"]  # what the client decodes
    assume(Decimal(repr(via_float)) == Decimal(lit))  # Kraken's literals are shortest reprs
    want = int((Decimal(lit) * 1_000_000).to_integral_value(rounding=ROUND_HALF_UP))
    row = ["1.0", "1.0", via_float, "b", "l", "", 1]
    assert parse_rest_trades(rest_page([row]), "BTC/USD")[0][0].ts_us == want


def test_mixed_timezone_offsets_are_the_same_instant() -> None:
    base = datetime(2026, 7, 7, 23, 0, 4, 590753, tzinfo=UTC)
    for minutes in (-720, -90, 0, 330, 840):
        local = base.astimezone(timezone(timedelta(minutes=minutes)))
        assert parse_rfc3339_us(local.isoformat()) == dt_to_us(base)
