"""Features against a well-known implementation (`ta`), independent pandas code, and
the contracts of tickcast.features: warm-up, zero volume, no look-ahead, stream ==
batch, pickle continuation, version."""

from __future__ import annotations

import math
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import ta
from hypothesis import given, settings
from hypothesis import strategies as st

from tickcast import features as features_mod
from tickcast.features import (
    FEATURE_NAMES,
    WARM_UP_CANDLES,
    FeatureState,
    compute_features,
    feature_set_version,
)
from tickcast.schema import Candle, FeatureRow

W = 10_000_000  # 10-s candles, in microseconds
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def empty(symbol: str, i: int, close: float, w: int = W) -> Candle:
    return Candle(symbol, i * w, (i + 1) * w, close, close, close, close, 0.0, close, 0, 0.0, 0.0)


def make_candles(n: int = 700, seed: int = 3, symbol: str = "X/USD", start: int = 0) -> list[Candle]:
    """A random walk with runs of empty windows, flat stretches with trades, one-sided
    flow and (from index 400) an empty run longer than every lookback."""
    rng = np.random.default_rng(seed)
    out: list[Candle] = []
    close = 100.0
    for i in range(start, start + n):
        if (i % 97) in range(40, 46) or 400 <= i < 440:  # runs of empty windows
            out.append(empty(symbol, i, close))
            continue
        o = close
        if (i % 53) not in range(10, 14):  # else: trades, but the price does not move
            close = close * math.exp(rng.normal(0, 0.002))
        buy, sell = rng.exponential(1.0), rng.exponential(1.0)
        if i % 31 == 0:
            sell = 0.0  # only buyers
        vwap = o + (close - o) * rng.uniform()
        out.append(Candle(symbol, i * W, (i + 1) * W, o, max(o, close), min(o, close), close,
                          buy + sell, vwap, int(rng.integers(1, 30)), buy, sell))
    return out


def frame(rows: list[FeatureRow]) -> pd.DataFrame:
    return pd.DataFrame([r.values for r in rows], columns=list(FEATURE_NAMES))


def same(a: float, b: float) -> bool:
    """Bit-for-bit equality, NaN included."""
    return a == b or (a != a and b != b)


def rows_identical(xs: list[FeatureRow], ys: list[FeatureRow]) -> bool:
    return len(xs) == len(ys) and all(
        x.symbol == y.symbol and x.ts_us == y.ts_us and x.close == y.close
        and x.feature_set_version == y.feature_set_version
        and list(x.values) == list(y.values)
        and all(same(x.values[k], y.values[k]) for k in x.values)
        for x, y in zip(xs, ys, strict=True)
    )


def close_enough(got: pd.Series, want: pd.Series, *, atol: float = 0.0) -> None:
    """Same NaN (warm-up) positions, and within 1e-9 relative everywhere else."""
    g, w = got.to_numpy(dtype=float), want.to_numpy(dtype=float)
    np.testing.assert_array_equal(np.isnan(g), np.isnan(w), err_msg=f"{got.name}: warm-up differs")
    np.testing.assert_allclose(g, w, rtol=1e-9, atol=atol, err_msg=str(got.name))


@pytest.fixture(scope="module")
def candles() -> list[Candle]:
    return make_candles()


@pytest.fixture(scope="module")
def feats(candles: list[Candle]) -> pd.DataFrame:
    return frame(compute_features(candles, 10))


def ta_reference(close: pd.Series) -> dict[str, pd.Series]:
    macd = ta.trend.MACD(close, window_slow=26, window_fast=12, window_sign=9)
    return {
        "ema_12": ta.trend.EMAIndicator(close, 12).ema_indicator(),
        "ema_26": ta.trend.EMAIndicator(close, 26).ema_indicator(),
        "macd": macd.macd(),
        "macd_signal": macd.macd_signal(),
        "macd_hist": macd.macd_diff(),
        "rsi_14": ta.momentum.RSIIndicator(close, 14).rsi(),
    }


@pytest.mark.parametrize("seed", [3, 11, 2024])
def test_indicators_match_ta(seed: int) -> None:
    cs = make_candles(seed=seed)
    got = frame(compute_features(cs, 10))
    for name, want in ta_reference(pd.Series([c.close for c in cs])).items():
        # ta's RSI is defined from index 13 on; the others after their own warm-up
        close_enough(got[name], want)
        # The recursions mirror pandas' ewm(adjust=False) expression, so they agree bit
        # for bit today; the 1e-9 above is the contract, this documents the mirroring.
        assert np.array_equal(got[name].to_numpy(), want.to_numpy(), equal_nan=True), name


def test_indicators_match_ta_on_real_kraken_candles() -> None:
    from tickcast.history import read_candles_csv

    path = SHARED / "candles" / "kraken_XBTUSD_5m_2023Q1.csv"
    if not path.exists():
        pytest.skip(f"{path} is absent (real-data tests need ../shared/data beside the repo)")
    cs, window = read_candles_csv(path, "BTC/USD")
    rows = compute_features(cs, window)
    assert rows[0].feature_set_version == f"fs1-w{window}s"
    got = frame(rows)
    for name, want in ta_reference(pd.Series([c.close for c in cs])).items():
        close_enough(got[name], want)
    assert np.isfinite(got.iloc[WARM_UP_CANDLES - 1 :].to_numpy()).all()


def test_rolling_features_match_pandas(candles: list[Candle], feats: pd.DataFrame) -> None:
    """Returns, realised volatility, VWAP distance, flow and activity against rolling
    sums in pandas (NaN positions included, i.e. the warm-up lengths)."""
    df = pd.DataFrame({
        "close": [c.close for c in candles], "vwap": [c.vwap for c in candles],
        "volume": [c.volume for c in candles], "buy": [c.buy_volume for c in candles],
        "sell": [c.sell_volume for c in candles], "trades": [c.trades for c in candles],
    })
    close = df["close"]
    for k in (1, 3, 6, 30):
        close_enough(feats[f"ret_{k}"], np.log(close / close.shift(k)), atol=1e-15)
    r1 = np.log(close / close.shift(1))
    # rolling sums run add/subtract in pandas: allow a few ulps of 1 around zero
    close_enough(feats["rv_30"], np.sqrt((r1**2).rolling(30).sum()), atol=1e-12)
    pv = (df["vwap"] * df["volume"]).rolling(30).sum()
    vol = df["volume"].rolling(30).sum()
    vwap_dist = np.log(close / (pv / vol)).where(vol > 0, 0.0).where(vol.notna())
    close_enough(feats["vwap_dist_30"], vwap_dist, atol=1e-12)
    for k in (1, 6, 30):
        b, s = df["buy"].rolling(k).sum(), df["sell"].rolling(k).sum()
        want = ((b - s) / (b + s)).where(b + s > 0, 0.0).where(b.notna())
        close_enough(feats[f"ofi_{k}"], want, atol=1e-12)
    close_enough(feats["volume_6"], np.log1p(df["volume"].rolling(6).sum()), atol=1e-12)
    close_enough(feats["trades_6"], df["trades"].rolling(6).sum().astype(float))


def test_warm_up_then_finite(feats: pd.DataFrame) -> None:
    first_valid = {name: int(feats[name].first_valid_index()) for name in FEATURE_NAMES}
    assert first_valid == {
        "ret_1": 1, "ret_3": 3, "ret_6": 6, "ret_30": 30, "ema_12": 11, "ema_26": 25,
        "macd": 25, "macd_signal": 33, "macd_hist": 33, "rsi_14": 13, "rv_30": 30,
        "vwap_dist_30": 29, "ofi_1": 0, "ofi_6": 5, "ofi_30": 29, "volume_6": 5, "trades_6": 5,
    }
    assert max(first_valid.values()) == WARM_UP_CANDLES - 1
    # after warm-up: finite everywhere, through empty runs and flat stretches
    assert np.isfinite(feats.iloc[WARM_UP_CANDLES - 1 :].to_numpy()).all()


def test_long_empty_run_has_defined_values(feats: pd.DataFrame) -> None:
    """Candles 400..439 are empty: once a lookback sees no trade at all, its value is
    the defined neutral one, not NaN and not an error."""
    quiet = feats.iloc[400 + 30 - 1 : 440]  # every 30-candle window inside the run
    for name in ("ret_1", "ret_3", "ret_6", "ofi_1", "ofi_6", "ofi_30", "vwap_dist_30",
                 "volume_6", "trades_6"):
        assert (quiet[name] == 0.0).all(), name
    assert (feats.iloc[400 + 30 : 440][["ret_30", "rv_30"]] == 0.0).all().all()
    # Wilder averages only decay: the RSI keeps its last value's side, finite, in range
    assert quiet["rsi_14"].between(0, 100).all()
    # ...and the first traded candle after the run is an ordinary row again
    assert np.isfinite(feats.iloc[440].to_numpy()).all() and feats["volume_6"][440] > 0


def test_no_movement_and_no_volume_from_the_start() -> None:
    flat = [Candle("X/USD", i * W, (i + 1) * W, 50.0, 50.0, 50.0, 50.0, 2.0, 50.0, 3, 1.0, 1.0)
            for i in range(40)]
    last = compute_features(flat, 10)[-1].values
    assert last["rsi_14"] == 50.0  # ta says 100 here (it only looks at the down average)
    assert all(last[k] == 0.0 for k in ("ret_1", "ret_30", "rv_30", "macd", "macd_hist",
                                        "vwap_dist_30", "ofi_1", "ofi_30"))
    assert last["ema_26"] == 50.0 and last["trades_6"] == 18.0

    nothing = [Candle("X/USD", 0, W, 9.0, 9.0, 9.0, 9.0, 1.0, 9.0, 1, 1.0, 0.0)]
    nothing += [empty("X/USD", i, 9.0) for i in range(1, 80)]
    last = compute_features(nothing, 10)[-1].values
    assert all(math.isfinite(v) for v in last.values())
    assert last["ofi_30"] == last["vwap_dist_30"] == last["volume_6"] == 0.0
    assert last["rsi_14"] == 50.0

    rising = [Candle("X/USD", i * W, (i + 1) * W, 1.0 + i, 1.0 + i, 1.0 + i, 1.0 + i, 1.0, 1.0 + i,
                     1, 1.0, 0.0) for i in range(40)]
    got = frame(compute_features(rising, 10))["rsi_14"]
    want = ta.momentum.RSIIndicator(pd.Series([c.close for c in rising]), 14).rsi()
    close_enough(got, want)  # only gains: 100, as ta
    assert got.iloc[-1] == 100.0


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.floats(-0.05, 0.05), st.floats(0, 5), st.floats(0, 1), st.booleans()),
                min_size=1, max_size=120))
def test_any_sequence_is_finite_and_in_range(steps: list[tuple[float, float, float, bool]]) -> None:
    close, cs = 1000.0, []
    for i, (r, vol, buy_share, is_empty) in enumerate(steps):
        if is_empty or vol == 0.0:
            cs.append(empty("Y/USD", i, close))
            continue
        prev, close = close, close * math.exp(r)
        cs.append(Candle("Y/USD", i * W, (i + 1) * W, prev, max(prev, close), min(prev, close), close,
                         vol, (prev + close) / 2, 1, vol * buy_share, vol * (1 - buy_share)))
    rows = compute_features(cs, 10)
    for i, row in enumerate(rows):
        v = row.values
        if i >= WARM_UP_CANDLES - 1:
            assert all(math.isfinite(x) for x in v.values()), v
        for k in ("ofi_1", "ofi_6", "ofi_30"):
            assert math.isnan(v[k]) or -1.0 <= v[k] <= 1.0
        assert math.isnan(v["rsi_14"]) or 0.0 <= v["rsi_14"] <= 100.0
        assert math.isnan(v["rv_30"]) or v["rv_30"] >= 0.0


def test_stream_equals_batch_with_interleaved_symbols() -> None:
    a, b = make_candles(300, seed=1, symbol="A/USD"), make_candles(300, seed=2, symbol="B/USD")
    interleaved = [c for pair in zip(a, b, strict=True) for c in pair]
    batch = compute_features(interleaved, 10)
    sa, sb = FeatureState(10), FeatureState(10)
    streamed = [r for ca, cb in zip(a, b, strict=True) for r in (sa.update(ca), sb.update(cb))]
    assert rows_identical(streamed, batch)
    assert [r.ts_us for r in batch] == [c.window_end_us for c in interleaved]
    assert [r.close for r in batch] == [c.close for c in interleaved]


@pytest.mark.parametrize("cut", [0, 1, 5, 20, WARM_UP_CANDLES - 1, 250, 420])
def test_pickle_mid_stream_continues_identically(candles: list[Candle], cut: int) -> None:
    state = FeatureState(10)
    head = [state.update(c) for c in candles[:cut]]
    blob = pickle.dumps(state)
    assert len(blob) < 8_000  # small: it is snapshotted with the Bytewax recovery state
    restored = pickle.loads(blob)
    tail = [state.update(c) for c in candles[cut:]]
    assert rows_identical([restored.update(c) for c in candles[cut:]], tail)
    assert rows_identical(head + tail, compute_features(candles, 10))


def test_snapshot_of_another_definition_version_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    state = FeatureState(10)
    state.update(make_candles(1)[0])
    blob = pickle.dumps(state)
    monkeypatch.setattr(features_mod, "DEFINITION_VERSION", "fs2")
    with pytest.raises(ValueError, match="feature set 'fs1-w10s'.*'fs2'"):
        pickle.loads(blob)


@pytest.mark.parametrize("i", [0, 10, 33, 300, 405])
def test_no_look_ahead(candles: list[Candle], i: int) -> None:
    """Changing candles after i never changes the features at or before i."""
    base = compute_features(candles, 10)
    other_future = make_candles(len(candles) - i - 1, seed=99, start=i + 1)
    assert other_future[0].window_start_us == candles[i].window_end_us
    other = compute_features(candles[: i + 1] + other_future, 10)
    assert rows_identical(base[: i + 1], other[: i + 1])
    assert not rows_identical(base[i + 1 : i + 2], other[i + 1 : i + 2])  # the test has teeth


def test_rows_are_stamped_at_window_end_with_version(candles: list[Candle]) -> None:
    rows = compute_features(candles[:5], 10)
    assert [r.ts_us for r in rows] == [c.window_end_us for c in candles[:5]]
    assert {r.feature_set_version for r in rows} == {"fs1-w10s"} == {feature_set_version(10)}
    assert feature_set_version(60) == "fs1-w60s"
    assert all(tuple(r.values) == FEATURE_NAMES for r in rows)
    # the column order is a storage schema: changing it needs a new feature set version
    assert FEATURE_NAMES == (
        "ret_1", "ret_3", "ret_6", "ret_30", "ema_12", "ema_26", "macd", "macd_signal",
        "macd_hist", "rsi_14", "rv_30", "vwap_dist_30", "ofi_1", "ofi_6", "ofi_30",
        "volume_6", "trades_6",
    )


def test_out_of_sequence_candles_are_precise_errors(candles: list[Candle]) -> None:
    state = FeatureState(10)
    state.update(candles[0])
    with pytest.raises(ValueError, match=r"consecutive candles: the next X/USD window starts at 10000000"):
        state.update(candles[2])  # a gap
    with pytest.raises(ValueError, match="consecutive candles"):
        state.update(candles[0])  # a duplicate
    with pytest.raises(ValueError, match="another symbol: Z/USD"):
        state.update(empty("Z/USD", 1, 1.0))
    with pytest.raises(ValueError, match="expects 10000000 us candles"):
        FeatureState(10).update(empty("X/USD", 0, 1.0, w=60_000_000))
    with pytest.raises(ValueError, match="positive"):
        FeatureState(0)
    state.update(candles[1])  # errors leave the state as it was
    assert rows_identical([state.update(candles[2])], compute_features(candles[:3], 10)[2:])


def test_model_inputs_row_wise_and_vectorised_agree_on_every_feature() -> None:
    """tickcast.model_inputs writes each transform twice (per-candle loop, numpy for
    training): same names, same numbers, NaN exactly where the row-wise form says None."""
    from tickcast.model_inputs import model_inputs, model_inputs_frame

    rng = np.random.default_rng(7)
    n = 400
    values = pd.DataFrame({name: rng.normal(50.0, 30.0, n) for name in FEATURE_NAMES})
    values.iloc[rng.integers(0, n, 40), rng.integers(0, len(FEATURE_NAMES), 40)] = np.nan
    close = rng.uniform(-5.0, 200.0, n)  # some prices not positive: no inputs at all
    frame = model_inputs_frame(close, values)
    for i in range(n):
        row = model_inputs(float(close[i]), dict(values.iloc[i]))
        if row is None:
            assert frame.iloc[i].isna().all()
        else:
            assert list(row) == list(frame.columns)
            assert np.allclose(list(row.values()), frame.iloc[i].to_numpy(), rtol=1e-12, atol=0.0)
    assert frame.notna().all(axis=1).sum() > 50  # the comparison covered finite rows too
