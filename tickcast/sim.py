"""A deterministic market simulator producing Kraken-v2-shaped trades.

Each symbol is simulated on its own event clock, in chunks of :data:`CHUNK` trades
vectorised with numpy, and the symbols are merged in event-time order.

* **Arrivals come in bursts.** A two-regime (calm / burst) Markov-modulated
  process: runs of on average ``burst_len`` trades arrive ``burst_ratio`` times
  faster than the ``calm_len`` trades between them, so inter-arrival times are far
  more variable than a Poisson process's (coefficient of variation > 1) and short
  gaps follow short gaps. With probability ``same_ts_prob`` a trade is one more fill
  of the previous taker order: same timestamp, side and order type (Kraken sends
  those in one message).
* **Order flow is autocorrelated.** A new taker order copies the previous order's
  side with probability ``side_persistence``; otherwise its side is drawn from a
  slowly varying buy pressure (an Ornstein-Uhlenbeck log-odds with stationary
  standard deviation ``pressure_sd`` and time constant ``pressure_tau_s``), so the
  order-flow imbalance of a minute varies the way real markets' does.
* **Sizes** are log-normal in notional (median ``median_notional`` quote units,
  log-sd ``size_sigma``); ``qty`` is rounded to 8 decimals and always > 0.
* **The mid** is a random walk in log-price with ``vol_bps_per_sqrt_s`` in calendar
  time. When ``flow_impact > 0`` it also drifts by ``flow_impact`` bps per second
  times the recent order-flow imbalance ``ofi`` (notional-weighted, exponentially
  decayed with ``flow_tau_s``, in ``[-1, 1]``): a planted, learnable dependence of
  the next minute's return on the last minute's imbalance. The drift between two
  trades uses only the imbalance of trades before it (causal).
* **Exogenous drift (optional).** ``drift(symbol, t_us) -> bps per second`` (vectorised
  over an array of times) adds a drift to the mid between two trades, evaluated at the
  earlier trade's time (causal). :func:`tickcast.news.sim.planted_drift` uses it to make
  prices move with news sentiment. It is not part of :meth:`MarketSimulator.state`
  (pass it again after :meth:`MarketSimulator.from_state`); without it (the default)
  the output is exactly what it was before the hook existed.
* **Prices.** Taker buys print at the ask, taker sells at the bid, on the symbol's
  tick grid (bid-ask bounce). With ``spread_bps == 0`` a trade prints at the mid
  rounded to the nearest tick.

Leakage self-test: with ``spread_bps=0`` and ``flow_impact=0`` the log trade price is
a driftless random walk (up to tick rounding: 0.1 on 60000 for BTC/USD, far below a
minute's move), independent of everything else the stream carries: no honest model
can beat persistence on it.

Contracts: times are integer microseconds since the epoch, UTC; trades come in
event-time order, ties broken by symbol (in the order given) and then by
``trade_id``; ``trade_id`` counts 1, 2, 3, ... per symbol; a symbol's stream depends
only on ``(seed, symbol, start_us, params)``, not on the other symbols nor on how
the trades are requested (``next_trades`` / ``until`` / a snapshot and restore in
between). Identical output needs the same numpy version (its Generator's
distributions may change between releases).

>>> sim = MarketSimulator(["BTC/USD", "ETH/USD"], seed=1, start_us=DEFAULT_START_US)
>>> ts = sim.next_trades(1000)
>>> len(ts), sorted({t.symbol for t in ts}), all(a.ts_us <= b.ts_us for a, b in zip(ts, ts[1:]))
(1000, ['BTC/USD', 'ETH/USD'], True)
>>> [t.trade_id for t in ts if t.symbol == "BTC/USD"][:3]
[1, 2, 3]
>>> copy = MarketSimulator.from_state(sim.state())    # or pickle.loads(pickle.dumps(sim))
>>> copy.until(ts[-1].ts_us + 60_000_000) == sim.until(ts[-1].ts_us + 60_000_000)
True
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Final, NamedTuple

import numpy as np
import orjson

from tickcast.replay import write_atomically
from tickcast.schema import Trade, us_to_iso

DEFAULT_START_US: Final = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z: reproducible files
CHUNK: Final = 8192  # trades generated per symbol at a time; part of the determinism contract
STATE_VERSION: Final = 1
_KNOWN: Final = {"BTC/USD": (60_000.0, 1), "ETH/USD": (3_000.0, 2)}  # start price, tick decimals
_MAX_DECAY: Final = 50.0  # an EMA step forgets at most e^-50 (== everything) of the past
_SIDES: Final = ("sell", "buy")  # index: side code (0 sell, 1 buy)
_ORD_TYPES: Final = ("limit", "market")


@dataclass(frozen=True)
class SimParams:
    """Per-run knobs of the simulator (all defaults are BTC-on-Kraken-like)."""

    rate: float = 50.0  # mean trades per second per symbol
    spread_bps: float = 1.0  # bid-ask spread; 0 = trades print at the mid
    vol_bps_per_sqrt_s: float = 1.0  # mid volatility in calendar time (BTC: ~0.5-1)
    flow_impact: float = 0.0  # mid drift, bps per second per unit of `ofi` (0 = no signal)
    flow_tau_s: float = 30.0  # decay time constant of that order-flow imbalance
    burst_ratio: float = 15.0  # orders arrive this many times faster inside a burst
    burst_len: float = 40.0  # mean trades per burst
    calm_len: float = 80.0  # mean trades between bursts
    same_ts_prob: float = 0.25  # P(a trade is another fill of the previous taker order)
    side_persistence: float = 0.5  # P(a new taker order copies the previous one's side)
    pressure_sd: float = 0.5  # stationary sd of the latent buy-pressure log-odds
    pressure_tau_s: float = 120.0  # its time constant
    median_notional: float = 300.0  # quote currency per trade, median
    size_sigma: float = 1.2  # log-normal sigma of the notional
    market_share: float = 0.3  # P(a taker order is a market order, else a marketable limit)

    def __post_init__(self) -> None:
        def need(ok: bool, name: str, what: str) -> None:
            if not ok:
                raise ValueError(f"SimParams.{name} must be {what}; got {getattr(self, name)!r}")

        for f in fields(self):
            v = getattr(self, f.name)
            need(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v),
                 f.name, "a finite number")
        for name in ("rate", "flow_tau_s", "burst_ratio", "pressure_tau_s", "median_notional"):
            need(getattr(self, name) > 0, name, "> 0")
        for name in ("spread_bps", "vol_bps_per_sqrt_s", "flow_impact", "pressure_sd", "size_sigma"):
            need(getattr(self, name) >= 0, name, ">= 0")
        for name in ("burst_len", "calm_len"):
            need(getattr(self, name) >= 1, name, ">= 1 (trades)")
        need(0 <= self.same_ts_prob < 1, "same_ts_prob", "in [0, 1)")
        need(0 <= self.side_persistence < 1, "side_persistence", "in [0, 1)")
        need(0 <= self.market_share <= 1, "market_share", "in [0, 1]")
        need(self.spread_bps < 10_000, "spread_bps", "< 10000")


class TradeColumns(NamedTuple):
    """Trades as columns (what :meth:`MarketSimulator.next_columns` returns).

    ``symbol`` indexes ``MarketSimulator.symbols``; ``side`` is 1 for a taker buy and
    0 for a taker sell; ``ord_type`` is 1 for "market" and 0 for "limit"."""

    symbol: np.ndarray  # int16
    trade_id: np.ndarray  # int64
    ts_us: np.ndarray  # int64
    price: np.ndarray  # float64
    qty: np.ndarray  # float64
    side: np.ndarray  # int8
    ord_type: np.ndarray  # int8

    @property
    def size(self) -> int:
        """The number of trades."""
        return int(self.ts_us.size)

    def to_trades(self, symbols: Sequence[str]) -> list[Trade]:
        sym = [symbols[i] for i in self.symbol.tolist()]
        side = [_SIDES[i] for i in self.side.tolist()]
        ord_type = [_ORD_TYPES[i] for i in self.ord_type.tolist()]
        return list(map(Trade, sym, self.trade_id.tolist(), self.ts_us.tolist(), self.price.tolist(),
                        self.qty.tolist(), side, ord_type))


def _symbol_hash(symbol: str) -> int:
    return int.from_bytes(hashlib.sha256(symbol.encode()).digest()[:8], "big")


def start_price_and_tick(symbol: str) -> tuple[float, float]:
    """``(start price, tick size)``: BTC/USD 60000 / 0.1, ETH/USD 3000 / 0.01, any other
    symbol a stable price in [50, 200) from a hash of its name with a tick of 1e-4 of
    the price rounded to a power of ten.

    >>> start_price_and_tick("BTC/USD"), start_price_and_tick("SOL/USD")[1]
    ((60000.0, 0.1), 0.01)
    """
    price, dec = _price_and_decimals(symbol)
    return price, 10.0**-dec


def _price_and_decimals(symbol: str) -> tuple[float, int]:
    if symbol in _KNOWN:
        return _KNOWN[symbol]
    u = (_symbol_hash(symbol) >> 11) / 2**53
    raw = 50.0 * 4.0**u
    dec = -round(math.log10(raw * 1e-4))
    return float(_on_grid(np.array([raw]), dec, np.rint)[0]), dec


def _on_grid(x: np.ndarray, dec: int, how: Any) -> np.ndarray:
    """Round to the grid 10**-dec; the results are the doubles nearest the decimal
    literals (so they print as e.g. 59996.6, not 59996.600000000006)."""
    if dec >= 0:
        scale = 10.0**dec
        return np.asarray(how(x * scale) / scale)
    scale = 10.0**-dec
    return np.asarray(how(x / scale) * scale)


def _linear_scan(decay: np.ndarray, b: np.ndarray, x0: float) -> np.ndarray:
    """``x[i] = exp(-decay[i]) * x[i-1] + b[i]`` with ``x[-1] = x0``, vectorised; ``decay >= 0``.

    Computes ``A_i * (x0 + cumsum(b / A))`` with ``A`` the running product of the
    factors, rebased every e^-500 so nothing overflows (a single step decays by at
    most e^-50, which forgets the past anyway)."""
    n = decay.size
    out = np.empty(n)
    if n == 0:
        return out
    cum = np.cumsum(np.minimum(decay, _MAX_DECAY))
    seg = (cum // 500.0).astype(np.int64)
    bounds = [0, *(np.flatnonzero(np.diff(seg)) + 1).tolist(), n]
    x = x0
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        base = cum[lo - 1] if lo else 0.0
        growth = np.exp(cum[lo:hi] - base)  # 1 / A, at most e^550
        out[lo:hi] = (x + np.cumsum(b[lo:hi] * growth)) / growth
        x = float(out[hi - 1])
    return out


@dataclass
class _SymState:
    """Everything one symbol's next chunk depends on (plain values: picklable, JSON-able)."""

    rng: dict[str, Any]  # numpy PCG64 bit-generator state
    t_us: int  # time of the last generated trade (start_us before the first)
    log_mid: float
    regime: int  # 1 = burst, 0 = calm
    side: int  # side code of the last trade
    ord_type: int  # order-type code of the last trade
    pressure: float  # latent buy-pressure log-odds
    flow_num: float  # decayed sum of signed notional
    flow_den: float  # decayed sum of notional
    next_id: int


class _Stream:
    """One symbol's trades: generated chunk by chunk, buffered until taken."""

    def __init__(self, symbol: str, params: SimParams, st: _SymState) -> None:
        self.symbol = symbol
        self.p = params
        _, self.dec = _price_and_decimals(symbol)
        self.tick = 10.0**-self.dec
        self.st = st
        self.drift: Callable[[str, np.ndarray], np.ndarray] | None = None
        self.cols: list[np.ndarray] = [np.empty(0, np.int64), np.empty(0), np.empty(0),
                                       np.empty(0, np.int8), np.empty(0, np.int8)]
        self.first_id = st.next_id  # trade_id of cols[...][0]
        self.pos = 0  # trades of the buffer already taken
        self.chunks: list[tuple[int, _SymState]] = []  # (buffer offset, state it was made from)

    # -- the model ---------------------------------------------------------------------

    def _generate(self, n: int) -> list[np.ndarray]:
        p, st = self.p, self.st
        rng = np.random.Generator(np.random.PCG64())
        rng.bit_generator.state = st.rng
        first_ever = st.next_id == 1

        # regimes: alternating geometric runs (memoryless, so a chunk may start a fresh run)
        mean_run = (p.burst_len + p.calm_len) / 2
        regs: list[np.ndarray] = []
        runs: list[np.ndarray] = []
        total, r0 = 0, st.regime
        while total < n:
            k = 2 * (int(n / mean_run) + 8)
            reg = (r0 + np.arange(k)) % 2
            lens = rng.geometric(1.0 / np.where(reg == 1, p.burst_len, p.calm_len))
            regs.append(reg)
            runs.append(lens)
            total += int(lens.sum())
            r0 = 1 - int(reg[-1])
        regime = np.repeat(np.concatenate(regs), np.concatenate(runs))[:n]

        # arrival times: continuation fills share the previous trade's timestamp
        cont = rng.random(n) < p.same_ts_prob
        if first_ever:
            cont[0] = False
        order_rate = p.rate * (1 - p.same_ts_prob)
        share_burst = p.burst_len / (p.burst_len + p.calm_len)
        mean_burst = 1.0 / (order_rate * (share_burst + (1 - share_burst) * p.burst_ratio))
        mean_dt = np.where(regime == 1, mean_burst, mean_burst * p.burst_ratio)
        dt_us = np.maximum(np.rint(rng.exponential(1.0, n) * mean_dt * 1e6), 1.0).astype(np.int64)
        dt_us[cont] = 0
        ts = st.t_us + np.cumsum(dt_us)
        dts = dt_us * 1e-6

        # latent buy pressure (OU in log-odds), then sides with persistence
        decay = dts / p.pressure_tau_s
        noise = p.pressure_sd * np.sqrt(-np.expm1(-2 * decay)) * rng.standard_normal(n)
        pressure = _linear_scan(decay, noise, st.pressure)
        prob_buy = 1.0 / (1.0 + np.exp(-pressure))
        fresh = ~cont & (rng.random(n) >= p.side_persistence)
        fresh_side = (rng.random(n) < prob_buy).astype(np.int8)
        side = _carry(fresh, fresh_side, st.side)
        ord_type = _carry(~cont, (rng.random(n) < p.market_share).astype(np.int8), st.ord_type)

        # sizes, order-flow imbalance (notional-weighted EMA) and the mid
        notional = p.median_notional * np.exp(p.size_sigma * rng.standard_normal(n))
        sign = 2.0 * side - 1.0
        decay = dts / p.flow_tau_s
        num = _linear_scan(decay, sign * notional, st.flow_num)
        den = _linear_scan(decay, notional, st.flow_den)
        prev_num = np.concatenate(([st.flow_num], num[:-1]))
        prev_den = np.concatenate(([st.flow_den], den[:-1]))
        ofi_before = np.divide(prev_num, prev_den, out=np.zeros(n), where=prev_den > 0)
        step = p.vol_bps_per_sqrt_s * 1e-4 * np.sqrt(dts) * rng.standard_normal(n)
        if p.flow_impact:
            step += p.flow_impact * 1e-4 * ofi_before * dts
        if self.drift is not None:
            step += np.asarray(self.drift(self.symbol, ts - dt_us), dtype=float) * 1e-4 * dts
        log_mid = st.log_mid + np.cumsum(step)
        mid = np.exp(log_mid)

        # prices on the tick grid: ask = ceil(mid * (1 + h)), bid = floor(mid * (1 - h))
        if p.spread_bps > 0:
            h = p.spread_bps * 1e-4 / 2
            price = np.where(side == 1, _on_grid(mid * (1 + h), self.dec, np.ceil),
                             _on_grid(mid * (1 - h), self.dec, np.floor))
        else:
            price = _on_grid(mid, self.dec, np.rint)
        price = np.maximum(price, self.tick)
        qty = np.maximum(np.round(notional / mid, 8), 1e-8)

        self.st = _SymState(
            rng=dict(rng.bit_generator.state), t_us=int(ts[-1]), log_mid=float(log_mid[-1]),
            regime=int(regime[-1]), side=int(side[-1]), ord_type=int(ord_type[-1]),
            pressure=float(pressure[-1]), flow_num=float(num[-1]), flow_den=float(den[-1]),
            next_id=st.next_id + n)
        return [ts, price, qty, side, ord_type]

    # -- buffering -----------------------------------------------------------------------

    def extend(self) -> None:
        """Generate the next chunk, dropping chunks already taken in full."""
        keep = 0
        for off, _ in self.chunks:
            if off <= self.pos:
                keep = off
        if keep:
            self.cols = [c[keep:] for c in self.cols]
            self.first_id += keep
            self.pos -= keep
            self.chunks = [(off - keep, s) for off, s in self.chunks if off >= keep]
        self.chunks.append((len(self.cols[0]), self.st))
        new = self._generate(CHUNK)
        self.cols = [np.concatenate((c, x)) for c, x in zip(self.cols, new, strict=True)]

    def export(self) -> dict[str, Any]:
        """The smallest state that regenerates this stream from the next untaken trade."""
        size = len(self.cols[0])
        if self.pos >= size:
            return {"state": asdict(self.st), "skip": 0}
        off, st = max((c for c in self.chunks if c[0] <= self.pos), key=lambda c: c[0])
        return {"state": asdict(st), "skip": self.pos - off}

    @classmethod
    def restore(cls, symbol: str, params: SimParams, saved: dict[str, Any]) -> _Stream:
        s = cls(symbol, params, _SymState(**saved["state"]))
        if saved["skip"]:
            s.extend()
            s.pos = int(saved["skip"])
        return s


def _carry(new: np.ndarray, values: np.ndarray, before: int) -> np.ndarray:
    """``values`` where ``new``, else the last new value (``before`` if none yet)."""
    idx = np.maximum.accumulate(np.where(new, np.arange(new.size), -1))
    return np.where(idx >= 0, values[np.maximum(idx, 0)], before).astype(np.int8)


class MarketSimulator:
    """Trades of several symbols, merged in event-time order (deterministic, resumable).

    ``start_us``: trades start strictly after this instant. Snapshots: :meth:`state`
    returns plain Python values (about 1 kB per symbol; ``json``-serialisable with the
    standard library, which keeps the 128-bit generator state exact) and
    :meth:`from_state` resumes exactly; pickling uses the same state, so a pickled
    simulator is small however many trades it has buffered."""

    def __init__(self, symbols: Sequence[str], seed: int, start_us: int = DEFAULT_START_US,
                 params: SimParams = SimParams(),
                 drift: Callable[[str, np.ndarray], np.ndarray] | None = None) -> None:
        symbols = list(symbols)
        if not symbols or len(set(symbols)) != len(symbols) or not all(
                isinstance(s, str) and s for s in symbols):
            raise ValueError(f"symbols must be distinct non-empty strings, at least one; got {symbols!r}")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be an int >= 0; got {seed!r}")
        if isinstance(start_us, bool) or not isinstance(start_us, int):
            raise ValueError(f"start_us must be an int (µs since the epoch); got {start_us!r}")
        self.symbols = symbols
        self.seed = seed
        self.start_us = start_us
        self.params = params
        self._streams = [_Stream(s, params, self._initial(s)) for s in symbols]
        self.set_drift(drift)

    def set_drift(self, drift: Callable[[str, np.ndarray], np.ndarray] | None) -> None:
        """Set (or clear, with None) the exogenous drift for trades generated from now on."""
        for s in self._streams:
            s.drift = drift

    def _initial(self, symbol: str) -> _SymState:
        ss = np.random.SeedSequence([self.seed, _symbol_hash(symbol)])
        rng = np.random.Generator(np.random.PCG64(ss))
        price, _ = _price_and_decimals(symbol)
        return _SymState(rng=dict(rng.bit_generator.state), t_us=self.start_us, log_mid=math.log(price),
                         regime=0, side=int(rng.random() < 0.5), ord_type=0,
                         pressure=float(self.params.pressure_sd * rng.standard_normal()),
                         flow_num=0.0, flow_den=0.0, next_id=1)

    # -- taking trades ---------------------------------------------------------------------

    def next_trades(self, max_n: int) -> list[Trade]:
        """The next ``max_n`` trades (all symbols, event-time order)."""
        return self.next_columns(max_n).to_trades(self.symbols)

    def until(self, end_us: int) -> list[Trade]:
        """Every trade with event time < ``end_us`` not returned yet."""
        return self.until_columns(end_us).to_trades(self.symbols)

    def next_columns(self, max_n: int) -> TradeColumns:
        """:meth:`next_trades` as numpy columns (fast: no per-trade objects)."""
        if max_n < 0:
            raise ValueError(f"max_n must be >= 0; got {max_n}")
        streams = self._streams
        while True:
            # every trade before `horizon` is buffered: later ones are at >= each stream's t_us
            horizon = min(s.st.t_us for s in streams)
            avail = sum(_count_before(s, horizon) for s in streams)
            if avail >= max_n:
                return self._take(horizon, max_n)
            min(streams, key=lambda s: s.st.t_us).extend()

    def until_columns(self, end_us: int) -> TradeColumns:
        """:meth:`until` as numpy columns."""
        for s in self._streams:
            while s.st.t_us < end_us:
                s.extend()
        return self._take(end_us, None)

    def _take(self, before_us: int, max_n: int | None) -> TradeColumns:
        parts = []
        for i, s in enumerate(self._streams):
            k = _count_before(s, before_us)
            if max_n is not None:
                k = min(k, max_n)  # only a stream's first max_n trades can be among the first max_n
            lo = s.pos
            ts, price, qty, side, ord_type = (c[lo:lo + k] for c in s.cols)
            ids = np.arange(s.first_id + lo, s.first_id + lo + k, dtype=np.int64)
            parts.append((np.full(k, i, np.int16), ids, ts, price, qty, side, ord_type))
        cols = [np.concatenate(c) for c in zip(*parts, strict=True)]
        order = np.argsort(cols[2], kind="stable")  # ties: symbol order, then trade_id
        if max_n is not None:
            order = order[:max_n]
        out = TradeColumns(*(c[order] for c in cols))
        taken = np.bincount(out.symbol, minlength=len(self._streams))
        for s, k in zip(self._streams, taken.tolist(), strict=True):
            s.pos += k
        return out

    # -- snapshots ---------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """A snapshot of plain Python values; :meth:`from_state` resumes exactly."""
        return {"version": STATE_VERSION, "symbols": list(self.symbols), "seed": self.seed,
                "start_us": self.start_us, "params": asdict(self.params),
                "streams": [s.export() for s in self._streams]}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> MarketSimulator:
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"simulator state version must be {STATE_VERSION}; got {state.get('version')!r}")
        sim = cls.__new__(cls)
        sim.__setstate__(state)
        return sim

    def __getstate__(self) -> dict[str, Any]:
        return self.state()

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.symbols = list(state["symbols"])
        self.seed = state["seed"]
        self.start_us = state["start_us"]
        self.params = SimParams(**state["params"])
        self._streams = [_Stream.restore(sym, self.params, saved)
                         for sym, saved in zip(self.symbols, state["streams"], strict=True)]


def _count_before(s: _Stream, before_us: int) -> int:
    return int(np.searchsorted(s.cols[0][s.pos:], before_us, side="left"))


# -- replay files ------------------------------------------------------------------------------

_HEARTBEAT: Final = b'{"channel":"heartbeat"}\n'
_MSG_HEAD: Final = b'{"channel":"trade","type":"update","data":['
_REPLAY_BATCH: Final = 100_000  # trades formatted at a time


def _tokens(a: np.ndarray, suffix: bytes = b"") -> list[bytes]:
    """Each element as orjson writes it (the same bytes as ``trades_to_message`` + orjson),
    followed by ``suffix``."""
    if a.size == 0:
        return []
    raw = orjson.dumps(a, option=orjson.OPT_SERIALIZE_NUMPY)[1:-1]
    if suffix:  # the suffix may hold commas: split on a byte no JSON number holds
        return (raw.replace(b",", suffix + b"\x00") + suffix).split(b"\x00")
    return raw.split(b",")


def _format_trades(c: TradeColumns, symbols: Sequence[str], starts: np.ndarray, prev_open: bool,
                   close_last: bool, heartbeats: np.ndarray) -> bytes:
    """JSON lines of trade messages.

    ``starts`` flags each message's first trade, ``heartbeats`` how many heartbeat
    lines go before it; ``prev_open``: the previous call left a message open (it is
    closed first); ``close_last``: close the last message. Pieces are joined by one
    ``bytes.join``: a message's closing bytes are written with the next trade's head."""
    n = c.size
    if n == 0:
        return b'"}]}\n' if prev_open and close_last else b""
    # head of a trade = what closes the previous trade + its own opening, by
    # (symbol, side, starts a message)
    heads = []
    for sym in symbols:
        for side in _SIDES:
            head = b'{"symbol":' + orjson.dumps(sym) + b',"side":"' + side.encode() + b'","price":'
            heads += [b'"},' + head, b'"}]}\n' + _MSG_HEAD + head]
    code = (c.symbol.astype(np.int64) * 2 + c.side) * 2 + starts
    col_head = np.array(heads, dtype=object)[code]
    if not prev_open:  # nothing to close before the first trade
        col_head[0] = col_head[0][len(b'"}]}\n'):]
    for j in np.flatnonzero(heartbeats).tolist():
        h = col_head[j]
        cut = h.index(_MSG_HEAD)
        col_head[j] = h[:cut] + _HEARTBEAT * int(heartbeats[j]) + h[cut:]
    mids = np.array([b',"ord_type":"' + o.encode() + b'","trade_id":' for o in _ORD_TYPES], dtype=object)
    # timestamps: the date and second once per distinct second, then the microseconds
    sec = c.ts_us // 1_000_000
    new_sec = np.empty(n, dtype=bool)
    new_sec[0] = True
    new_sec[1:] = sec[1:] != sec[:-1]
    uniq = sec[new_sec]
    prefix = np.array([b',"timestamp":"' + s.encode() + b"." for s in
                       np.datetime_as_string(uniq.astype("datetime64[s]"), unit="s").tolist()], dtype=object)
    # microseconds zero-padded: print 1_000_000 + us and drop the leading "1"
    raw = orjson.dumps(c.ts_us % 1_000_000 + 1_000_000, option=orjson.OPT_SERIALIZE_NUMPY)[2:-1]
    micro = (raw.replace(b",1", b'Z,') + b"Z").split(b",")
    out = np.empty((n, 7), dtype=object)
    out[:, 0] = col_head
    out[:, 1] = _tokens(c.price, b',"qty":')
    out[:, 2] = _tokens(c.qty)
    out[:, 3] = mids[c.ord_type]
    out[:, 4] = _tokens(c.trade_id)
    out[:, 5] = prefix[np.cumsum(new_sec) - 1]
    out[:, 6] = micro
    body = b"".join(out.ravel().tolist())
    return body + b'"}]}\n' if close_last else body


def write_replay(path: str | Path, n_trades: int, symbols: Sequence[str], seed: int = 42,
                 start_us: int | None = None, params: SimParams = SimParams(),
                 max_trades_per_message: int | None = None) -> int:
    """Write a replay file of ``n_trades`` simulated trades; returns the count written.

    JSON Lines in Kraken WS v2 shape: a ``status`` line, one ``subscribe`` ack per
    symbol, then ``trade`` ``update`` messages in event-time order (the trades of one
    symbol sharing one timestamp go in one message, as Kraken sends them, at most
    ``max_trades_per_message`` per message when given), with a ``heartbeat`` line for
    every second of event time that passes. ``start_us`` defaults to
    :data:`DEFAULT_START_US` (2026-01-01T00:00:00Z), so a seed names one file,
    byte for byte. The trade messages are byte-identical to the lines of
    :func:`tickcast.replay.trade_lines` (``max_per_message=max_trades_per_message``),
    formatted here with numpy; the file is written atomically.
    """
    if n_trades < 0:
        raise ValueError(f"n_trades must be >= 0; got {n_trades}")
    if max_trades_per_message is not None and max_trades_per_message < 1:
        raise ValueError(f"max_trades_per_message must be >= 1; got {max_trades_per_message}")
    start = DEFAULT_START_US if start_us is None else start_us
    sim = MarketSimulator(symbols, seed, start, params)
    conn_id = (_symbol_hash(f"tickcast-sim:{seed}") | (1 << 62)) & ((1 << 63) - 1)  # > 2^53, as Kraken's
    dumps = orjson.dumps
    cap = max_trades_per_message or 0
    written = 0
    last_sec = start // 1_000_000  # event-time second of the last message written
    prev: tuple[int, int, int] | None = None  # symbol, ts_us, position in its message

    def chunks() -> Iterator[bytes]:
        nonlocal written, last_sec, prev
        yield dumps({"channel": "status", "type": "update", "data": [
            {"version": "2.0.10", "system": "online", "api_version": "v2", "connection_id": conn_id}]}) + b"\n"
        for s in sim.symbols:
            yield dumps({"method": "subscribe", "result": {"channel": "trade", "snapshot": False, "symbol": s},
                         "success": True, "time_in": us_to_iso(start - 31), "time_out": us_to_iso(start)}) + b"\n"
        while written < n_trades:
            c = sim.next_columns(min(_REPLAY_BATCH, n_trades - written))
            n = c.size
            written += n
            # a message starts at a new (symbol, timestamp) run, or when it is full
            starts = np.ones(n, dtype=bool)
            starts[1:] = (c.symbol[1:] != c.symbol[:-1]) | (c.ts_us[1:] != c.ts_us[:-1])
            if prev is not None:
                starts[0] = (int(c.symbol[0]), int(c.ts_us[0])) != prev[:2]
            if cap:
                run_start = np.flatnonzero(starts)
                pos = np.arange(n) - run_start[np.maximum(np.cumsum(starts) - 1, 0)]
                if not starts[0]:  # the run began in the previous batch
                    k = int(run_start[0]) if run_start.size else n
                    pos[:k] = np.arange(k) + prev[2] + 1  # type: ignore[index]
                starts |= pos % cap == 0
            else:
                pos = np.zeros(n, dtype=np.int64)
            first = np.flatnonzero(starts)
            heartbeats = np.zeros(n, dtype=np.int64)
            if first.size:
                msg_sec = c.ts_us[first] // 1_000_000
                heartbeats[first] = np.diff(msg_sec, prepend=last_sec)
                last_sec = int(msg_sec[-1])
            yield _format_trades(c, sim.symbols, starts.astype(np.int64), prev is not None,
                                 written >= n_trades, heartbeats)
            prev = (int(c.symbol[-1]), int(c.ts_us[-1]), int(pos[-1]))

    write_atomically(Path(path), chunks())
    return written
