"""Table definitions of the offline store, in one place, and converters to Arrow.

Every table has a hidden version column ``_v`` (Int64, insertion time in ns): the
newest version of a key wins (ReplacingMergeTree semantics), in the embedded lake
and on a ClickHouse server alike. Times are ``DateTime64(6, 'UTC')``, built from
integer microseconds without going through Python datetimes.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from tickcast.features import FEATURE_NAMES
from tickcast.schema import Candle, DeadLetter, FeatureRow

TS = "DateTime64(6, 'UTC')"
_ARROW = {
    TS: pa.timestamp("us", tz="UTC"),
    "String": pa.string(),
    "Float64": pa.float64(),
    "Int64": pa.int64(),
    "UInt32": pa.uint32(),
}


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[tuple[str, str], ...]  # (name, ClickHouse type), without _v
    key: tuple[str, ...]  # one row per key (newest _v wins)

    @property
    def arrow_schema(self) -> pa.Schema:
        return pa.schema([(n, _ARROW[t]) for n, t in self.columns] + [("_v", pa.int64())])

    def structure(self) -> str:
        """ClickHouse column list incl. _v, e.g. for file(..., 'structure')."""
        return ", ".join(f"`{n}` {t}" for n, t in self.columns) + ", `_v` Int64"


def _t(name: str, cols: Sequence[tuple[str, str]], key: Sequence[str]) -> Table:
    return Table(name, tuple(cols), tuple(key))


TABLES: dict[str, Table] = {t.name: t for t in (
    _t("candles", [
        ("symbol", "String"), ("window_start", TS), ("window_end", TS),
        ("open", "Float64"), ("high", "Float64"), ("low", "Float64"), ("close", "Float64"),
        ("volume", "Float64"), ("vwap", "Float64"), ("trades", "UInt32"),
        ("buy_volume", "Float64"), ("sell_volume", "Float64"),
        ("first_trade_id", "Int64"), ("last_trade_id", "Int64"),
    ], ("symbol", "window_start")),
    _t("features", [("symbol", "String"), ("ts", TS), ("close", "Float64")]
       + [(n, "Float64") for n in FEATURE_NAMES] + [("feature_set_version", "String")],
       ("symbol", "ts")),
    _t("predictions", [
        ("symbol", "String"), ("ts", TS), ("model_version", "String"), ("horizon_seconds", "UInt32"),
        ("predicted_price", "Float64"), ("model_kind", "String"), ("model_name", "String"),
        ("price_at_ts", "Float64"), ("predicted_return", "Float64"), ("samples_seen", "Int64"),
    ], ("symbol", "ts", "model_version")),
    _t("dead_letters", [
        ("id", "String"), ("received_at", TS), ("source", "String"), ("raw", "String"),
        ("reason", "String"), ("position", "String"),
    ], ("id",)),
    _t("model_metrics", [
        ("symbol", "String"), ("ts", TS), ("model_name", "String"), ("horizon_seconds", "UInt32"),
        ("n", "Int64"), ("mae", "Float64"), ("rmse", "Float64"), ("directional_accuracy", "Float64"),
        ("mae_recent", "Float64"),
    ], ("symbol", "ts", "model_name")),
    _t("drift_events", [
        ("symbol", "String"), ("ts", TS), ("model_version", "String"), ("detector", "String"),
        ("detail", "String"),
    ], ("symbol", "ts", "model_version")),
    _t("training_runs", [
        ("run_id", "String"), ("started_at", TS), ("finished_at", TS), ("symbol", "String"),
        ("report", "String"),
    ], ("run_id", "symbol")),
)}


def version_now() -> int:
    return time.time_ns()


def _ts(values: Sequence[int]) -> pa.Array:
    return pa.array(values, type=pa.int64()).cast(pa.timestamp("us", tz="UTC"))


def candles_to_arrow(candles: Sequence[Candle]) -> pa.Table:
    v = version_now()
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
        pa.array([v] * n, pa.int64()),
    ], schema=TABLES["candles"].arrow_schema)


def features_to_arrow(rows: Sequence[FeatureRow]) -> pa.Table:
    v = version_now()
    nan = float("nan")
    arrays = [
        pa.array([r.symbol for r in rows], pa.string()),
        _ts([r.ts_us for r in rows]),
        pa.array([r.close for r in rows], pa.float64()),
    ]
    for name in FEATURE_NAMES:
        arrays.append(pa.array([r.values.get(name, nan) for r in rows], pa.float64()))
    arrays.append(pa.array([r.feature_set_version for r in rows], pa.string()))
    arrays.append(pa.array([v] * len(rows), pa.int64()))
    return pa.Table.from_arrays(arrays, schema=TABLES["features"].arrow_schema)


def dead_letter_id(d: DeadLetter) -> str:
    """Identity of a dead letter: the same bad input at the same place is one record."""
    h = hashlib.blake2b(digest_size=16)
    for part in (d.source, d.position, d.reason, d.raw):
        h.update(part.encode("utf-8", "replace"))
        h.update(b"\x00")
    return h.hexdigest()


def dead_letters_to_arrow(rows: Sequence[DeadLetter]) -> pa.Table:
    return rows_to_arrow("dead_letters", [
        {"id": dead_letter_id(d), "received_at": d.received_at_us, "source": d.source, "raw": d.raw,
         "reason": d.reason, "position": d.position} for d in rows])


def rows_to_arrow(table: str, rows: Sequence[dict[str, Any]]) -> pa.Table:
    """Generic converter: dict rows with the table's column names. Time columns take int
    µs (or accept the same name with a ``_us`` suffix); missing columns become null."""
    t = TABLES[table]
    v = version_now()
    arrays = []
    for name, typ in t.columns:
        if typ == TS:
            arrays.append(_ts([r[name] if name in r else r[name + "_us"] for r in rows]))
        else:
            arrays.append(pa.array([r.get(name) for r in rows], _ARROW[typ]))
    arrays.append(pa.array([v] * len(rows), pa.int64()))
    return pa.Table.from_arrays(arrays, schema=t.arrow_schema)
