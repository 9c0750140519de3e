"""Every table of the offline store, in one place, and the converters to Arrow.

A table is an ordered list of columns — name, ClickHouse type, Arrow type — and a
key. Each name returns **one row per key**: every row carries a hidden version
column ``_v`` (Int64, insertion time in ns, increasing within a process) and the
newest version of a key wins (ReplacingMergeTree's rule), in the embedded lake and
on a ClickHouse server alike. Times are ``DateTime64(6, 'UTC')``; the converters
build them from the integer microseconds of :mod:`tickcast.schema` without going
through Python datetimes.

Float64 columns default to NaN ("unknown"): a row written before a column existed
reads NaN there, on both backends.

>>> TABLES["candles"].key
('symbol', 'window_start')
>>> t = rows_to_arrow("drift_events", [{"symbol": "BTC/USD", "ts_us": 1_700_000_000_000_000,
...                                     "model_version": "m1", "detector": "adwin"}])
>>> t.column("ts").type, t.column("detail").to_pylist(), t.schema.names[-1]
(TimestampType(timestamp[us, tz=UTC]), [''], '_v')
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import chain
from operator import itemgetter
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa

from tickcast.features import FEATURE_NAMES
from tickcast.schema import Candle, DeadLetter, FeatureRow
from tickcast.stores.errors import StoreError

TS = "DateTime64(6, 'UTC')"
_TS_ARROW = pa.timestamp("us", tz="UTC")
_ARROW: dict[str, pa.DataType] = {
    TS: _TS_ARROW,
    "String": pa.string(),
    "Float64": pa.float64(),
    "Int64": pa.int64(),
    "UInt32": pa.uint32(),
    "UInt64": pa.uint64(),
}
_DEFAULTS: dict[str, Any] = {"String": "", "Float64": float("nan"), "Int64": 0, "UInt32": 0, "UInt64": 0}
VERSION = "_v"
# The ClientStats counters stored in ``ingest_stats`` (deltas per interval), in column order.
INGEST_COUNTERS = ("connects", "reconnects", "gaps", "filled", "unfilled", "duplicates", "malformed")


class Column(NamedTuple):
    name: str
    ch_type: str  # ClickHouse type
    arrow_type: pa.DataType

    @property
    def sql(self) -> str:
        """Column declaration for DDL and for ``file()`` structures."""
        return f"`{self.name}` {self.ch_type}" + (" DEFAULT nan" if self.ch_type == "Float64" else "")


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[Column, ...]  # without _v
    key: tuple[str, ...]  # one row per key; the newest _v wins
    time: str  # the event-time column: "newest", partitions and retention go by it

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    @property
    def arrow_schema(self) -> pa.Schema:
        """The schema of every part/insert: the columns, then ``_v``."""
        return pa.schema([pa.field(c.name, c.arrow_type, nullable=False) for c in self.columns]
                         + [pa.field(VERSION, pa.int64(), nullable=False)])

    def columns_sql(self) -> str:
        """``\\`a\\` String, …, \\`_v\\` Int64``: DDL body and ``file()`` structure."""
        return ", ".join(c.sql for c in self.columns) + f", `{VERSION}` Int64"

    def key_sql(self) -> str:
        return ", ".join(f"`{k}`" for k in self.key)


def _table(name: str, cols: Sequence[tuple[str, str]], key: Sequence[str], time: str | None = None) -> Table:
    """``time`` defaults to the first timestamp column of the key."""
    if time is None:
        time = next(k for k in key if dict(cols)[k] == TS)
    t = Table(name, tuple(Column(n, typ, _ARROW[typ]) for n, typ in cols), tuple(key), time)
    assert set(t.key) <= set(t.names), f"{name}: key {t.key} not among its columns"
    assert dict(cols).get(t.time) == TS, f"{name}: time column {t.time!r} is not a timestamp"
    return t


TABLES: dict[str, Table] = {t.name: t for t in (
    # One candle per symbol and window [window_start, window_end) (CONTRACT §5).
    _table("candles", [
        ("symbol", "String"), ("window_start", TS), ("window_end", TS),
        ("open", "Float64"), ("high", "Float64"), ("low", "Float64"), ("close", "Float64"),
        ("volume", "Float64"), ("vwap", "Float64"), ("trades", "UInt32"),
        ("buy_volume", "Float64"), ("sell_volume", "Float64"),
        ("first_trade_id", "Int64"), ("last_trade_id", "Int64"),
    ], ("symbol", "window_start")),
    # The feature vector at ts = the candle's window_end; one Float64 per feature.
    _table("features", [("symbol", "String"), ("ts", TS), ("close", "Float64")]
           + [(n, "Float64") for n in FEATURE_NAMES] + [("feature_set_version", "String")],
           ("symbol", "ts")),
    # What a model predicted at ts for ts + horizon_seconds. model_version 'auto': what
    # /predict?model=auto served at ts (model_kind 'auto:<candidate>'; tickcast.scoreboard).
    _table("predictions", [
        ("symbol", "String"), ("ts", TS), ("model_version", "String"), ("horizon_seconds", "UInt32"),
        ("predicted_price", "Float64"), ("model_kind", "String"), ("model_name", "String"),
        ("price_at_ts", "Float64"), ("predicted_return", "Float64"), ("samples_seen", "Int64"),
        # prediction intervals at the (at most two) TICKCAST_INTERVAL_LEVELS, from the model's
        # recent out-of-sample residuals (tickcast.selection.IntervalTracker); NaN = warming up
        ("pi1_level", "Float64"), ("pi1_lower", "Float64"), ("pi1_upper", "Float64"),
        ("pi2_level", "Float64"), ("pi2_lower", "Float64"), ("pi2_upper", "Float64"),
    ], ("symbol", "ts", "model_version")),
    # Input that could not become a trade. id = blake2b-16 of source|position|reason|raw,
    # so a replayed bad line is one record, not two.
    _table("dead_letters", [
        ("id", "String"), ("received_at", TS), ("source", "String"), ("raw", "String"),
        ("reason", "String"), ("position", "String"),
    ], ("id",), time="received_at"),
    # Running accuracy of a model (online learner and baselines) when a label matures at ts.
    _table("model_metrics", [
        ("symbol", "String"), ("ts", TS), ("model_name", "String"), ("horizon_seconds", "UInt32"),
        ("n", "Int64"), ("mae", "Float64"), ("rmse", "Float64"), ("directional_accuracy", "Float64"),
        ("mae_recent", "Float64"),
    ], ("symbol", "model_name", "horizon_seconds", "ts")),
    # A drift detector fired for a model at ts.
    _table("drift_events", [
        ("symbol", "String"), ("ts", TS), ("model_version", "String"), ("detector", "String"),
        ("detail", "String"),
    ], ("symbol", "model_version", "detector", "ts")),
    # One news item (tickcast.news.items.NewsItem), scored (CONTRACT §8). symbols: the
    # configured symbols it maps to, comma-separated; sentiments: JSON {symbol: score};
    # sentiment: their mean.
    _table("news", [
        ("id", "String"), ("published_at", TS), ("available_at", TS), ("source", "String"),
        ("title", "String"), ("summary", "String"), ("url", "String"), ("symbols", "String"),
        ("sentiment", "Float64"), ("sentiments", "String"), ("scorer", "String"),
    ], ("id",), time="available_at"),
    # One row per symbol of a `tickcast train` run; report = the JSON report of CONTRACT §6.
    _table("training_runs", [
        ("run_id", "String"), ("started_at", TS), ("finished_at", TS), ("symbol", "String"),
        ("report", "String"),
    ], ("run_id", "symbol"), time="started_at"),
    # What a live source's client went through (tickcast.live.kraken_client.ClientStats):
    # one row per interval of one session (a random id per source-partition start), the
    # counters as deltas over [ts - interval_seconds, ts), so sum() over any span is exact.
    _table("ingest_stats", [
        ("source", "String"), ("session", "String"), ("ts", TS), ("interval_seconds", "Float64"),
        *((n, "UInt64") for n in INGEST_COUNTERS),
    ], ("source", "session", "ts")),
)}


def _group_tables() -> None:
    """The offline table of every registered feature group that is not declared above
    (:mod:`tickcast.groups`): key ``(symbol, ts)``, one Float64 per column, the group's
    ``feature_set_version`` (CONTRACT §8 for ``news_features``)."""
    from tickcast.groups import all_groups

    for g in all_groups():
        if g.table not in TABLES:
            TABLES[g.table] = _table(g.table, [("symbol", "String"), ("ts", TS)]
                                     + [(c, "Float64") for c in g.columns] + [("feature_set_version", "String")],
                                     ("symbol", "ts"))


_group_tables()


def table_def(name: str) -> Table:
    try:
        return TABLES[name]
    except KeyError:
        raise StoreError(f"unknown table {name!r}; known: {', '.join(TABLES)}") from None


_v_lock = threading.Lock()
_v_last = 0


def version_now() -> int:
    """Insertion version: wall-clock ns, strictly increasing within this process (so a
    later insert wins even if the clock steps back or two inserts share a tick)."""
    global _v_last
    with _v_lock:
        _v_last = max(time.time_ns(), _v_last + 1)
        return _v_last


def _versions(n: int) -> pa.Array:
    return pa.nulls(n, pa.int64()).fill_null(version_now())


def _ts(values: Sequence[int]) -> pa.Array:
    return pa.array(values, type=pa.int64()).cast(_TS_ARROW)


def conform(table: str, data: pa.Table) -> pa.Table:
    """``data`` in the table's exact schema (column order, types, ``_v``).

    Casts compatible types (e.g. int µs -> timestamp), fills missing or null non-key
    columns with their default (NaN, "", 0), adds ``_v`` if absent. Raises
    :class:`StoreError` naming the column for unknown columns, missing/null key or
    time columns, and impossible casts."""
    t = table_def(table)
    have = set(data.column_names)
    extra = have - set(t.names) - {VERSION}
    if extra:
        raise StoreError(f"{table}: unknown column(s) {', '.join(sorted(extra))}; "
                         f"its columns are {', '.join(t.names)}")
    n = data.num_rows
    arrays: list[pa.Array | pa.ChunkedArray] = []
    for c in t.columns:
        required = c.name in t.key or c.ch_type == TS
        if c.name not in have:
            if required:
                raise StoreError(f"{table}: column {c.name!r} ({c.ch_type}) is required")
            arrays.append(pa.nulls(n, c.arrow_type).fill_null(_DEFAULTS[c.ch_type]))
            continue
        col = data.column(c.name)
        if col.type != c.arrow_type:
            try:
                col = col.cast(c.arrow_type)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as e:
                raise StoreError(f"{table}.{c.name}: cannot store {col.type} as {c.ch_type}: {e}") from None
        if col.null_count:
            if required:
                raise StoreError(f"{table}.{c.name}: {col.null_count} null value(s) in a key/time column")
            col = col.fill_null(_DEFAULTS[c.ch_type])
        arrays.append(col)
    if VERSION in have:
        v = data.column(VERSION).cast(pa.int64())
        arrays.append(v.fill_null(version_now()) if v.null_count else v)
    else:
        arrays.append(_versions(n))
    return pa.Table.from_arrays(arrays, schema=t.arrow_schema)


def candles_to_arrow(candles: Sequence[Candle]) -> pa.Table:
    n = len(candles)
    return pa.Table.from_arrays([
        pa.array([c.symbol for c in candles], pa.string()),
        _ts([c.window_start_us for c in candles]),
        _ts([c.window_end_us for c in candles]),
        pa.array([c.open for c in candles], pa.float64()),
        pa.array([c.high for c in candles], pa.float64()),
        pa.array([c.low for c in candles], pa.float64()),
        pa.array([c.close for c in candles], pa.float64()),
        pa.array([c.volume for c in candles], pa.float64()),
        pa.array([c.vwap for c in candles], pa.float64()),
        pa.array([c.trades for c in candles], pa.uint32()),
        pa.array([c.buy_volume for c in candles], pa.float64()),
        pa.array([c.sell_volume for c in candles], pa.float64()),
        pa.array([c.first_trade_id for c in candles], pa.int64()),
        pa.array([c.last_trade_id for c in candles], pa.int64()),
        _versions(n),
    ], schema=TABLES["candles"].arrow_schema)


def _feature_matrix(values: Sequence[Mapping[str, float]]) -> np.ndarray[Any, np.dtype[np.float64]]:
    """(len(FEATURE_NAMES), n) float64 matrix; a missing feature is NaN. One C-level
    itemgetter per row instead of a dict lookup per cell (~5x faster)."""
    nan = float("nan")
    k = len(FEATURE_NAMES)
    get = itemgetter(*FEATURE_NAMES)

    def row(v: Mapping[str, float]) -> tuple[float, ...]:
        try:
            got = get(v)
            return got if k > 1 else (got,)
        except KeyError:
            return tuple(v.get(name, nan) for name in FEATURE_NAMES)

    flat = np.fromiter(chain.from_iterable(map(row, values)), dtype=np.float64, count=len(values) * k)
    return flat.reshape(len(values), k).T.copy()


def features_to_arrow(rows: Sequence[FeatureRow]) -> pa.Table:
    """Feature rows -> the ``features`` table; a feature missing from ``values`` is NaN."""
    m = _feature_matrix([r.values for r in rows])
    arrays = [
        pa.array([r.symbol for r in rows], pa.string()),
        _ts([r.ts_us for r in rows]),
        pa.array([r.close for r in rows], pa.float64()),
        *(pa.array(m[j]) for j in range(len(FEATURE_NAMES))),
        pa.array([r.feature_set_version for r in rows], pa.string()),
        _versions(len(rows)),
    ]
    return pa.Table.from_arrays(arrays, schema=TABLES["features"].arrow_schema)


def dead_letter_id(d: DeadLetter) -> str:
    """Identity of a dead letter: the same bad input at the same place is one record.

    >>> dead_letter_id(DeadLetter(1, "replay:f", "{", "bad JSON", "7")) == dead_letter_id(
    ...     DeadLetter(2, "replay:f", "{", "bad JSON", "7"))
    True
    """
    h = hashlib.blake2b(digest_size=16)
    for part in (d.source, d.position, d.reason, d.raw):
        h.update(part.encode("utf-8", "replace"))
        h.update(b"\x00")  # separator: ("ab", "c") and ("a", "bc") differ
    return h.hexdigest()


def dead_letters_to_arrow(rows: Sequence[DeadLetter]) -> pa.Table:
    return rows_to_arrow("dead_letters", [
        {"id": dead_letter_id(d), "received_at": d.received_at_us, "source": d.source, "raw": d.raw,
         "reason": d.reason, "position": d.position} for d in rows])


def _record_columns(rows: Sequence[Any]) -> dict[str, Sequence[Any]] | None:
    """Field name -> column of values when every row is a NamedTuple of one type, else None."""
    if not rows:
        return None
    kind = type(rows[0])
    fields = getattr(kind, "_fields", None)
    if fields is None or any(type(r) is not kind for r in rows):
        return None
    return dict(zip(fields, zip(*rows, strict=True), strict=True))


def rows_to_arrow(table: str, rows: Sequence[Mapping[str, Any]] | Sequence[tuple[Any, ...]]) -> pa.Table:
    """Generic converter from rows named like the table's columns: dicts, or the
    records of :mod:`tickcast.schema` (NamedTuples such as ``Prediction``).

    A time column takes int µs under its name or under ``<name>_us`` (also aware
    datetimes); keys that are not columns are ignored; missing non-key values get
    the column default (NaN, "", 0). Missing key/time values raise :class:`StoreError`."""
    t = table_def(table)
    columns = _record_columns(rows)
    dicts: list[Mapping[str, Any]] = [] if columns is not None else [
        r if isinstance(r, Mapping) else r._asdict() for r in rows]  # type: ignore[attr-defined]
    arrays: list[pa.Array] = []
    for c in t.columns:
        try:
            if columns is not None:  # records of one type: whole columns, no per-row lookups
                vals = columns.get(c.name) or columns.get(c.name + "_us") or [None] * len(rows)
                if c.ch_type == TS and any(isinstance(v, int) for v in vals):
                    arrays.append(pa.array(vals, pa.int64()).cast(_TS_ARROW))
                else:
                    arrays.append(pa.array(vals, c.arrow_type))
            elif c.ch_type == TS:
                alt = c.name + "_us"
                vals = [r[c.name] if c.name in r else r.get(alt) for r in dicts]
                if any(isinstance(v, int) for v in vals):
                    arrays.append(pa.array(vals, pa.int64()).cast(_TS_ARROW))
                else:
                    arrays.append(pa.array(vals, _TS_ARROW))
            else:
                arrays.append(pa.array([r.get(c.name) for r in dicts], c.arrow_type))
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError) as e:
            raise StoreError(f"{table}.{c.name}: values are not {c.ch_type}: {e}") from None
    return conform(table, pa.Table.from_arrays(arrays, names=list(t.names)))


def news_to_arrow(items: Sequence[Any]) -> pa.Table:
    """:class:`tickcast.news.items.NewsItem` s -> the ``news`` table (symbols
    comma-separated, sentiments JSON ``{symbol: score}``, sentiment = their mean)."""
    import json

    return rows_to_arrow("news", [
        {"id": it.id, "published_at": it.published_at_us, "available_at": it.available_at_us,
         "source": it.source, "title": it.title, "summary": it.summary, "url": it.url,
         "symbols": ",".join(it.symbols), "sentiment": it.sentiment,
         "sentiments": json.dumps(dict(zip(it.symbols, it.sentiments, strict=True)), separators=(",", ":")),
         "scorer": it.scorer} for it in items])
