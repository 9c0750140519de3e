"""Event-time OHLCV candles, one definition for the stream and for batch.

:class:`CandleAgg` is the aggregation in Quix/Bytewax shape (``initialize`` /
``agg`` / ``result``); :class:`SymbolWindower` assigns one symbol's trades to
epoch-aligned tumbling windows and decides, from a watermark, when a window is
complete. Both are plain Python and picklable, so Bytewax can snapshot them and a
plain loop (:func:`build_candles`) can drive the very same code for backfill,
training and tests.

Contracts:

* A window is ``[start, start + window)`` with ``start % window == 0`` (Unix epoch).
* The watermark is ``max event time seen - allowed lateness`` (plus, for live
  sources, the wall-clock time elapsed since that event; see
  :meth:`SymbolWindower.advance`). A window is emitted once its end <= watermark,
  or at end of input.
* A trade whose window was already emitted is **late**: it is returned to the
  caller (who records it as a dead letter and counts it), never silently dropped.
* Windows between two emitted windows that saw no trade are emitted as empty
  candles (``trades == 0``, previous close, zero volume), so every lookback in
  candles means a fixed span of time.

>>> from tickcast.schema import Trade
>>> ts = [Trade("X/USD", i, i * 4_000_000, 100.0 + i, 1.0, "buy") for i in range(1, 7)]
>>> candles, late = build_candles(ts, window_seconds=10)
>>> [(c.window_start_us // 1_000_000, c.open, c.close, c.trades) for c in candles]
[(0, 101.0, 102.0, 2), (10, 103.0, 104.0, 2), (20, 105.0, 106.0, 2)]
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from tickcast.schema import Candle, Trade


class CandleAgg:
    """Running OHLCV of one window. ``__slots__`` keeps it small and fast to pickle."""

    __slots__ = ("open", "high", "low", "close", "volume", "pv", "trades", "buy", "sell", "first", "last")

    def __init__(self, t: Trade) -> None:  # initialize
        self.open = self.high = self.low = self.close = t.price
        self.volume = t.qty
        self.pv = t.price * t.qty
        self.trades = 1
        self.buy = t.qty if t.side == "buy" else 0.0
        self.sell = t.qty if t.side == "sell" else 0.0
        self.first = self.last = t.trade_id

    def agg(self, t: Trade) -> None:
        p = t.price
        if p > self.high:
            self.high = p
        elif p < self.low:
            self.low = p
        self.close = p
        q = t.qty
        self.volume += q
        self.pv += p * q
        self.trades += 1
        if t.side == "buy":
            self.buy += q
        else:
            self.sell += q
        self.last = t.trade_id

    def result(self, symbol: str, start_us: int, end_us: int) -> Candle:
        return Candle(
            symbol, start_us, end_us, self.open, self.high, self.low, self.close,
            self.volume, self.pv / self.volume, self.trades, self.buy, self.sell,
            self.first, self.last,
        )

    def __getstate__(self) -> tuple[object, ...]:
        return tuple(getattr(self, s) for s in self.__slots__)

    def __setstate__(self, state: tuple[object, ...]) -> None:
        for name, value in zip(self.__slots__, state, strict=True):
            setattr(self, name, value)


def empty_candle(symbol: str, start_us: int, end_us: int, prev_close: float) -> Candle:
    return Candle(symbol, start_us, end_us, prev_close, prev_close, prev_close, prev_close,
                  0.0, prev_close, 0, 0.0, 0.0)


MAX_FILL_US = 86_400_000_000  # the longest gap filled with empty candles (a day: 8,640 at 10 s)


@dataclass
class SymbolWindower:
    """Tumbling event-time windows for ONE symbol.

    Trades within a window may arrive in any order (the close is the last trade
    *received*, which for Kraken's ordered stream is the last executed)."""

    symbol: str
    window_us: int
    lateness_us: int = 0
    open_windows: dict[int, CandleAgg] = field(default_factory=dict)
    emitted_until_us: int | None = None  # end of the newest emitted window
    last_close: float | None = None
    max_event_us: int | None = None

    def push(self, trades: Iterable[Trade]) -> tuple[list[Candle], list[Trade]]:
        """Add trades in arrival order; return the candles that became complete and the
        late trades. The watermark advances trade by trade, so the result does not
        depend on how the input is batched."""
        late: list[Trade] = []
        out: list[Candle] = []
        w = self.window_us
        lat = self.lateness_us
        windows = self.open_windows
        mx = self.max_event_us
        # event time at which the oldest open window completes
        due = min(windows) + w + lat if windows else None
        for t in trades:
            ts = t.ts_us
            done = self.emitted_until_us
            if done is not None and ts < done:
                late.append(t)
                continue
            start = ts - ts % w
            agg = windows.get(start)
            if agg is None:
                windows[start] = CandleAgg(t)
                if due is None or start + w + lat < due:
                    due = start + w + lat
            else:
                agg.agg(t)
            if mx is None or ts > mx:
                mx = ts
                if due is not None and mx >= due:
                    self.max_event_us = mx
                    out.extend(self.close_until(mx - lat))
                    due = min(windows) + w + lat if windows else None
        self.max_event_us = mx
        return out, late

    def close_until(self, watermark_us: int) -> list[Candle]:
        """Emit every window whose end <= watermark, with empty windows filled in."""
        out: list[Candle] = []
        w = self.window_us
        windows = self.open_windows
        if windows:
            for start in sorted(windows):
                if start + w > watermark_us:
                    break
                self._fill_to(start, out)
                c = windows.pop(start).result(self.symbol, start, start + w)
                out.append(c)
                self.last_close = c.close
                self.emitted_until_us = start + w
        # empty windows after the last trade, as time passes
        if self.emitted_until_us is not None:
            target = watermark_us - watermark_us % w  # windows ending at or before the watermark
            if windows:
                target = min(target, min(windows))
            self._fill_to(target, out)
        return out

    def flush(self) -> list[Candle]:
        """End of input: emit every open window."""
        if not self.open_windows:
            return []
        last = max(self.open_windows)
        return self.close_until(last + self.window_us)

    def next_close_us(self) -> int | None:
        """Event time at which the watermark completes the next window (or None)."""
        if self.open_windows:
            return min(self.open_windows) + self.window_us + self.lateness_us
        if self.emitted_until_us is not None:
            return self.emitted_until_us + self.window_us + self.lateness_us
        return None

    def _fill_to(self, start_us: int, out: list[Candle]) -> None:
        e = self.emitted_until_us
        if e is None or self.last_close is None:
            return
        w = self.window_us
        if start_us - e > MAX_FILL_US:
            # a gap longer than a day is not filled window by window: the series resumes
            # at the new window (bounded work and memory, whatever one record's time)
            self.emitted_until_us = start_us
            return
        while e < start_us:
            out.append(empty_candle(self.symbol, e, e + w, self.last_close))
            e += w
        self.emitted_until_us = e


def build_candles(
    trades: Iterable[Trade], window_seconds: int, lateness_seconds: float = 0.0
) -> tuple[list[Candle], list[Trade]]:
    """Batch driver: candles of all symbols (each symbol's in time order) and late trades.

    Closes every open window at the end, like the stream does at end of input."""
    windowers: dict[str, SymbolWindower] = {}
    candles: list[Candle] = []
    late: list[Trade] = []
    w_us = window_seconds * 1_000_000
    lat_us = int(round(lateness_seconds * 1_000_000))
    for t in trades:
        win = windowers.get(t.symbol)
        if win is None:
            win = windowers[t.symbol] = SymbolWindower(t.symbol, w_us, lat_us)
        c, lt = win.push((t,))
        candles.extend(c)
        late.extend(lt)
    for win in windowers.values():
        candles.extend(win.flush())
    return candles, late
