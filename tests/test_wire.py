"""tickcast's Kafka trade record (tickcast.wire): exact round trip, every malformed
category with a precise reason, and arbitrary garbage never raises."""

from __future__ import annotations

import json

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tickcast.kraken import parse_message, trades_to_message
from tickcast.schema import DeadLetter, Trade
from tickcast.wire import decode_trade, encode_trade

MIN_US = 0
MAX_US = 4_102_444_800_000_000  # 2100-01-01

symbols = st.from_regex(r"[A-Z0-9]{1,8}/[A-Z0-9]{1,8}", fullmatch=True)
positive = st.floats(min_value=1e-12, max_value=1e15, allow_nan=False, allow_infinity=False)
trades = st.builds(
    Trade,
    symbol=symbols,
    trade_id=st.integers(0, 2**63 - 1),
    ts_us=st.integers(MIN_US, MAX_US),
    price=positive,
    qty=positive,
    side=st.sampled_from(["buy", "sell"]),
    ord_type=st.sampled_from(["market", "limit", ""]),
)


@given(trades)
@settings(max_examples=400, deadline=None)
def test_round_trip_is_exact(t: Trade) -> None:
    raw = encode_trade(t)
    got, dead = decode_trade(raw, "kafka:trades", 5, "0:1")
    assert dead == [] and got == [t]
    # bit for bit, not just ==
    assert got[0].price.hex() == t.price.hex() and got[0].qty.hex() == t.qty.hex()
    assert type(got[0].price) is float and type(got[0].ts_us) is int
    # the str form decodes the same
    assert decode_trade(raw.decode(), "kafka:trades", 5) == ([t], [])


@given(trades)
@settings(max_examples=100, deadline=None)
def test_same_trade_as_the_kraken_message_it_came_from(t: Trade) -> None:
    from_kraken, dead = parse_message(orjson.dumps(trades_to_message([t])), "x", 0)
    assert dead == []
    assert decode_trade(encode_trade(from_kraken[0]), "x", 0)[0] == from_kraken


def test_record_layout_is_the_documented_one() -> None:
    t = Trade("BTC/USD", 103436768, 1_783_465_204_590_753, 63501.9, 4.134e-05, "sell", "limit")
    assert orjson.loads(encode_trade(t)) == {
        "v": 1, "symbol": "BTC/USD", "trade_id": 103436768, "ts": "2026-07-07T23:00:04.590753Z",
        "ts_us": 1783465204590753, "price": 63501.9, "qty": 4.134e-05, "side": "sell", "ord_type": "limit"}


GOOD = {"v": 1, "symbol": "BTC/USD", "trade_id": 5, "ts": "2026-07-07T23:00:04.590753Z",
        "ts_us": 1783465204590753, "price": 100.5, "qty": 2, "side": "buy", "ord_type": "limit"}


def bad(**changes: object) -> dict[str, object]:
    d = dict(GOOD)
    for k, v in changes.items():
        if v is ...:
            d.pop(k)
        else:
            d[k] = v
    return d


@pytest.mark.parametrize(("record", "reason"), [
    (b"{nope", "not valid JSON"),
    (b"", "not valid JSON"),
    (b"[1,2]", "trade record must be a JSON object; got array [1,2]"),
    (b'"BTC/USD"', "trade record must be a JSON object; got str 'BTC/USD'"),
    (bad(v=...), "trade record version v must be 1; got missing"),
    (bad(v=2), "trade record version v must be 1; got 2 (written by a newer tickcast?)"),
    (bad(v="1"), "trade record version v must be 1; got str '1'"),
    (bad(symbol=""), "trade.symbol must be a non-empty string; got str ''"),
    (bad(symbol=7), "trade.symbol must be a non-empty string; got 7"),
    (bad(trade_id=-1), "trade.trade_id must be a non-negative integer; got -1"),
    (bad(trade_id=1.5), "trade.trade_id must be a non-negative integer; got 1.5"),
    (bad(trade_id=True), "trade.trade_id must be a non-negative integer; got bool true"),
    (bad(ts_us="1783465204590753"), "trade.ts_us must be an integer of microseconds since the epoch; "
                                    "got str '1783465204590753'"),
    (bad(ts_us=..., ts=...), "trade.ts_us must be an integer (or trade.ts an RFC 3339 string); got missing"),
    (bad(ts_us=..., ts="yesterday"), "trade.ts: timestamp 'yesterday' is not RFC 3339"),
    (bad(side="b"), "trade.side must be \"buy\" or \"sell\"; got str 'b'"),
    (bad(side=...), "trade.side must be \"buy\" or \"sell\"; got missing"),
    (bad(price=0), "trade.price must be a number > 0; got 0"),
    (bad(price=-3.5), "trade.price must be a number > 0; got -3.5"),
    (bad(price="100.5"), "trade.price must be a number > 0; got str '100.5'"),
    (bad(price=None), "trade.price must be a number > 0; got null"),
    (bad(qty=1e300), "trade.qty must be a number > 0 and <= 1e+15; got huge number 1e+300"),
    (bad(ord_type=1), 'trade.ord_type must be a string ("market" or "limit"); got 1'),
])
def test_malformed_records_become_one_precise_dead_letter(record: object, reason: str) -> None:
    raw = record if isinstance(record, bytes) else orjson.dumps(record)
    got, dead = decode_trade(raw, "kafka:trades", 42, "1:99")
    assert got == [] and len(dead) == 1
    d = dead[0]
    assert d.reason.startswith(reason), d.reason
    assert (d.source, d.received_at_us, d.position, d.raw) == ("kafka:trades", 42, "1:99", raw.decode())


def test_ts_is_used_when_ts_us_is_absent_and_extra_fields_are_ignored() -> None:
    got, dead = decode_trade(orjson.dumps(bad(ts_us=..., ord_type=..., venue="kraken")), "k", 0)
    assert dead == [] and got == [Trade("BTC/USD", 5, 1783465204590753, 100.5, 2.0, "buy", "")]


def test_raw_is_kept_verbatim_but_bounded() -> None:
    huge = b'{"v":1,"pad":"' + b"x" * 100_000 + b'"}'
    (d,) = decode_trade(huge, "k", 0)[1]
    assert len(d.raw) == 65_536 and d.raw.startswith('{"v":1,"pad":"xxx')
    (d,) = decode_trade(b"\xff\xfe{", "k", 0)[1]
    assert d.reason.startswith("not valid JSON") and "\ufffd" in d.raw


@given(st.one_of(st.binary(max_size=300), st.text(max_size=300),
                 st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                              lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=10), c,
                                                                                   max_size=6),
                              max_leaves=20).map(lambda v: json.dumps(v).encode())))
@settings(max_examples=500, deadline=None)
def test_garbage_never_raises(raw: bytes | str) -> None:
    got, dead = decode_trade(raw, "kafka:trades", 1, "0:0")
    assert len(got) + len(dead) == 1
    if dead:
        assert isinstance(dead[0], DeadLetter) and dead[0].reason


@given(trades, st.sampled_from(["v", "symbol", "trade_id", "ts_us", "price", "qty", "side"]),
       st.one_of(st.none(), st.booleans(), st.text(max_size=5), st.floats(), st.integers(), st.lists(st.none())))
@settings(max_examples=400, deadline=None)
def test_any_field_mangled_is_a_trade_or_a_dead_letter_naming_it(t: Trade, field: str, value: object) -> None:
    d = orjson.loads(encode_trade(t))
    d[field] = value
    try:
        raw = orjson.dumps(d)
    except orjson.JSONEncodeError:
        return  # e.g. an integer beyond 64 bits cannot even be written
    got, dead = decode_trade(raw, "k", 0)
    if got:  # accepted: then the value was a valid one and is what the trade carries
        assert getattr(got[0], field) == value if field != "v" else value == 1
    else:
        assert field in dead[0].reason
