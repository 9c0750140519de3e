"""A deterministic market simulator producing Kraken-v2-shaped trades.

Per symbol, in event time:

* **arrivals** come in bursts: inter-arrival times are a mixture of a fast and a slow
  exponential (coefficient of variation > 1), and some trades share the previous
  trade's timestamp (one aggressive order filling several resting orders — Kraken
  sends those in one message);
* **taker sides** are persistent (a Markov chain: order flow is autocorrelated);
* **sizes** are log-normal in notional;
* the **mid** is a random walk in log-price with ``vol_bps_per_sqrt_s``, plus, when
  ``flow_impact > 0``, a drift proportional to recent signed order flow (an EMA of
  taker sides with a 30-s time constant): a planted, learnable dependence of the next
  minute's return on order-flow imbalance. With ``flow_impact = 0`` and
  ``spread_bps = 0`` the trade price is a pure random walk: no model may beat
  persistence on it (the leakage self-test);
* trades print at the ask for taker buys and at the bid for taker sells (bid–ask
  bounce), rounded to the symbol's tick.

Same seed, same trades; a pickled simulator resumes exactly where it stopped.

>>> sim = MarketSimulator(["BTC/USD", "ETH/USD"], seed=1, start_us=1_767_225_600_000_000)
>>> ts = sim.next_trades(1000)
>>> len(ts), sorted({t.symbol for t in ts}), all(a.ts_us <= b.ts_us for a, b in zip(ts, ts[1:]))
(1000, ['BTC/USD', 'ETH/USD'], True)
"""

from __future__ import annotations

import hashlib
import heapq
import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson

from tickcast.schema import Trade

DEFAULT_START_US = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z: reproducible files
_KNOWN = {"BTC/USD": (60_000.0, 0.1), "ETH/USD": (3_000.0, 0.01)}


@dataclass(frozen=True)
class SimParams:
    rate: float = 50.0  # mean trades/s per symbol
    spread_bps: float = 1.0  # bid-ask spread
    vol_bps_per_sqrt_s: float = 1.0  # mid volatility (BTC is ~0.7 bps/sqrt(s))
    flow_impact: float = 0.0  # bps/s of drift per unit of order-flow EMA (in [-1, 1])
    flow_tau_s: float = 30.0  # time constant of that EMA
    side_persistence: float = 0.75  # P(next taker side == previous)
    same_ts_prob: float = 0.1  # P(trade shares the previous timestamp)
    fast_share: float = 0.7  # share of fast inter-arrivals (bursts)
    median_notional: float = 300.0  # quote currency
    size_sigma: float = 1.2  # log-normal sigma of the notional


def _start_price(symbol: str) -> tuple[float, float]:
    if symbol in _KNOWN:
        return _KNOWN[symbol]
    h = int(hashlib.sha256(symbol.encode()).hexdigest()[:8], 16)
    price = 10 ** (1 + (h % 1000) / 500)  # 10 .. 1000, stable per name
    return price, 10 ** (math.floor(math.log10(price)) - 4)


class _SymbolSim:
    def __init__(self, symbol: str, rng: np.random.Generator, start_us: int, p: SimParams) -> None:
        self.symbol = symbol
        self.rng = rng
        self.p = p
        price, self.tick = _start_price(symbol)
        self.log_mid = math.log(price)
        self.t_us = start_us
        self.flow = 0.0
        self.side = 1.0
        self.next_id = 1
        self.buf: deque[Trade] = deque()

    def generate(self, n: int = 4096) -> None:
        p, rng = self.p, self.rng
        fast_mean = 0.1 / p.rate
        slow_mean = (1 - p.fast_share * 0.1) / ((1 - p.fast_share) * p.rate)
        scale = np.where(rng.random(n) < p.fast_share, fast_mean, slow_mean)
        dt = rng.exponential(1.0, n) * scale / (1 - p.same_ts_prob)
        dt[rng.random(n) < p.same_ts_prob] = 0.0
        dt_us = np.floor(dt * 1e6).astype(np.int64)
        dt_us[(dt_us == 0) & (dt > 0)] = 1
        t_us = self.t_us + np.cumsum(dt_us)
        dts = dt_us / 1e6
        flips = np.where(rng.random(n) < p.side_persistence, 1.0, -1.0)
        sides = self.side * np.cumprod(flips)
        # order-flow EMA with irregular steps: f_i = a_i f_{i-1} + (1 - a_i) s_i, run in
        # blocks so the cumulative decay never underflows
        a = np.exp(-dts / p.flow_tau_s)
        flow = np.empty(n)
        f = self.flow
        for i in range(n):  # cheap scalar loop (n multiply-adds)
            f = a[i] * f + (1 - a[i]) * sides[i]
            flow[i] = f
        prev_flow = np.concatenate(([self.flow], flow[:-1]))
        drift = p.flow_impact * 1e-4 * prev_flow * dts
        shocks = p.vol_bps_per_sqrt_s * 1e-4 * np.sqrt(dts) * rng.standard_normal(n)
        log_mid = self.log_mid + np.cumsum(drift + shocks)
        mid = np.exp(log_mid)
        half = p.spread_bps * 1e-4 / 2
        price = np.round(mid * (1 + sides * half) / self.tick) * self.tick
        price = np.maximum(price, self.tick)
        notional = p.median_notional * np.exp(p.size_sigma * rng.standard_normal(n))
        qty = np.maximum(np.round(notional / mid, 8), 1e-8)
        decimals = max(0, -int(math.floor(math.log10(self.tick) + 1e-9)))
        sym = self.symbol
        nid = self.next_id
        buf = self.buf
        for i, (ts, pr, q, s) in enumerate(zip(t_us.tolist(), price.tolist(), qty.tolist(), sides.tolist(),
                                               strict=True)):
            buf.append(Trade(sym, nid + i, ts, round(pr, decimals), q, "buy" if s > 0 else "sell",
                             "market" if i % 3 else "limit"))
        self.next_id += n
        self.t_us = int(t_us[-1])
        self.flow = float(flow[-1])
        self.side = float(sides[-1])
        self.log_mid = float(log_mid[-1])

    def head_ts(self) -> int:
        if not self.buf:
            self.generate()
        return self.buf[0].ts_us


class MarketSimulator:
    """Trades of several symbols, merged in event-time order (deterministic)."""

    def __init__(self, symbols: Sequence[str], seed: int, start_us: int = DEFAULT_START_US,
                 params: SimParams = SimParams()) -> None:
        root = np.random.SeedSequence(seed)
        children = root.spawn(len(symbols))
        self.params = params
        self.syms = [_SymbolSim(s, np.random.default_rng(c), start_us, params)
                     for s, c in zip(symbols, children, strict=True)]

    def next_trades(self, max_n: int) -> list[Trade]:
        out: list[Trade] = []
        heap = [(s.head_ts(), i) for i, s in enumerate(self.syms)]
        heapq.heapify(heap)
        while len(out) < max_n:
            _, i = heap[0]
            s = self.syms[i]
            out.append(s.buf.popleft())
            heapq.heapreplace(heap, (s.head_ts(), i))
        return out

    def until(self, end_us: int) -> list[Trade]:
        """Every not-yet-returned trade with event time < ``end_us``."""
        out: list[Trade] = []
        heap = [(s.head_ts(), i) for i, s in enumerate(self.syms)]
        heapq.heapify(heap)
        while heap[0][0] < end_us:
            _, i = heap[0]
            s = self.syms[i]
            out.append(s.buf.popleft())
            heapq.heapreplace(heap, (s.head_ts(), i))
        return out


def write_replay(path: Path, n_trades: int, symbols: Sequence[str], seed: int = 42,
                 start_us: int | None = None, params: SimParams = SimParams()) -> int:
    """Write a replay file (CONTRACT §4) of ``n_trades`` simulated trades: a status line,
    one subscribe ack per symbol, then trade updates (trades of one symbol sharing a
    timestamp in one message, as Kraken does) with a heartbeat now and then."""
    from tickcast.kraken import trades_to_message
    from tickcast.schema import us_to_iso

    start = DEFAULT_START_US if start_us is None else start_us
    sim = MarketSimulator(symbols, seed, start, params)
    dumps = orjson.dumps
    with Path(path).open("wb") as f:
        f.write(dumps({"channel": "status", "type": "update", "data": [
            {"api_version": "v2", "connection_id": 1 << 60, "system": "online", "version": "2.0.0"}]}) + b"\n")
        for s in symbols:
            f.write(dumps({"method": "subscribe", "result": {"channel": "trade", "snapshot": True, "symbol": s},
                           "success": True, "time_in": us_to_iso(start), "time_out": us_to_iso(start)}) + b"\n")
        written = 0
        msgs = 0
        while written < n_trades:
            batch = sim.next_trades(min(50_000, n_trades - written))
            written += len(batch)
            i, n = 0, len(batch)
            lines = []
            while i < n:
                j = i + 1
                t0 = batch[i]
                while j < n and batch[j].symbol == t0.symbol and batch[j].ts_us == t0.ts_us:
                    j += 1
                lines.append(dumps(trades_to_message(batch[i:j])))
                msgs += 1
                if msgs % 997 == 0:
                    lines.append(b'{"channel":"heartbeat"}')
                i = j
            f.write(b"\n".join(lines) + b"\n")
    return written
