"""Kraken's wire formats: the only module that knows them.

* WebSocket v2 messages, one raw message (a replay-file line) at a time
  (:func:`parse_message`): ``trade`` snapshots and updates become
  :class:`~tickcast.schema.Trade`; ``status``, ``heartbeat``, ``pong``, method acks,
  ``book``, ``ticker`` and every other channel are skipped; anything malformed becomes
  a :class:`~tickcast.schema.DeadLetter` with a precise reason. It never raises on input.
* RFC 3339 timestamps to integer microseconds (:func:`parse_rfc3339_us`) and back
  (:func:`format_rfc3339_us`, Kraken's own form).
* Building v2 trade messages (:func:`trades_to_message`) for replay files and the
  simulator, and the subscribe request (:func:`subscribe_message`); failed acks
  (:func:`is_error_ack`).
* REST ``GET /0/public/Trades`` pages (:func:`parse_rest_trades`), used to fill gaps.

>>> line = ('{"channel":"trade","type":"update","data":[{"symbol":"BTC/USD","side":"sell",'
...         '"price":63501.9,"qty":0.00004134,"ord_type":"limit","trade_id":103436768,'
...         '"timestamp":"2026-07-07T23:00:04.590753Z"}]}')
>>> trades, dead = parse_message(line, "doc", 0)
>>> trades
[Trade(symbol='BTC/USD', trade_id=103436768, ts_us=1783465204590753, price=63501.9, qty=4.134e-05, side='sell', ord_type='limit')]
>>> format_rfc3339_us(trades[0].ts_us)
'2026-07-07T23:00:04.590753Z'
>>> parse_message('{"channel":"heartbeat"}', "doc", 0)
([], [])
>>> bad = '{"channel":"trade","type":"update","data":[{"symbol":"BTC/USD","side":"buy","price":-1}]}'
>>> parse_message(bad, "doc", 0, "line 7")[1][0].reason
'trade.price must be a number > 0; got -1'
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import date
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any, Final

import orjson

from tickcast.schema import MAX_NUMBER, MAX_RAW_CHARS, MISSING, DeadLetter, Trade, validate_trade
from tickcast.schema import describe as _describe
from tickcast.schema import json_type as _json_type

__all__ = [
    "MAX_NUMBER",
    "KrakenError",
    "format_rfc3339_us",
    "is_error_ack",
    "parse_message",
    "parse_rest_trades",
    "parse_rfc3339_us",
    "subscribe_message",
    "trades_to_message",
]



class KrakenError(Exception):
    """Kraken answered with an error (a REST ``error`` list) or with a malformed page."""


# -- RFC 3339 -----------------------------------------------------------------------------------

_US: Final = 1_000_000
_EPOCH_ORDINAL: Final = 719_163  # date(1970, 1, 1).toordinal()
_DAYS_IN_MONTH: Final = (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
_CACHE_MAX: Final = 1 << 14  # entries per cache below (a few MB at most); cleared when full
# Kraken's form "YYYY-MM-DDTHH:MM:SS.ffffffZ" has a fast path: the validated prefix up to
# the minute ("YYYY-MM-DDTHH:MM:", filled in by the full parser) maps to that minute's
# µs, and a table maps "SS." to the second's µs, so consecutive trades only slice, look
# up and convert the 6 fractional digits.
_MINUTE_US: dict[str, int] = {}
_SECOND_US: Final = {f"{i:02d}.": i * _US for i in range(60)}


def parse_rfc3339_us(s: str) -> int:
    """RFC 3339 timestamp -> integer microseconds since the Unix epoch (UTC).

    ``YYYY-MM-DD(T|t| )HH:MM:SS[.f](Z|z|±HH:MM)`` with 1-9 fractional digits
    (truncated to microseconds, not rounded). Anything else raises ``ValueError``
    saying what is wrong: bad field, day out of range for its month (Feb 29 in a
    common year), hour 24, leap second, missing or malformed zone, non-ASCII, ...

    >>> parse_rfc3339_us("2026-07-07T23:00:04.590753Z")
    1783465204590753
    >>> parse_rfc3339_us("2026-07-08 01:00:04.5907539+02:00")
    1783465204590753
    >>> parse_rfc3339_us("2025-02-29T00:00:00Z")
    Traceback (most recent call last):
    ...
    ValueError: timestamp '2025-02-29T00:00:00Z' is not RFC 3339: day 29 is out of range for 2025-02 (28 days)
    """
    try:
        us = _MINUTE_US[s[:17]] + _SECOND_US[s[17:20]]
    except (KeyError, TypeError):  # a new minute, another form, or not a string at all
        return _parse_rfc3339_full(s)
    frac = s[20:26]
    if frac.isdigit() and s[26:] == "Z" and s.isascii():
        return us + int(frac)
    return _parse_rfc3339_full(s)


_RFC3339: Final = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt ]([0-9]{2}):([0-9]{2}):([0-9]{2})"
    r"(?:\.([0-9]{1,9}))?([Zz]|[+-][0-9]{2}:[0-9]{2})"
).fullmatch


def _parse_rfc3339_full(s: object) -> int:
    """The general parser; fills the fast path's caches for Kraken's form."""
    if not isinstance(s, str):
        raise _shape_error(s)
    m = _RFC3339(s)
    if m is None:
        raise _shape_error(s)
    ys, mos, ds, hs, mis, secs, frac, zone = m.groups()
    y, mo, d, hh, mm, ss = int(ys), int(mos), int(ds), int(hs), int(mis), int(secs)
    if not (y and 1 <= mo <= 12 and 1 <= d <= 28 and hh <= 23 and mm <= 59 and ss <= 59):
        dim = _days_in_month(y, mo) if 1 <= mo <= 12 else 31
        if not (y and 1 <= mo <= 12 and 1 <= d <= dim and hh <= 23 and mm <= 59 and ss <= 59):
            raise _range_error(s, y, mo, d, dim, hh, mm, ss)
    frac_us = int(frac[:6].ljust(6, "0")) if frac else 0
    if zone == "Z" or zone == "z":
        offset_s = 0
    else:
        oh, om = int(zone[1:3]), int(zone[4:6])
        if oh > 23 or om > 59:
            raise _bad(s, f"zone offset {zone!r} is out of range (hours 00-23, minutes 00-59)")
        offset_s = (oh * 3600 + om * 60) * (1 if zone[0] == "+" else -1)
    local_s = (date(y, mo, d).toordinal() - _EPOCH_ORDINAL) * 86_400 + hh * 3600 + mm * 60
    if offset_s == 0 and len(s) == 27 and s[26] == "Z":  # Kraken's form: feed the fast path
        if len(_MINUTE_US) >= _CACHE_MAX:
            _MINUTE_US.clear()
        _MINUTE_US[s[:17]] = local_s * _US
    return (local_s + ss - offset_s) * _US + frac_us


def _days_in_month(y: int, mo: int) -> int:
    if mo == 2 and y % 4 == 0 and (y % 100 != 0 or y % 400 == 0):
        return 29
    return _DAYS_IN_MONTH[mo - 1]


def _bad(s: str, what: str) -> ValueError:
    shown = repr(s) if len(s) <= 64 else repr(s[:64]) + "..."
    return ValueError(f"timestamp {shown} is not RFC 3339: {what}")


def _range_error(s: str, y: int, mo: int, d: int, dim: int, hh: int, mm: int, ss: int) -> ValueError:
    if y == 0:
        return _bad(s, "year 0000 is out of range 0001-9999")
    if not 1 <= mo <= 12:
        return _bad(s, f"month {mo:02d} is out of range 01-12")
    if not 1 <= d <= dim:
        return _bad(s, f"day {d:02d} is out of range for {y:04d}-{mo:02d} ({dim} days)")
    if hh > 23:
        return _bad(s, f"hour {hh:02d} is out of range 00-23")
    if mm > 59:
        return _bad(s, f"minute {mm:02d} is out of range 00-59")
    return _bad(s, f"second {ss:02d} is out of range 00-59 (leap seconds are not supported)")


def _shape_error(s: object) -> ValueError:
    """Why ``s`` does not even have RFC 3339's shape, as precisely as can be said."""
    if not isinstance(s, str):
        return ValueError(f"timestamp must be an RFC 3339 string; got {_describe(s)}")
    n = len(s)
    if not s.isascii():
        return _bad(s, "it holds non-ASCII characters")
    if n < 19:
        return _bad(s, f"too short ({n} characters); expected YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)")
    for pos, sep in ((4, "-"), (7, "-"), (13, ":"), (16, ":")):
        if s[pos] != sep:
            return _bad(s, f"expected {sep!r} at position {pos}; got {s[pos]!r} (YYYY-MM-DDTHH:MM:SS)")
    if s[10] not in "Tt ":
        return _bad(s, f"expected 'T', 't' or ' ' between date and time at position 10; got {s[10]!r}")
    for name, a, b in (("year", 0, 4), ("month", 5, 7), ("day", 8, 10), ("hour", 11, 13),
                       ("minute", 14, 16), ("second", 17, 19)):
        if not s[a:b].isdigit():
            return _bad(s, f"{name} {s[a:b]!r} is not {b - a} digits")
    i = 19
    if i < n and s[i] == ".":
        j = i + 1
        while j < n and "0" <= s[j] <= "9":
            j += 1
        if j == i + 1:
            return _bad(s, "'.' must be followed by 1-9 fractional digits")
        if j - i - 1 > 9:
            return _bad(s, f"{j - i - 1} fractional digits; at most 9 are accepted")
        i = j
    zone = s[i:]
    if not zone:
        return _bad(s, "missing time zone (Z or ±HH:MM)")
    return _bad(s, f"bad time zone {zone[:16]!r}; expected Z or ±HH:MM")


_MINUTE_TEXT: dict[int, str] = {}  # minute since the epoch -> "YYYY-MM-DDTHH:MM:"


def format_rfc3339_us(us: int) -> str:
    """Integer microseconds since the epoch -> Kraken's timestamp form (UTC, 6 digits, ``Z``).

    >>> format_rfc3339_us(1_783_465_204_590_753)
    '2026-07-07T23:00:04.590753Z'
    >>> format_rfc3339_us(-1)
    '1969-12-31T23:59:59.999999Z'
    """
    s, frac = divmod(us, _US)
    m, sec = divmod(s, 60)
    head = _MINUTE_TEXT.get(m)
    if head is None:
        days, minute_of_day = divmod(m, 1440)
        dt = date.fromordinal(days + _EPOCH_ORDINAL)  # ValueError outside years 1-9999
        head = f"{dt.year:04d}-{dt.month:02d}-{dt.day:02d}T{minute_of_day // 60:02d}:{minute_of_day % 60:02d}:"
        if len(_MINUTE_TEXT) >= _CACHE_MAX:
            _MINUTE_TEXT.clear()
        _MINUTE_TEXT[m] = head
    return f"{head}{sec:02d}.{frac:06d}Z"


# -- WebSocket v2 -------------------------------------------------------------------------------

_MISSING: Final = MISSING  # a field that is absent (distinct from JSON null)
_loads = orjson.loads
_new_trade = tuple.__new__  # Trade(...) without the NamedTuple's Python-level __new__


def parse_message(
    raw: str | bytes | bytearray | memoryview, source: str, received_at_us: int, position: str = ""
) -> tuple[list[Trade], list[DeadLetter]]:
    """One raw Kraken WebSocket v2 message -> ``(trades, dead_letters)``. Never raises.

    ``source``, ``received_at_us`` and ``position`` only label dead letters. When the
    trade message holds more than one element, an element's dead letter gets the
    position ``f"{position}#{index}"`` (its index in ``data``), so several dead letters
    of one message stay distinct. The good elements of a message become trades even
    when others do not.
    """
    try:
        msg = _loads(raw)
    except Exception as err:  # noqa: BLE001 - JSONDecodeError, or raw of a wrong type: never crash
        return [], [_dead_line(raw, _unreadable(raw, err), source, received_at_us, position)]
    if type(msg) is not dict:
        return [], [_dead_line(raw, f"message must be a JSON object; got {_json_type(msg)}",
                               source, received_at_us, position)]
    if msg.get("channel") != "trade" or "method" in msg:
        return [], []  # status, heartbeat, pong, method acks, book, ticker, ...: not trades
    data = msg.get("data", _MISSING)
    kind = msg.get("type", _MISSING)
    if kind != "update" and kind != "snapshot":
        return [], [_dead_line(raw, f'trade message "type" must be "update" or "snapshot"; got {_describe(kind)}',
                               source, received_at_us, position)]
    if type(data) is not list:
        return [], [_dead_line(raw, f'trade message "data" must be a list; got {_describe(data)}',
                               source, received_at_us, position)]
    # Fast path: Kraken's own elements. The first element it cannot take as is (a bad
    # one, a missing ord_type, ...) sends the whole message to the careful path, which
    # redoes it element by element with the index and the precise reason.
    trades: list[Trade] = []
    append = trades.append
    last_ts: object = _MISSING
    ts_us = 0
    for e in data:
        try:
            sym = e["symbol"]
            side = e["side"]
            price = e["price"]
            qty = e["qty"]
            tid = e["trade_id"]
            ts = e["timestamp"]
            ot = e["ord_type"]
        except (KeyError, TypeError, IndexError):
            break
        if type(price) is not float:  # Kraken may write a round price as an integer
            if type(price) is not int:  # (bool is not int here)
                break
            price = float(price)
        if type(qty) is not float:
            if type(qty) is not int:
                break
            qty = float(qty)
        if not (0.0 < price <= MAX_NUMBER and 0.0 < qty <= MAX_NUMBER and type(tid) is int and tid >= 0
                and type(sym) is str and sym and (side == "buy" or side == "sell")
                and type(ot) is str):
            break
        if ts != last_ts:  # one message often holds several fills of one order: same time
            try:
                ts_us = parse_rfc3339_us(ts)
            except ValueError:
                break
            last_ts = ts
        append(_new_trade(Trade, (sym, tid, ts_us, price, qty, side, ot)))
    else:
        return trades, []
    return _parse_elements(data, source, received_at_us, position)


def _parse_elements(
    data: list[Any], source: str, received_at_us: int, position: str
) -> tuple[list[Trade], list[DeadLetter]]:
    """The careful path of :func:`parse_message`: element by element, with reasons."""
    trades: list[Trade] = []
    dead: list[DeadLetter] = []
    several = len(data) > 1
    for i, e in enumerate(data):
        t = _element(e)
        if isinstance(t, Trade):
            trades.append(t)
        else:
            raw = orjson.dumps(e).decode()  # from orjson.loads: always serialisable
            dead.append(DeadLetter(received_at_us, source, _clean(raw), t,
                                   f"{position}#{i}" if several else position))
    return trades, dead


def _element(e: Any) -> Trade | str:
    """One element of a trade message's ``data`` -> a Trade, or why it is not one
    (:func:`tickcast.schema.validate_trade`; the time is ``timestamp``, RFC 3339)."""
    if type(e) is not dict:
        return f"trade element must be an object; got {_describe(e)}"
    return validate_trade(e, _element_time)


def _element_time(e: Any) -> int | str:
    ts = e.get("timestamp", MISSING)
    if type(ts) is not str:
        return f"trade.timestamp must be an RFC 3339 string; got {_describe(ts)}"
    try:
        return parse_rfc3339_us(ts)
    except ValueError as err:
        return f"trade.{err}"


def _unreadable(raw: object, err: Exception) -> str:
    """Why ``orjson.loads(raw)`` failed, in words."""
    if isinstance(raw, bytes | bytearray | memoryview):
        try:
            bytes(raw).decode("utf-8")
        except UnicodeDecodeError as u:
            return f"not valid UTF-8: byte {u.object[u.start]:#04x} at offset {u.start} ({u.reason})"
    elif isinstance(raw, str):
        try:
            raw.encode("utf-8")
        except UnicodeEncodeError as u:
            return f"not valid UTF-8: lone surrogate {raw[u.start]!r} at character {u.start}"
    else:
        return f"message must be str or bytes; got {type(raw).__name__}"
    text = str(err)
    if "infinity when parsed as double" in text:
        return f"number out of range (beyond ±1.8e308) in the JSON: {text}"
    return f"not valid JSON: {text}"


def _clean(text: str) -> str:
    """``text`` truncated to MAX_RAW_CHARS, lone surrogates replaced (storable as UTF-8)."""
    text = text[:MAX_RAW_CHARS]
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "replace").decode("utf-8")
    return text


def _dead_line(raw: object, reason: str, source: str, received_at_us: int, position: str) -> DeadLetter:
    """A dead letter holding the whole raw message (decoded as UTF-8 with replacement)."""
    if isinstance(raw, bytes | bytearray | memoryview):
        text = bytes(raw[: 4 * MAX_RAW_CHARS]).decode("utf-8", errors="replace")
    elif isinstance(raw, str):
        text = raw
    else:
        text = repr(raw)
    return DeadLetter(received_at_us, source, _clean(text), reason, position)


def is_error_ack(msg: dict[str, Any]) -> str | None:
    """The error text of a failed request ack (``"success": false``), else None.

    >>> is_error_ack({"method": "subscribe", "success": False, "symbol": "XBT/USD",
    ...               "error": "Currency pair not supported XBT/USD"})
    'Currency pair not supported XBT/USD'
    >>> is_error_ack({"method": "subscribe", "success": True, "result": {"channel": "trade"}}) is None
    True
    """
    if type(msg) is not dict or msg.get("success") is not False:
        return None
    err = msg.get("error", _MISSING)
    if isinstance(err, str) and err:
        return err
    return f"{msg.get('method', 'request')} failed without an error text: {_describe(err)}"


def subscribe_message(symbols: Iterable[str], *, snapshot: bool = True,
                      req_id: int | None = None) -> dict[str, Any]:
    """The v2 request subscribing to the trade channel of ``symbols`` (v2 names, "BTC/USD").

    >>> subscribe_message(["BTC/USD"], req_id=1)
    {'method': 'subscribe', 'params': {'channel': 'trade', 'symbol': ['BTC/USD'], 'snapshot': True}, 'req_id': 1}
    """
    msg: dict[str, Any] = {"method": "subscribe",
                           "params": {"channel": "trade", "symbol": list(symbols), "snapshot": snapshot}}
    if req_id is not None:
        msg["req_id"] = req_id
    return msg


def trades_to_message(trades: list[Trade], type_: str = "update") -> dict[str, Any]:
    """A v2 trade message carrying ``trades``; the inverse of :func:`parse_message`.

    Keys in Kraken's order, timestamps in Kraken's form; ``orjson.dumps`` of it is a
    replay-file line.

    >>> m = trades_to_message([Trade("ETH/USD", 5, 1_783_465_204_585_581, 1774.14, 0.5, "buy", "limit")])
    >>> orjson.dumps(m).decode()
    '{"channel":"trade","type":"update","data":[{"symbol":"ETH/USD","side":"buy","price":1774.14,"qty":0.5,"ord_type":"limit","trade_id":5,"timestamp":"2026-07-07T23:00:04.585581Z"}]}'
    """
    fmt = format_rfc3339_us
    return {"channel": "trade", "type": type_, "data": [
        {"symbol": t[0], "side": t[5], "price": t[3], "qty": t[4], "ord_type": t[6],
         "trade_id": t[1], "timestamp": fmt(t[2])}
        for t in trades
    ]}


# -- REST -----------------------------------------------------------------------------------------

_REST_SIDE: Final = {"b": "buy", "s": "sell"}
_REST_ORD_TYPE: Final = {"m": "market", "l": "limit"}


def parse_rest_trades(payload: dict[str, Any], symbol: str) -> tuple[list[Trade], int | None]:
    """A ``GET /0/public/Trades`` response -> (trades labelled ``symbol``, ``last`` cursor).

    ``payload`` is the decoded JSON: ``{"error": [], "result": {"<PAIR>": [[price,
    volume, time, "b"|"s", "m"|"l", misc, trade_id], ...], "last": "<ns>"}}``. Prices
    and volumes are decimal strings; ``time`` is float seconds, converted to µs through
    its shortest decimal repr (exact for Kraken's 4-7 decimals), rounded half up. The
    side letter is the taker's. ``last`` (nanoseconds, the next page's ``since``) is
    returned as an int, None when absent. A non-empty ``error`` list, or a page that is
    not shaped like this, raises :class:`KrakenError`.

    >>> page = {"error": [], "result": {"XXBTZUSD": [["63501.90000", "0.00004134",
    ...         1783465204.5907535, "s", "l", "", 103436768]], "last": "1783465204590753500"}}
    >>> parse_rest_trades(page, "BTC/USD")
    ([Trade(symbol='BTC/USD', trade_id=103436768, ts_us=1783465204590754, price=63501.9, qty=4.134e-05, side='sell', ord_type='limit')], 1783465204590753500)
    """
    if not isinstance(payload, dict):
        raise KrakenError(f"Trades response must be a JSON object; got {_json_type(payload)}")
    errors = payload.get("error")
    if errors:
        text = "; ".join(map(str, errors)) if isinstance(errors, list) else str(errors)
        raise KrakenError(f"Kraken REST error: {text}")
    result = payload.get("result", _MISSING)
    if not isinstance(result, dict):
        raise KrakenError(f'Trades response "result" must be an object; got {_describe(result)}')
    pairs = [k for k in result if k != "last"]
    if len(pairs) != 1:
        raise KrakenError(f'Trades "result" must hold exactly one pair besides "last"; got {pairs}')
    rows = result[pairs[0]]
    if not isinstance(rows, list):
        raise KrakenError(f"Trades rows of {pairs[0]} must be a list; got {_describe(rows)}")
    trades = [_rest_row(r, i, symbol) for i, r in enumerate(rows)]
    last = result.get("last")
    if last is None:
        return trades, None
    if type(last) is int and last >= 0:
        return trades, last
    if type(last) is str and last.isascii() and last.isdigit():
        return trades, int(last)
    raise KrakenError(f'Trades "last" cursor must be a non-negative integer (nanoseconds); got {_describe(last)}')


def _rest_row(r: Any, i: int, symbol: str) -> Trade:
    if not isinstance(r, list) or len(r) < 7:
        raise KrakenError(f"Trades row {i} must be [price, volume, time, side, ord_type, misc, trade_id]; "
                          f"got {_describe(r)}")
    price, qty = _rest_number(r[0], i, "price"), _rest_number(r[1], i, "volume")
    side = _REST_SIDE.get(r[3]) if type(r[3]) is str else None
    if side is None:
        raise KrakenError(f'Trades row {i}: side must be "b" or "s"; got {_describe(r[3])}')
    ord_type = _REST_ORD_TYPE.get(r[4], "") if type(r[4]) is str else ""
    tid = r[6]
    if type(tid) is not int or tid < 0:
        raise KrakenError(f"Trades row {i}: trade_id must be a non-negative integer; got {_describe(tid)}")
    return Trade(symbol, tid, _rest_time_us(r[2], i), price, qty, side, ord_type)


def _rest_number(v: Any, i: int, name: str) -> float:
    try:
        f = float(v) if type(v) is str or type(v) is float or type(v) is int else None
    except ValueError:
        f = None
    if f is None or not 0.0 < f <= MAX_NUMBER:
        raise KrakenError(f"Trades row {i}: {name} must be a decimal string > 0 and <= {MAX_NUMBER:.0e}; "
                          f"got {_describe(v)}")
    return f


def _rest_time_us(v: Any, i: int) -> int:
    """Seconds (float, int, decimal string or Decimal) -> µs, rounded half up, exactly."""
    try:
        if type(v) is float:
            d = Decimal(repr(v))  # the shortest repr is the literal Kraken sent (<= 17 digits)
        elif type(v) is int or type(v) is str or type(v) is Decimal:
            d = Decimal(v)
        else:
            raise InvalidOperation
        if not d.is_finite() or d < 0:
            raise InvalidOperation
        return int((d * _US).to_integral_value(rounding=ROUND_HALF_UP))
    except (InvalidOperation, ValueError):
        raise KrakenError(f"Trades row {i}: time must be seconds since the epoch; got {_describe(v)}") from None
