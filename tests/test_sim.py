"""The market simulator: deterministic, resumable, Kraken-shaped, and statistically
what it claims (fixed seeds, so every statistical check is deterministic; each
tolerance is stated where it is used)."""

from __future__ import annotations

import json
import math
import pickle
from pathlib import Path

import numpy as np
import orjson
import pytest

import tickcast.sim as sim_mod
from tickcast.kraken import parse_message, trades_to_message
from tickcast.replay import trade_lines
from tickcast.schema import Trade
from tickcast.sim import (
    CHUNK,
    DEFAULT_START_US,
    MarketSimulator,
    SimParams,
    TradeColumns,
    start_price_and_tick,
    write_replay,
)

SYMS = ["BTC/USD", "ETH/USD", "SOL/USD"]


# -- determinism and resumption ------------------------------------------------------------


def test_same_seed_same_file_other_seed_other_file(tmp_path: Path) -> None:
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    write_replay(a, 5000, ["BTC/USD", "ETH/USD"], seed=1)
    write_replay(b, 5000, ["BTC/USD", "ETH/USD"], seed=1)
    write_replay(c, 5000, ["BTC/USD", "ETH/USD"], seed=2)
    assert a.read_bytes() == b.read_bytes() != c.read_bytes()
    assert MarketSimulator(SYMS, 7).next_trades(3000) == MarketSimulator(SYMS, 7).next_trades(3000)
    assert MarketSimulator(SYMS, 7).next_trades(3000) != MarketSimulator(SYMS, 8).next_trades(3000)


def test_how_trades_are_requested_does_not_change_them() -> None:
    ref = MarketSimulator(SYMS, 3).next_trades(40_000)
    sim = MarketSimulator(SYMS, 3)
    got: list[Trade] = []
    rng = np.random.default_rng(0)
    while len(got) < len(ref):
        if rng.random() < 0.5:
            got += sim.next_trades(int(rng.integers(0, 3000)))
        else:  # until(): everything before an instant a little ahead of the last trade
            last = got[-1].ts_us if got else DEFAULT_START_US
            got += sim.until(last + int(rng.integers(0, 20_000_000)))
    assert got[: len(ref)] == ref


@pytest.mark.parametrize("taken", [0, 1, 1234, CHUNK, 3 * CHUNK + 5])
def test_resume_from_state_or_pickle_continues_exactly(taken: int) -> None:
    never_stopped = MarketSimulator(SYMS, 9)
    never_stopped.next_trades(taken)
    snap = MarketSimulator(SYMS, 9)
    snap.next_trades(taken)
    state = json.loads(json.dumps(snap.state()))  # plain values: survives JSON (stdlib)
    blob = pickle.dumps(snap)
    assert len(blob) < 4000  # the snapshot holds no buffered trades
    expected = never_stopped.next_trades(5000)
    for resumed in (MarketSimulator.from_state(state), pickle.loads(blob), snap):  # snap: state() is harmless
        assert resumed.next_trades(5000) == expected
    # and through until(), across a resume in the middle of a chunk
    a, b = pickle.loads(blob), pickle.loads(blob)
    end = DEFAULT_START_US + 600_000_000
    first = a.until(end - 123_456_789)
    b2 = MarketSimulator.from_state(b.state())
    assert first + a.until(end) == b2.until(end)


def test_a_symbols_stream_does_not_depend_on_the_other_symbols() -> None:
    alone = MarketSimulator(["BTC/USD"], 4).next_trades(5000)
    mixed = MarketSimulator(["ETH/USD", "BTC/USD"], 4).next_trades(20_000)
    assert [t for t in mixed if t.symbol == "BTC/USD"][:5000] == alone


# -- the shape of the trades --------------------------------------------------------------


def test_ids_contiguous_time_ordered_prices_on_the_tick_grid() -> None:
    sim = MarketSimulator(SYMS, 5)
    cols = sim.next_columns(60_000)
    trades = cols.to_trades(sim.symbols)
    assert all(a.ts_us <= b.ts_us for a, b in zip(trades, trades[1:], strict=False))  # event time
    assert trades[0].ts_us > DEFAULT_START_US
    for sym in SYMS:
        ts = [t for t in trades if t.symbol == sym]
        assert [t.trade_id for t in ts] == list(range(1, len(ts) + 1))
        start, tick = start_price_and_tick(sym)
        dec = round(-math.log10(tick))
        assert all(t.price > 0 and round(t.price, dec) == t.price for t in ts)  # on the grid
        assert all(t.qty > 0 and round(t.qty, 8) == t.qty for t in ts)
        assert abs(ts[0].price / start - 1) < 0.01
        assert {t.side for t in ts} == {"buy", "sell"} and {t.ord_type for t in ts} == {"limit", "market"}
    assert start_price_and_tick("BTC/USD") == (60_000.0, 0.1)
    assert start_price_and_tick("ETH/USD") == (3_000.0, 0.01)
    assert 50 <= start_price_and_tick("SOL/USD")[0] < 200
    assert start_price_and_tick("SOL/USD") == start_price_and_tick("SOL/USD")  # stable hash, not hash()


def test_bad_knobs_are_precise_errors() -> None:
    with pytest.raises(ValueError, match=r"SimParams.rate must be > 0; got 0"):
        SimParams(rate=0)
    with pytest.raises(ValueError, match=r"SimParams.same_ts_prob must be in \[0, 1\); got 1.0"):
        SimParams(same_ts_prob=1.0)
    with pytest.raises(ValueError, match="seed must be an int >= 0"):
        MarketSimulator(["BTC/USD"], -1)
    with pytest.raises(ValueError, match="distinct"):
        MarketSimulator(["BTC/USD", "BTC/USD"], 1)


def test_extreme_knobs_stay_finite() -> None:
    slow = MarketSimulator(["BTC/USD"], 1, params=SimParams(rate=0.001, vol_bps_per_sqrt_s=5,
                                                             flow_impact=1.0)).next_columns(3 * CHUNK)
    assert np.all(np.isfinite(slow.price)) and np.all(slow.price > 0) and np.all(np.diff(slow.ts_us) >= 0)
    flat = MarketSimulator(["ETH/USD"], 1, params=SimParams(vol_bps_per_sqrt_s=0, spread_bps=0)).next_columns(5000)
    assert set(flat.price.tolist()) == {3000.0}


# -- the statistics it claims -------------------------------------------------------------


def columns(params: SimParams, n: int, seed: int = 5) -> TradeColumns:
    return MarketSimulator(["BTC/USD"], seed, params=params).next_columns(n)


def test_bursty_arrivals_and_multi_fill_timestamps() -> None:
    c = columns(SimParams(), 100_000)
    dt = np.diff(c.ts_us).astype(float)
    assert dt.std() / dt.mean() > 1.3  # a Poisson process has CV = 1
    gaps = dt[dt > 0]
    # bursts cluster: short gaps follow short gaps (i.i.d. gaps would give 0 +- 0.01)
    assert np.corrcoef(np.log(gaps[1:]), np.log(gaps[:-1]))[0, 1] > 0.2
    same = dt == 0
    assert 0.2 < same.mean() < 0.3  # same_ts_prob = 0.25: several fills of one taker order
    assert np.all(c.side[1:][same] == c.side[:-1][same]) and np.all(c.ord_type[1:][same] == c.ord_type[:-1][same])
    rate = c.size / ((c.ts_us[-1] - c.ts_us[0]) / 1e6)
    assert abs(rate / 50 - 1) < 0.05  # the configured mean rate, within 5 %
    sign = 2.0 * c.side - 1
    assert np.corrcoef(sign[1:], sign[:-1])[0, 1] > 0.3  # order flow is autocorrelated


def test_bid_ask_bounce_only_with_a_spread() -> None:
    def lag1(params: SimParams) -> float:
        d = np.diff(np.log(columns(params, 100_000).price))
        return float(np.corrcoef(d[1:], d[:-1])[0, 1])

    assert lag1(SimParams(spread_bps=1.0)) < -0.1  # measured -0.17
    assert abs(lag1(SimParams(spread_bps=0.0))) < 0.02  # measured -0.001 (tick rounding); 1 SE = 0.003


def minute_samples(c: TradeColumns) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """At each minute boundary t (no trade at or after t is used for the features):
    order-flow imbalance of the trades in [t-60 s, t), the log-return of the last
    trade price over [t-60 s, t), and the target: the log-return from the last
    price before t to the last price before t+60 s."""
    t, logp = c.ts_us, np.log(c.price)
    edges = np.arange(t[0] + 60_000_000, t[-1], 60_000_000)
    idx = np.searchsorted(t, edges, side="left")  # trades with ts < edge
    price = logp[idx - 1]
    flow = (2.0 * c.side - 1) * c.qty
    cs, ca = np.concatenate(([0], np.cumsum(flow))), np.concatenate(([0], np.cumsum(c.qty)))
    ofi = (cs[idx[1:]] - cs[idx[:-1]]) / (ca[idx[1:]] - ca[idx[:-1]])  # window ending at edge k+1
    ret = np.diff(price)  # ret[k] = log p(edge k+1) - log p(edge k)
    return ofi[:-1], ret[:-1], ret[1:]


def oos_mse_ratio(x: np.ndarray, y: np.ndarray) -> float:
    """Walk-forward, one split: OLS fitted on the first half, MSE on the second half
    divided by persistence's (which predicts a zero return)."""
    h = len(y) // 2
    design = np.column_stack([np.ones(len(y)), x])
    beta = np.linalg.lstsq(design[:h], y[:h], rcond=None)[0]
    return float(np.mean((y[h:] - design[h:] @ beta) ** 2) / np.mean(y[h:] ** 2))


@pytest.fixture(scope="module")
def same_path_two_impacts() -> tuple[TradeColumns, TradeColumns]:
    """~2000 minutes of one symbol without and with the planted signal. The knob only
    adds the drift: arrivals, sides, sizes and shocks are the same random draws."""
    n = 600_000
    base = SimParams(spread_bps=0.0, rate=5.0)
    return columns(base, n), columns(SimParams(**{**base.__dict__, "flow_impact": 0.3}), n)


def test_zero_spread_zero_impact_is_a_martingale(same_path_two_impacts: tuple[TradeColumns, TradeColumns]) -> None:
    ofi, past, fwd = minute_samples(same_path_two_impacts[0])
    m = len(fwd)
    se = 1 / math.sqrt(m)  # standard error of a correlation under independence
    assert m > 1900
    assert abs(np.corrcoef(ofi, fwd)[0, 1]) < 3 * se  # tolerance: 3 standard errors
    assert abs(np.corrcoef(past, fwd)[0, 1]) < 3 * se
    assert abs(fwd.mean()) < 3 * fwd.std() / math.sqrt(m)
    assert oos_mse_ratio(np.column_stack([ofi, past]), fwd) > 0.99  # no skill over persistence (< 1 %)


def test_flow_impact_plants_a_learnable_signal(same_path_two_impacts: tuple[TradeColumns, TradeColumns]) -> None:
    plain, planted = same_path_two_impacts
    assert np.array_equal(plain.ts_us, planted.ts_us) and np.array_equal(plain.side, planted.side)
    ofi, past, fwd = minute_samples(planted)
    assert np.corrcoef(ofi, fwd)[0, 1] > 0.2  # > 9 standard errors (0.022) above 0
    assert oos_mse_ratio(np.column_stack([ofi, past]), fwd) < 0.95  # beats persistence by > 5 %


# -- replay files -------------------------------------------------------------------------


def test_replay_file_is_kraken_v2_shaped(tmp_path: Path) -> None:
    p = tmp_path / "r.jsonl"
    assert write_replay(p, 20_000, SYMS, seed=3) == 20_000
    lines = p.read_bytes().splitlines()
    msgs = [orjson.loads(line) for line in lines]  # every line is JSON
    status, acks = msgs[0], msgs[1:4]
    assert status["channel"] == "status" and status["data"][0]["system"] == "online"
    assert status["data"][0]["connection_id"] > 2**53
    assert [a["result"] for a in acks] == [{"channel": "trade", "snapshot": False, "symbol": s} for s in SYMS]
    assert all(a["method"] == "subscribe" and a["success"] is True for a in acks)
    kinds = {"heartbeat": 0, "trade": 0}
    trades: list[Trade] = []
    prev_run = None
    for line, m in zip(lines[4:], msgs[4:], strict=True):
        kinds[m["channel"]] += 1
        got, dead = parse_message(line, "t", 0)
        assert dead == []
        if m["channel"] == "trade":
            assert m["type"] == "update" and line == orjson.dumps(trades_to_message(got))  # Kraken's format
            runs = {(t.symbol, t.ts_us) for t in got}
            assert len(runs) == 1 and runs != prev_run  # one (symbol, timestamp) per message, all of it
            prev_run = runs
            trades += got
    assert trades == MarketSimulator(SYMS, 3).next_trades(20_000)
    seconds = (trades[-1].ts_us // 1_000_000) - DEFAULT_START_US // 1_000_000
    assert kinds["heartbeat"] == seconds > 0  # one per second of event time
    assert kinds["trade"] < 20_000  # multi-trade messages exist


def test_replay_bytes_do_not_depend_on_batching_and_caps_hold(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for cap in (None, 2):
        a, b = tmp_path / f"a{cap}", tmp_path / f"b{cap}"
        write_replay(a, 12_345, ["BTC/USD", "ETH/USD"], seed=8, max_trades_per_message=cap)
        with monkeypatch.context() as mp:
            mp.setattr(sim_mod, "_REPLAY_BATCH", 97)  # batches split multi-trade messages
            write_replay(b, 12_345, ["BTC/USD", "ETH/USD"], seed=8, max_trades_per_message=cap)
        assert a.read_bytes() == b.read_bytes()
        sizes = [len(parse_message(line, "t", 0)[0]) for line in a.read_bytes().splitlines()]
        assert sum(sizes) == 12_345
        assert max(sizes) == (2 if cap else max(sizes)) and max(sizes) > 1
        # the same trade lines as the one replay writer (tickcast.replay) makes of those trades
        lines = [line for line in a.read_bytes().splitlines() if line.startswith(b'{"channel":"trade"')]
        trades = [t for line in lines for t in parse_message(line, "t", 0)[0]]
        assert lines == list(trade_lines(trades, max_per_message=cap))
