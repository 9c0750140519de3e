"""Kraken's wire formats — the only module that knows them.

* WebSocket v2 messages (:func:`parse_message`): ``trade`` snapshots and updates
  become :class:`~tickcast.schema.Trade`; status, heartbeat, pong, acks, book and
  every other channel are skipped; anything malformed becomes a
  :class:`~tickcast.schema.DeadLetter` with a precise reason. Never raises on input.
* REST ``/0/public/Trades`` pages (:func:`parse_rest_trades`).
* Building v2 trade messages (:func:`trades_to_message`) for replay files.

>>> raw = ('{"channel":"trade","type":"update","data":[{"symbol":"BTC/USD","side":"sell",'
...        '"price":63501.9,"qty":0.00004134,"ord_type":"limit","trade_id":103436768,'
...        '"timestamp":"2026-07-07T23:00:04.590753Z"}]}')
>>> trades, dead = parse_message(raw, "doc", 0)
>>> trades[0].price, trades[0].qty, trades[0].side, dead
(63501.9, 4.134e-05, 'sell', [])
>>> parse_message('{"channel":"heartbeat"}', "doc", 0)
([], [])
>>> parse_message('{"channel":"trade","type":"update","data":[{"symbol":"BTC/USD"}]}', "doc", 0)[1][0].reason
'trade.side must be "buy" or "sell"; got missing'
"""

from __future__ import annotations

import math
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

import orjson

from tickcast.schema import MAX_RAW_CHARS, DeadLetter, Trade, us_to_iso

MAX_NUMBER = 1e15  # larger prices or quantities are absurd: dead letter "huge number"
_DAYS_BEFORE_MONTH = (0, 0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334)
_DIGITS = frozenset("0123456789")


class KrakenError(RuntimeError):
    """Kraken answered with an error (REST ``error`` list, a failed subscribe ack)."""


def _days_from_civil(y: int, m: int, d: int) -> int:
    """Days since 1970-01-01 (proleptic Gregorian), Howard Hinnant's algorithm."""
    y -= m <= 2
    era = (y if y >= 0 else y - 399) // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def _leap(y: int) -> bool:
    return y % 4 == 0 and (y % 100 != 0 or y % 400 == 0)


_last_minute: tuple[str, int] = ("", 0)  # (YYYY-MM-DDTHH:MM, its µs) of the previous call


def parse_rfc3339_us(s: str) -> int:
    """RFC 3339 timestamp -> integer microseconds since the Unix epoch (UTC).

    Fast path for Kraken's own form ``YYYY-MM-DDTHH:MM:SS.ffffffZ``: the minute prefix
    is validated once and cached (consecutive trades share it), so most calls only
    convert seconds and microseconds.

    Fractional digits beyond 6 are truncated. Raises ``ValueError`` naming the problem.

    >>> parse_rfc3339_us("2026-07-07T23:00:04.590753Z")
    1783465204590753
    >>> parse_rfc3339_us("2026-07-08T01:00:04.590753+02:00")
    1783465204590753
    """
    global _last_minute
    if not isinstance(s, str):
        raise ValueError(f"timestamp must be a string; got {type(s).__name__}")
    n = len(s)
    if n == 27 and s[26] == "Z" and s[19] == "." and s[16] == ":":
        prefix, base = _last_minute
        sec, frac = s[17:19], s[20:26]
        if s[:16] == prefix and sec.isascii() and sec.isdigit() and frac.isascii() and frac.isdigit():
            secs = int(sec)
            if secs <= 59:
                return base + secs * 1_000_000 + int(frac)
        value = _parse_rfc3339_slow(s)
        _last_minute = (s[:16], value - value % 60_000_000)
        return value
    return _parse_rfc3339_slow(s)


def _parse_rfc3339_slow(s: str) -> int:
    n = len(s)
    if n < 19 or s[4] != "-" or s[7] != "-" or s[10] not in "Tt " or s[13] != ":" or s[16] != ":":
        raise ValueError(f"timestamp {s[:40]!r} is not RFC 3339 (YYYY-MM-DDTHH:MM:SS[.f]Z)")
    for a, b in ((0, 4), (5, 7), (8, 10), (11, 13), (14, 16), (17, 19)):
        if not _DIGITS.issuperset(s[a:b]):
            raise ValueError(f"timestamp {s[:40]!r} has non-digits where digits belong")
    y, mo, d = int(s[0:4]), int(s[5:7]), int(s[8:10])
    hh, mm, ss = int(s[11:13]), int(s[14:16]), int(s[17:19])
    if not 1 <= mo <= 12:
        raise ValueError(f"timestamp {s!r}: month {mo} out of range")
    dim = 29 if mo == 2 and _leap(y) else (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)[mo - 1]
    if not 1 <= d <= dim:
        raise ValueError(f"timestamp {s!r}: day {d} out of range for {y:04d}-{mo:02d}")
    if hh > 23 or mm > 59 or ss > 59:
        raise ValueError(f"timestamp {s!r}: time of day out of range")
    i = 19
    frac_us = 0
    if i < n and s[i] == ".":
        j = i + 1
        while j < n and s[j] in _DIGITS:
            j += 1
        digits = s[i + 1 : j]
        if not digits:
            raise ValueError(f"timestamp {s!r}: empty fraction")
        frac_us = int((digits + "000000")[:6])
        i = j
    if i >= n:
        raise ValueError(f"timestamp {s!r}: missing time zone (Z or ±HH:MM)")
    z = s[i]
    if z in "Zz" and i + 1 == n:
        off = 0
    elif z in "+-" and n - i == 6 and s[i + 3] == ":" and _DIGITS.issuperset(s[i + 1 : i + 3] + s[i + 4 : i + 6]):
        oh, om = int(s[i + 1 : i + 3]), int(s[i + 4 : i + 6])
        if oh > 23 or om > 59:
            raise ValueError(f"timestamp {s!r}: zone offset out of range")
        off = (oh * 60 + om) * 60 * (1 if z == "+" else -1)
    else:
        raise ValueError(f"timestamp {s!r}: bad time zone {s[i:]!r} (Z or ±HH:MM)")
    days = _days_from_civil(y, mo, d)
    return ((days * 86400 + hh * 3600 + mm * 60 + ss - off) * 1_000_000) + frac_us


def _dead(raw: Any, source: str, received_at_us: int, reason: str, position: str) -> DeadLetter:
    if isinstance(raw, bytes | bytearray | memoryview):
        text = bytes(raw).decode("utf-8", errors="replace")
    elif isinstance(raw, str):
        text = raw
    else:
        text = orjson.dumps(raw, default=str).decode()
    return DeadLetter(received_at_us, source, text[:MAX_RAW_CHARS], reason, position)


def _describe(v: Any) -> str:
    if v is _MISSING:
        return "missing"
    if isinstance(v, str):
        return f"str {v[:40]!r}"
    return f"{type(v).__name__} {str(v)[:40]}" if not isinstance(v, dict | list) else type(v).__name__


_MISSING = object()


def _positive_number(e: dict[str, Any], field: str) -> float | str:
    v = e.get(field, _MISSING)
    if type(v) is float or (type(v) is int):
        f = float(v)
        if not math.isfinite(f) or f <= 0:
            return f"trade.{field} must be a number > 0; got {v}"
        if f > MAX_NUMBER:
            return f"trade.{field} is a huge number ({v}); more than {MAX_NUMBER:g} is not a real {field}"
        return f
    return f"trade.{field} must be a number > 0; got {_describe(v)}"


def _trade(e: Any) -> Trade | str:
    """One element of a trade message's ``data`` -> Trade, or the reason it is not one.

    The fast path checks everything in one expression; only a failure pays for the
    field-by-field diagnosis."""
    if type(e) is dict:
        try:
            sym, side, price, qty = e["symbol"], e["side"], e["price"], e["qty"]
            tid, ts = e["trade_id"], e["timestamp"]
        except KeyError:
            return _diagnose(e)
        ot = e.get("ord_type", "")
        tp, tq = type(price), type(qty)
        if (type(sym) is str and sym and (side == "buy" or side == "sell")
                and (tp is float or tp is int) and (tq is float or tq is int)
                and 0 < price <= MAX_NUMBER and 0 < qty <= MAX_NUMBER
                and type(tid) is int and tid >= 0 and type(ts) is str and type(ot) is str):
            try:
                return Trade(sym, tid, parse_rfc3339_us(ts), float(price), float(qty), side, ot)
            except ValueError as err:
                return f"trade.timestamp: {err}"
    return _diagnose(e)


def _diagnose(e: Any) -> Trade | str:
    """The precise reason an element is not a trade (slow path)."""
    if type(e) is not dict:
        return f"trade entry must be an object; got {_describe(e)}"
    sym = e.get("symbol", _MISSING)
    if type(sym) is not str or not sym:
        return f"trade.symbol must be a non-empty string; got {_describe(sym)}"
    side = e.get("side", _MISSING)
    if side != "buy" and side != "sell":
        return f'trade.side must be "buy" or "sell"; got {_describe(side)}'
    price = _positive_number(e, "price")
    if type(price) is str:
        return price
    qty = _positive_number(e, "qty")
    if type(qty) is str:
        return qty
    tid = e.get("trade_id", _MISSING)
    if type(tid) is not int or tid < 0:
        return f"trade.trade_id must be a non-negative integer; got {_describe(tid)}"
    ts = e.get("timestamp", _MISSING)
    if type(ts) is not str:
        return f"trade.timestamp must be an RFC 3339 string; got {_describe(ts)}"
    try:
        ts_us = parse_rfc3339_us(ts)
    except ValueError as err:
        return f"trade.timestamp: {err}"
    ot = e.get("ord_type", "")
    if type(ot) is not str:
        return f"trade.ord_type must be a string; got {_describe(ot)}"
    return Trade(sym, tid, ts_us, price, qty, side, ot)  # type: ignore[arg-type]


def parse_message(
    raw: str | bytes, source: str, received_at_us: int, position: str = ""
) -> tuple[list[Trade], list[DeadLetter]]:
    """One raw Kraken WebSocket v2 message -> (trades, dead letters). Never raises."""
    try:
        msg = orjson.loads(raw)
    except orjson.JSONDecodeError as err:
        return [], [_dead(raw, source, received_at_us, f"not valid JSON: {err}", position)]
    except Exception as err:  # noqa: BLE001 - e.g. a memoryview of garbage; never crash on input
        return [], [_dead(raw, source, received_at_us, f"unreadable message: {err}", position)]
    if type(msg) is not dict:
        return [], [_dead(raw, source, received_at_us,
                          f"message must be a JSON object; got {type(msg).__name__}", position)]
    if msg.get("channel") != "trade" or "method" in msg:
        return [], []  # status, heartbeat, pong, acks, book, ticker, ...: not trades
    kind = msg.get("type")
    if kind != "update" and kind != "snapshot":
        return [], [_dead(raw, source, received_at_us,
                          f'trade message type must be "update" or "snapshot"; got {_describe(kind if "type" in msg else _MISSING)}',
                          position)]
    data = msg.get("data", _MISSING)
    if type(data) is not list:
        return [], [_dead(raw, source, received_at_us,
                          f"trade message data must be a list; got {_describe(data)}", position)]
    trades: list[Trade] = []
    dead: list[DeadLetter] = []
    for i, e in enumerate(data):
        t = _trade(e)
        if type(t) is Trade:
            trades.append(t)
        else:
            pos = f"{position}#{i}" if len(data) > 1 else position
            dead.append(_dead(e, source, received_at_us, t, pos))  # type: ignore[arg-type]
    return trades, dead


def is_error_ack(msg: dict[str, Any]) -> str | None:
    """The error text of a failed method ack (e.g. subscribe to an unknown symbol)."""
    if "method" in msg and msg.get("success") is False:
        return str(msg.get("error") or "unknown error")
    return None


def trades_to_message(trades: list[Trade], type_: str = "update") -> dict[str, Any]:
    """A Kraken v2 trade message carrying ``trades`` (inverse of :func:`parse_message`)."""
    return {
        "channel": "trade",
        "type": type_,
        "data": [
            {"symbol": t.symbol, "side": t.side, "price": t.price, "qty": t.qty,
             "ord_type": t.ord_type, "trade_id": t.trade_id, "timestamp": us_to_iso(t.ts_us)}
            for t in trades
        ],
    }


def _seconds_to_us(v: Any) -> int:
    """REST time (float seconds, up to 7 decimals) -> µs, rounded half-up exactly."""
    d = Decimal(repr(v)) if isinstance(v, float) else Decimal(str(v))
    return int((d * 1_000_000).to_integral_value(rounding=ROUND_HALF_UP))


def parse_rest_trades(payload: dict[str, Any], symbol: str) -> tuple[list[Trade], int | None]:
    """A ``GET /0/public/Trades`` response -> (trades for ``symbol``, ``last`` cursor in ns).

    Rows are ``[price, volume, time, "b"|"s", "m"|"l", misc, trade_id]``; the side
    letter is the taker's. Raises :class:`KrakenError` for an error response or a
    malformed page."""
    if not isinstance(payload, dict):
        raise KrakenError(f"REST Trades response must be an object; got {type(payload).__name__}")
    errors = payload.get("error") or []
    if errors:
        raise KrakenError("Kraken REST error: " + "; ".join(map(str, errors)))
    result = payload.get("result")
    if not isinstance(result, dict):
        raise KrakenError("REST Trades response has no result object")
    last = result.get("last")
    pairs = [k for k in result if k != "last"]
    if len(pairs) != 1:
        raise KrakenError(f"REST Trades result must hold one pair; got {pairs}")
    rows = result[pairs[0]]
    if not isinstance(rows, list):
        raise KrakenError("REST Trades rows must be a list")
    out: list[Trade] = []
    for r in rows:
        try:
            price, qty, tm, side, ot, _misc, tid = r[:7]
            p, q = float(price), float(qty)
            if not (0 < p <= MAX_NUMBER and 0 < q <= MAX_NUMBER) or side not in ("b", "s"):
                raise ValueError
            out.append(Trade(symbol, int(tid), _seconds_to_us(tm), p, q, "buy" if side == "b" else "sell",
                             {"m": "market", "l": "limit"}.get(ot, "")))
        except (ValueError, TypeError, IndexError, InvalidOperation):
            raise KrakenError(f"malformed REST trade row {str(r)[:200]}") from None
    try:
        cursor = int(last) if last is not None else None
    except (TypeError, ValueError):
        raise KrakenError(f"REST Trades 'last' cursor is not an integer: {last!r}") from None
    return out, cursor
