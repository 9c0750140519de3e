"""The records that flow through tickcast, framework-free.

Contracts:

* All times are UTC. Inside the pipeline an instant is an ``int`` of **microseconds
  since the Unix epoch** (``*_us`` fields): cheap to compare, exact, and what the
  offline store keeps (``DateTime64(6, 'UTC')``). :func:`us_to_dt` / :func:`dt_to_us`
  convert at the edges.
* Prices and quantities are IEEE-754 doubles. Every decimal literal with at most 15
  significant digits (every Kraken price and quantity: at most 10 decimals, prices
  below 1e9) converts to a double whose shortest ``repr`` is that literal again, so
  parsing loses nothing Kraken sent.
* ``side`` is the **taker's** side, ``"buy"`` or ``"sell"``.

>>> t = Trade("BTC/USD", 7, dt_to_us(datetime(2024, 1, 1, tzinfo=UTC)), 42000.5, 0.25, "buy", "market")
>>> us_to_dt(t.ts_us).isoformat()
'2024-01-01T00:00:00+00:00'
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, NamedTuple

US_PER_S: Final = 1_000_000
SIDES: Final = frozenset({"buy", "sell"})
MAX_RAW_CHARS: Final = 65_536  # dead letters keep at most this much of the raw input
# Kraken v2 symbols are BASE/QUOTE in upper case (digits allowed, e.g. "1INCH/USD"). Anchored,
# so its pattern can go into the OpenAPI document as it is; test input with is_symbol (fullmatch:
# ``match`` with "$" would accept "BTC/USD\n").
SYMBOL_RE: Final = re.compile(r"^[A-Z0-9]{1,16}/[A-Z0-9]{1,16}$")


def is_symbol(text: str) -> bool:
    """Whether ``text`` is a Kraken v2 symbol (the one symbol rule of tickcast).

    >>> is_symbol("BTC/USD"), is_symbol("1INCH/USD"), is_symbol("btc/usd"), is_symbol("BTC/USD\\n")
    (True, True, False, False)
    """
    return SYMBOL_RE.fullmatch(text) is not None


def dt_to_us(ts: datetime) -> int:
    """Aware datetime -> integer microseconds since the epoch (exact)."""
    if ts.tzinfo is None:
        raise ValueError(f"timestamp must be timezone-aware; got naive {ts!r}")
    delta = ts - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * US_PER_S + delta.microseconds


def us_to_dt(us: int) -> datetime:
    """Integer microseconds since the epoch -> aware UTC datetime (exact)."""
    return datetime.fromtimestamp(us // US_PER_S, tz=UTC).replace(microsecond=us % US_PER_S)


def us_to_iso(us: int) -> str:
    """RFC 3339 with microseconds and ``Z``, Kraken's own format.

    >>> us_to_iso(1_700_000_000_123_456)
    '2023-11-14T22:13:20.123456Z'
    """
    return us_to_dt(us).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def safe_iso(us: int) -> str:
    """:func:`us_to_iso`, or a plain count for times no datetime can hold (year < 1 or
    > 9999: a hostile record's), for messages that must never raise.

    >>> safe_iso(-62_200_000_000_000_000)
    '-62200000000000000 µs since the epoch'
    """
    try:
        return us_to_iso(us)
    except (ValueError, OverflowError, OSError):
        return f"{us} µs since the epoch"


# Kraken numbers each symbol's trades 1, 2, 3, …; a trade whose id is this far above the
# newest one seen is not believed (at BTC/USD's pace, months of trading): it becomes a
# dead letter instead of a new high-water mark that would make every later trade look
# like a repeat (a single record with id 2^63-1 did that), or a gap of billions to fill.
MAX_TRADE_ID_JUMP = 10_000_000


class Trade(NamedTuple):
    """One executed trade, normalised from any source (live, REST, CSV, simulator).

    A NamedTuple: immutable and the cheapest record Python builds (the pipeline makes
    one per trade, so this is on the hot path)."""

    symbol: str  # Kraken v2 symbol, e.g. "BTC/USD"
    trade_id: int  # per-symbol sequence number from Kraken
    ts_us: int  # event time, microseconds since epoch, UTC
    price: float  # quote per base, > 0
    qty: float  # base units, > 0
    side: str  # taker side: "buy" | "sell"
    ord_type: str = ""  # taker order type: "market" | "limit" | "" (unknown)


MAX_NUMBER: Final = 1e15  # a larger price or quantity is absurd: dead letter ("huge number")
MISSING: Final = object()  # a field that is absent (distinct from JSON null)


def validate_trade(fields: Mapping[str, Any], time_us: Callable[[Mapping[str, Any]], int | str]) -> Trade | str:
    """The one check of a trade's fields, shared by every reader of trades (Kraken's v2
    messages, the Kafka wire format): the :class:`Trade`, or why it is not one — a
    one-line reason naming the field, what is accepted and what arrived
    (:func:`describe`). Field names are the v2 ones (``symbol``, ``side``, ``price``,
    ``qty``, ``trade_id``, ``ord_type``, optional, default ""); the time is the
    format's own: ``time_us(fields)`` returns the microseconds or the reason.

    >>> ok = {"symbol": "BTC/USD", "side": "buy", "price": 100, "qty": 0.5, "trade_id": 7}
    >>> validate_trade(ok, lambda f: 1_000_000)
    Trade(symbol='BTC/USD', trade_id=7, ts_us=1000000, price=100.0, qty=0.5, side='buy', ord_type='')
    >>> validate_trade({**ok, "price": -1}, lambda f: 1_000_000)
    'trade.price must be a number > 0; got -1'
    >>> validate_trade({**ok, "trade_id": True}, lambda f: 1_000_000)
    'trade.trade_id must be a non-negative integer; got bool true'
    """
    sym = fields.get("symbol", MISSING)
    if type(sym) is not str or not sym:
        return f"trade.symbol must be a non-empty string; got {describe(sym)}"
    side = fields.get("side", MISSING)
    if side != "buy" and side != "sell":
        return f'trade.side must be "buy" or "sell"; got {describe(side)}'
    price = _positive(fields, "price")
    if isinstance(price, str):
        return price
    qty = _positive(fields, "qty")
    if isinstance(qty, str):
        return qty
    tid = fields.get("trade_id", MISSING)
    if type(tid) is not int or tid < 0:
        return f"trade.trade_id must be a non-negative integer; got {describe(tid)}"
    ts_us = time_us(fields)
    if isinstance(ts_us, str):
        return ts_us
    ot = fields.get("ord_type", "")
    if type(ot) is not str:
        return f'trade.ord_type must be a string ("market" or "limit"); got {describe(ot)}'
    return Trade(sym, tid, ts_us, price, qty, side, ot)


def _positive(fields: Mapping[str, Any], name: str) -> float | str:
    """A price or quantity as a float, or why it is not a usable one."""
    v = fields.get(name, MISSING)
    t = type(v)
    if t is not float and t is not int:  # bool is an int subclass: rejected here too
        return f"trade.{name} must be a number > 0; got {describe(v)}"
    if not v > 0:  # also NaN
        return f"trade.{name} must be a number > 0; got {describe(v)}"
    if v > MAX_NUMBER:
        return f"trade.{name} must be a number > 0 and <= {MAX_NUMBER:.0e}; got huge number {describe(v)}"
    return float(v)


def describe(v: object) -> str:
    """A short, precise description of a JSON value for a reason text.

    >>> describe(MISSING), describe(None), describe(True), describe(-1), describe("x"), describe([1, 2])
    ('missing', 'null', 'bool true', '-1', "str 'x'", 'array [1,2]')
    """
    if v is MISSING:
        return "missing"
    if v is None:
        return "null"
    if v is True or v is False:
        return f"bool {'true' if v else 'false'}"
    if type(v) is int or type(v) is float:
        return repr(v)
    if type(v) is str:
        return f"str {v!r}" if len(v) <= 40 else f"str {v[:40]!r}... ({len(v)} characters)"
    import orjson

    try:
        text = orjson.dumps(v).decode()
    except Exception:  # noqa: BLE001 - whatever it is, describe it without failing
        text = repr(v)
    return f"{json_type(v)} {text if len(text) <= 60 else text[:60] + '...'}"


def json_type(v: object) -> str:
    """The JSON name of a decoded value's type (object, array, null, str, ...)."""
    if isinstance(v, dict):
        return "object"
    if isinstance(v, list):
        return "array"
    if v is None:
        return "null"
    return type(v).__name__


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """Input that could not become a trade, kept with the reason (never dropped)."""

    received_at_us: int
    source: str  # e.g. "replay:/path/file.jsonl", "kraken", "kafka:trades"
    raw: str  # the offending input, verbatim (truncated to 64 KiB)
    reason: str  # precise: what was expected, what arrived
    # where in the source it was (replay byte offset, kafka partition/offset, ...);
    # with source and reason it identifies the record, so replays do not duplicate it
    position: str = ""


@dataclass(slots=True)
class Candle:
    """OHLCV over the half-open event-time window ``[window_start_us, window_end_us)``.

    Windows are aligned to the Unix epoch. A window without trades is still emitted
    (``trades == 0``): open = high = low = close = vwap = the previous close, zero
    volume, so that every lookback counts wall-clock time, not trades.
    """

    symbol: str
    window_start_us: int
    window_end_us: int
    open: float
    high: float
    low: float
    close: float
    volume: float  # sum of qty
    vwap: float  # sum(price*qty) / sum(qty); the close when volume == 0
    trades: int
    buy_volume: float  # qty where the taker bought
    sell_volume: float  # qty where the taker sold
    first_trade_id: int = -1  # -1 for an empty window
    last_trade_id: int = -1


@dataclass(slots=True)
class FeatureRow:
    """The feature vector of one symbol at ``ts_us`` = the window_end of the candle it
    was computed from. It uses only trades with event time < ``ts_us``."""

    symbol: str
    ts_us: int
    close: float  # price at ts: the candle's close (last trade at or before ts)
    values: dict[str, float] = field(default_factory=dict)  # name -> value (NaN = not warm yet)
    feature_set_version: str = ""


class Prediction(NamedTuple):
    """What a model predicted at ``ts_us`` (its features' event time) for ``ts_us +
    horizon_seconds``: one row of the ``predictions`` table, and the online store's
    newest prediction of a symbol."""

    symbol: str
    ts_us: int
    model_version: str
    horizon_seconds: int
    predicted_price: float
    model_kind: str  # "online:linear", "batch:xgboost"
    model_name: str  # "river-linear", "xgboost"
    price_at_ts: float
    predicted_return: float  # log-return to the horizon (not bps)
    samples_seen: int = 0  # labels the model had learned (online models)
    # prediction intervals (tickcast.scoreboard): two levels, NaN bounds while warming up
    pi1_level: float = float("nan")
    pi1_lower: float = float("nan")
    pi1_upper: float = float("nan")
    pi2_level: float = float("nan")
    pi2_lower: float = float("nan")
    pi2_upper: float = float("nan")


class ModelMetrics(NamedTuple):
    """Running accuracy of one model (or baseline) of a symbol when a label matures at
    ``ts_us``: one row of the ``model_metrics`` table. Errors in price units."""

    symbol: str
    ts_us: int
    model_name: str
    horizon_seconds: int
    n: int
    mae: float
    rmse: float
    directional_accuracy: float  # NaN until a prediction and its outcome both moved
    mae_recent: float  # over the last labels (see tickcast.learner.ErrorStats)


class DriftEvent(NamedTuple):
    """A drift detector fired for a model at ``ts_us``: one row of ``drift_events``."""

    symbol: str
    ts_us: int
    model_version: str
    detector: str
    detail: str = ""


def json_safe(obj: Any) -> Any:
    """``obj`` with NaN/inf as None (not JSON), recursively through dicts, lists and
    tuples; numpy scalars become Python numbers.

    >>> json_safe({"a": float("nan"), "b": [1.5, float("inf")], "c": (2,)})
    {'a': None, 'b': [1.5, None], 'c': [2]}
    """
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    if type(obj).__module__ == "numpy" and hasattr(obj, "item"):  # numpy scalars
        return json_safe(obj.item())
    return obj


def trade_json(t: Trade) -> str:
    """A trade as the JSON a dead letter keeps of it (never raises)."""
    import orjson

    return orjson.dumps(
        {"symbol": t.symbol[:64], "trade_id": t.trade_id, "timestamp": safe_iso(t.ts_us),
         "price": t.price, "qty": t.qty, "side": t.side, "ord_type": t.ord_type}
    ).decode()
