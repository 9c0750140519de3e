"""Load minute-resolution candle history (CSV) into the offline store, deriving
features with the same feature code as the stream.

Formats (see ``../shared/data/candles/``):

* ``binance``: header ``open_time,open,high,low,close,volume`` (ISO times);
* ``kraken``: Kraken's OHLCVT archive, no header: ``time,open,high,low,close,volume,trades``.

Neither format has taker sides, so buy/sell volume are unknown: they are stored as
zero and the order-flow features are 0 — say so when you read results trained on
them. Missing minutes are filled like the stream does (previous close, zero volume)
so lookbacks keep their meaning.
"""

from __future__ import annotations

import csv
from datetime import datetime
from pathlib import Path

from tickcast.candles import empty_candle
from tickcast.schema import Candle, dt_to_us


def read_candles_csv(path: Path, symbol: str, fmt: str = "auto") -> tuple[list[Candle], int]:
    """Candles (gaps filled) and the detected window length in seconds."""
    with path.open() as f:
        first = f.readline()
    if fmt == "auto":
        fmt = "binance" if first.startswith("open_time") else "kraken"
    rows: list[tuple[int, float, float, float, float, float, int]] = []
    with path.open() as f:
        reader = csv.reader(f)
        if fmt == "binance":
            next(reader)
        for r in reader:
            if not r:
                continue
            if fmt == "binance":
                ts = dt_to_us(datetime.fromisoformat(r[0]))
                n = 0
            elif fmt == "kraken":
                ts = int(r[0]) * 1_000_000
                n = int(r[6])
            else:
                raise ValueError(f"unknown candle format {fmt!r}: use binance or kraken")
            rows.append((ts, float(r[1]), float(r[2]), float(r[3]), float(r[4]), float(r[5]), n))
    if len(rows) < 2:
        raise ValueError(f"{path}: fewer than 2 candles")
    rows.sort()
    diffs = sorted(b[0] - a[0] for a, b in zip(rows, rows[1:], strict=False))
    w = diffs[len(diffs) // 2]
    if w <= 0 or w % 1_000_000:
        raise ValueError(f"{path}: cannot infer a whole-second candle length")
    out: list[Candle] = []
    prev_end: int | None = None
    for ts, o, h, lo, c, v, n in rows:
        if ts % w:
            raise ValueError(f"{path}: candle at {ts} µs is not aligned to {w // 1_000_000} s")
        if prev_end is not None:
            if ts < prev_end:
                raise ValueError(f"{path}: duplicate or overlapping candle at {ts} µs")
            while prev_end < ts:
                out.append(empty_candle(symbol, prev_end, prev_end + w, out[-1].close))
                prev_end += w
        vwap = (h + lo + c) / 3 if v > 0 else c  # typical price: the files carry no VWAP
        out.append(Candle(symbol, ts, ts + w, o, h, lo, c, v, vwap, n, 0.0, 0.0))
        prev_end = ts + w
    return out, w // 1_000_000
