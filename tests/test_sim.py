"""The market simulator: deterministic, resumable, and statistically what it claims."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import orjson

from tickcast.kraken import parse_message
from tickcast.sim import MarketSimulator, SimParams, write_replay

START = 1_767_225_600_000_000


def test_same_seed_same_file_other_seed_other_file(tmp_path: Path) -> None:
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    write_replay(a, 5000, ["BTC/USD", "ETH/USD"], seed=1)
    write_replay(b, 5000, ["BTC/USD", "ETH/USD"], seed=1)
    write_replay(c, 5000, ["BTC/USD", "ETH/USD"], seed=2)
    assert a.read_bytes() == b.read_bytes() != c.read_bytes()


def test_replay_file_shape(tmp_path: Path) -> None:
    p = tmp_path / "r.jsonl"
    assert write_replay(p, 20_000, ["BTC/USD", "ETH/USD", "SOL/USD"], seed=3) == 20_000
    kinds: dict[str, int] = {}
    trades = []
    for line in p.read_bytes().splitlines():
        m = orjson.loads(line)
        kind = m.get("channel") or m.get("method")
        kinds[kind] = kinds.get(kind, 0) + 1
        t, dead = parse_message(line, "t", 0)
        assert dead == []
        trades += t
        if kind == "trade":  # one message = one symbol, one timestamp
            assert len({(x.symbol, x.ts_us) for x in t}) == 1
    assert kinds["status"] == 1 and kinds["subscribe"] == 3 and kinds["heartbeat"] > 0
    assert len(trades) == 20_000
    for sym in ("BTC/USD", "ETH/USD", "SOL/USD"):
        ts = [t for t in trades if t.symbol == sym]
        assert [t.trade_id for t in ts] == list(range(1, len(ts) + 1))  # contiguous ids
        assert all(a.ts_us <= b.ts_us for a, b in zip(ts, ts[1:], strict=False))
        assert all(t.price > 0 and t.qty > 0 for t in ts)
    btc = [t.price for t in trades if t.symbol == "BTC/USD"]
    assert all(abs(p * 10 - round(p * 10)) < 1e-6 for p in btc)  # on the 0.1 tick grid


def test_resume_from_pickle_continues_exactly() -> None:
    a = MarketSimulator(["BTC/USD", "ETH/USD"], seed=9, start_us=START)
    a.next_trades(1234)
    b = pickle.loads(pickle.dumps(a))
    assert a.next_trades(5000) == b.next_trades(5000)
    assert a.until(a.syms[0].t_us + 60_000_000) == b.until(b.syms[0].t_us + 60_000_000)


def series(params: SimParams, n: int = 200_000, seed: int = 5) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    ts = MarketSimulator(["BTC/USD"], seed=seed, start_us=START, params=params).next_trades(n)
    t = np.array([x.ts_us for x in ts], dtype=np.int64)
    p = np.array([x.price for x in ts])
    s = np.array([1.0 if x.side == "buy" else -1.0 for x in ts]) * np.array([x.qty for x in ts])
    return t, p, s


def test_bursty_arrivals_and_shared_timestamps() -> None:
    t, _, _ = series(SimParams(), 50_000)
    dt = np.diff(t).astype(float)
    assert dt.std() / dt.mean() > 1.5  # bursts: far more variable than a Poisson process (CV = 1)
    assert 0.05 < np.mean(dt == 0) < 0.2  # several trades at one timestamp, like multi-fill messages
    assert abs(len(t) / ((t[-1] - t[0]) / 1e6) - 50) < 5  # the configured mean rate


def test_bid_ask_bounce_only_with_spread() -> None:
    _, p, _ = series(SimParams(spread_bps=2.0, vol_bps_per_sqrt_s=0.2), 50_000)
    d = np.diff(p)
    assert np.corrcoef(d[1:], d[:-1])[0, 1] < -0.1
    _, p0, _ = series(SimParams(spread_bps=0.0, vol_bps_per_sqrt_s=0.2), 50_000)
    d0 = np.diff(np.log(p0))
    assert abs(np.corrcoef(d0[1:], d0[:-1])[0, 1]) < 0.05


def minute_grid(t: np.ndarray, p: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(order-flow imbalance over the past 60 s, log-return over the next 60 s) per minute."""
    edges = np.arange(t[0], t[-1], 60_000_000)
    idx = np.searchsorted(t, edges, side="left")
    price = p[np.maximum(idx - 1, 0)]
    flow = np.add.reduceat(s, idx)[:-1]
    vol = np.add.reduceat(np.abs(s), idx)[:-1]
    ofi = flow / vol
    ret = np.diff(np.log(price))
    return ofi[:-1], ret[1:]


def test_zero_spread_zero_impact_is_a_martingale() -> None:
    t, p, s = series(SimParams(spread_bps=0.0, flow_impact=0.0, rate=20), 300_000)
    ofi, fwd = minute_grid(t, p, s)
    assert abs(np.corrcoef(ofi, fwd)[0, 1]) < 3 / np.sqrt(len(fwd))  # within 3 standard errors of 0
    assert abs(fwd.mean()) < 3 * fwd.std() / np.sqrt(len(fwd))


def test_flow_impact_plants_a_learnable_signal() -> None:
    t, p, s = series(SimParams(flow_impact=2.0, rate=20), 300_000)
    ofi, fwd = minute_grid(t, p, s)
    assert np.corrcoef(ofi, fwd)[0, 1] > 3 / np.sqrt(len(fwd))  # more than 3 standard errors above 0
