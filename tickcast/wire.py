"""tickcast's normalised trade, as it travels through Kafka (the ``trades`` topic).

One Kafka record per trade. The record's **key** is the symbol (UTF-8), so every
trade of a symbol lands in one partition, in order; the record's **timestamp** is
the trade time in milliseconds; the **value** is one JSON object:

=========== ======== ==============================================================
field       type     meaning
=========== ======== ==============================================================
``v``       int      schema version, ``1``; readers reject versions they do not know
``symbol``  string   Kraken v2 symbol, ``"BTC/USD"``
``trade_id`` int     Kraken's per-symbol trade sequence number (>= 0)
``ts``      string   trade time, RFC 3339 with microseconds and ``Z`` (for people and
                     other tools; ``ts_us`` is authoritative)
``ts_us``   int      trade time, microseconds since the Unix epoch, UTC
``price``   number   quote currency per base unit, > 0
``qty``     number   base units, > 0
``side``    string   the **taker's** side, ``"buy"`` or ``"sell"``
``ord_type`` string  the taker's order type, ``"market"``, ``"limit"`` or ``""`` (unknown)
=========== ======== ==============================================================

Example::

    {"v":1,"symbol":"BTC/USD","trade_id":103436768,"ts":"2026-07-07T23:00:04.590753Z",
     "ts_us":1783465204590753,"price":63501.9,"qty":4.134e-05,"side":"sell","ord_type":"limit"}

Numbers are written as the shortest decimal that reads back as the same double, so
a trade survives the round trip bit for bit. Unknown extra fields are ignored (new
optional fields do not need a new version). If ``ts_us`` is absent, ``ts`` is parsed.

:func:`decode_trade` has the signature and behaviour of
:func:`tickcast.kraken.parse_message`: it never raises; bad input becomes one
:class:`~tickcast.schema.DeadLetter` whose reason says what was expected and what
arrived — the reasons of :func:`tickcast.schema.validate_trade`, the same as the
Kraken parser's.

>>> t = Trade("BTC/USD", 7, 1_783_465_204_590_753, 63501.9, 4.134e-05, "sell", "limit")
>>> raw = encode_trade(t)
>>> raw[:60]
b'{"v":1,"symbol":"BTC/USD","trade_id":7,"ts":"2026-07-07T23:0'
>>> decode_trade(raw, "kafka:trades", 0) == ([t], [])
True
>>> decode_trade(b'{"v":1,"symbol":"BTC/USD"}', "kafka:trades", 0, "0:12")[1][0].reason
'trade.side must be "buy" or "sell"; got missing'
"""

from __future__ import annotations

from typing import Any, Final

import orjson

from tickcast.kraken import parse_rfc3339_us
from tickcast.schema import (
    MAX_NUMBER,
    MAX_RAW_CHARS,
    MISSING,
    DeadLetter,
    Trade,
    describe,
    us_to_iso,
    validate_trade,
)

__all__ = ["WIRE_VERSION", "decode_trade", "encode_trade"]

WIRE_VERSION: Final = 1
_dumps = orjson.dumps
_loads = orjson.loads


def encode_trade(t: Trade) -> bytes:
    """A :class:`~tickcast.schema.Trade` -> the JSON value of its Kafka record (v1)."""
    return _dumps({
        "v": WIRE_VERSION, "symbol": t.symbol, "trade_id": t.trade_id, "ts": us_to_iso(t.ts_us),
        "ts_us": t.ts_us, "price": t.price, "qty": t.qty, "side": t.side, "ord_type": t.ord_type,
    })


def decode_trade(
    raw: bytes | str, source: str, received_at_us: int, position: str = ""
) -> tuple[list[Trade], list[DeadLetter]]:
    """One Kafka record value -> ``([trade], [])`` or ``([], [dead letter])``. Never raises."""
    try:
        m = _loads(raw)
    except orjson.JSONDecodeError as err:
        return [], [_dead(raw, source, received_at_us, f"not valid JSON: {err}", position)]
    except Exception as err:  # noqa: BLE001 - e.g. a memoryview or None; never crash on input
        return [], [_dead(raw, source, received_at_us, f"unreadable record: {err}", position)]
    if type(m) is dict:
        # fast path: everything checked in one expression; failures pay for the diagnosis
        try:
            v, sym, tid, ts_us = m["v"], m["symbol"], m["trade_id"], m["ts_us"]
            price, qty, side = m["price"], m["qty"], m["side"]
        except KeyError:
            pass
        else:
            ot = m.get("ord_type", "")
            tp, tq = type(price), type(qty)
            if (v == 1 and type(v) is int and type(sym) is str and sym and type(tid) is int and tid >= 0
                    and type(ts_us) is int and (side == "buy" or side == "sell")
                    and (tp is float or tp is int) and (tq is float or tq is int)
                    and 0 < price <= MAX_NUMBER and 0 < qty <= MAX_NUMBER and type(ot) is str):
                return [Trade(sym, tid, ts_us, float(price), float(qty), side, ot)], []
    t = _diagnose(m)
    if type(t) is Trade:
        return [t], []
    return [], [_dead(raw, source, received_at_us, t, position)]  # type: ignore[arg-type]


def _diagnose(m: Any) -> Trade | str:
    """The trade in ``m`` (slow path: ``ts`` instead of ``ts_us``), or why it is not one
    (:func:`tickcast.schema.validate_trade`, the check the Kraken parser uses too)."""
    if type(m) is not dict:
        return f"trade record must be a JSON object; got {describe(m)}"
    v = m.get("v", MISSING)
    if type(v) is not int or v != WIRE_VERSION:
        return (f"trade record version v must be {WIRE_VERSION}; got {describe(v)}"
                + (" (written by a newer tickcast?)" if type(v) is int and v > WIRE_VERSION else ""))
    return validate_trade(m, _record_time)


def _record_time(m: Any) -> int | str:
    """``ts_us``, else ``ts`` parsed, or why neither is a time."""
    ts_us = m.get("ts_us", MISSING)
    if ts_us is MISSING:
        ts = m.get("ts", MISSING)
        if type(ts) is not str:
            return f"trade.ts_us must be an integer (or trade.ts an RFC 3339 string); got {describe(ts)}"
        try:
            return parse_rfc3339_us(ts)
        except ValueError as err:
            return f"trade.ts: {err}"
    if type(ts_us) is not int:
        return f"trade.ts_us must be an integer of microseconds since the epoch; got {describe(ts_us)}"
    return ts_us


def _dead(raw: Any, source: str, received_at_us: int, reason: str, position: str) -> DeadLetter:
    if isinstance(raw, bytes | bytearray | memoryview):
        text = bytes(raw).decode("utf-8", errors="replace")
    elif isinstance(raw, str):
        text = raw
    else:
        text = repr(raw)
    return DeadLetter(received_at_us, source, text[:MAX_RAW_CHARS], reason, position)
