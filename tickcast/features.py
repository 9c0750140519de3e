"""The one definition of tickcast's features, computed incrementally from candles.

:class:`FeatureState` consumes one symbol's consecutive candles (empty windows
included) and returns the feature row at each candle's ``window_end``. The Bytewax
flow drives it per symbol; :func:`compute_features` drives the same class from a
loop for backfill and training. A row at ``ts`` uses only candles whose
``window_end <= ts``, i.e. only trades before ``ts``.

Periods are counted in **candles**, not seconds, so the column names stay the same
whatever ``TICKCAST_WINDOW_SECONDS`` is; the window is part of
``feature_set_version`` (``fs1-w10s``) so rows of different windows never mix.
Bump ``DEFINITION_VERSION`` whenever a definition below changes.

A feature is NaN until it has enough history ("warm-up"); after that it is always
finite, also on zero-volume runs and flat prices.

>>> from tickcast.schema import Candle
>>> st = FeatureState(10)
>>> rows = [st.update(Candle("X/USD", i * 10_000_000, (i + 1) * 10_000_000, 100 + i, 100 + i, 100 + i,
...                          100 + i, 1.0, 100 + i, 1, 0.6, 0.4)) for i in range(40)]
>>> round(rows[-1].values["ret_1"], 6), round(rows[-1].values["ofi_1"], 12), rows[-1].feature_set_version
(0.00722, 0.2, 'fs1-w10s')
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable

from tickcast.schema import Candle, FeatureRow

DEFINITION_VERSION = "fs1"
FEATURE_NAMES: tuple[str, ...] = (
    "ret_1", "ret_3", "ret_6", "ret_30",
    "ema_12", "ema_26", "macd", "macd_signal", "macd_hist", "rsi_14",
    "rv_30", "vwap_dist_30",
    "ofi_1", "ofi_6", "ofi_30",
    "volume_6", "trades_6",
)
RETURN_LAGS = (1, 3, 6, 30)  # momentum at several speeds: 1 candle up to 5 minutes at 10 s
OFI_LAGS = (1, 6, 30)  # order-flow imbalance: who is aggressive, now and lately
NAN = float("nan")


def feature_set_version(window_seconds: int) -> str:
    """``fs1-w10s``: the definition version plus the candle length it was computed on."""
    return f"{DEFINITION_VERSION}-w{window_seconds}s"


class FeatureState:
    """Incremental features of ONE symbol. Small, picklable (Bytewax recovery state)."""

    __slots__ = ("version", "n", "closes", "pv", "vol", "buy", "sell", "trades",
                 "ema12", "ema26", "sig", "n_macd", "rsi_up", "rsi_dn")

    def __init__(self, window_seconds: int) -> None:
        self.version = feature_set_version(window_seconds)
        self.n = 0  # candles seen
        self.closes: deque[float] = deque(maxlen=31)
        self.pv: deque[float] = deque(maxlen=30)  # vwap * volume per candle
        self.vol: deque[float] = deque(maxlen=30)
        self.buy: deque[float] = deque(maxlen=30)
        self.sell: deque[float] = deque(maxlen=30)
        self.trades: deque[int] = deque(maxlen=6)
        self.ema12 = 0.0
        self.ema26 = 0.0
        self.sig = 0.0
        self.n_macd = 0
        self.rsi_up = 0.0
        self.rsi_dn = 0.0

    def __getstate__(self) -> dict[str, object]:
        return {k: getattr(self, k) for k in self.__slots__}

    def __setstate__(self, state: dict[str, object]) -> None:
        for k, v in state.items():
            setattr(self, k, v)

    def update(self, c: Candle) -> FeatureRow:
        close = c.close
        prev = self.closes[-1] if self.closes else None
        self.closes.append(close)
        self.pv.append(c.vwap * c.volume)
        self.vol.append(c.volume)
        self.buy.append(c.buy_volume)
        self.sell.append(c.sell_volume)
        self.trades.append(c.trades)
        n = self.n = self.n + 1
        v: dict[str, float] = {}

        # Returns: the plainest momentum signal, in log terms so they add up.
        closes = self.closes
        for k in RETURN_LAGS:
            v[f"ret_{k}"] = math.log(close / closes[-1 - k]) if len(closes) > k else NAN

        # EMAs (pandas ewm(span=n, adjust=False), as `ta`): trend at two speeds.
        if n == 1:
            self.ema12 = self.ema26 = close
        else:
            self.ema12 += (2 / 13) * (close - self.ema12)
            self.ema26 += (2 / 27) * (close - self.ema26)
        v["ema_12"] = self.ema12 if n >= 12 else NAN
        v["ema_26"] = self.ema26 if n >= 26 else NAN

        # MACD (12, 26, 9) as `ta.trend.MACD`: trend acceleration. The signal EMA
        # starts at the first valid MACD value (pandas skips the leading NaNs).
        if n >= 26:
            macd = self.ema12 - self.ema26
            self.n_macd += 1
            if self.n_macd == 1:
                self.sig = macd
            else:
                self.sig += 0.2 * (macd - self.sig)
            v["macd"] = macd
            ok = self.n_macd >= 9
            v["macd_signal"] = self.sig if ok else NAN
            v["macd_hist"] = macd - self.sig if ok else NAN
        else:
            v["macd"] = v["macd_signal"] = v["macd_hist"] = NAN

        # RSI-14 with Wilder smoothing exactly as `ta.momentum.RSIIndicator`: the
        # first candle contributes a zero move; RSI = 100 when there were no losses.
        diff = 0.0 if prev is None else close - prev
        up, dn = (diff, 0.0) if diff > 0 else (0.0, -diff if diff < 0 else 0.0)
        if n == 1:
            self.rsi_up, self.rsi_dn = up, dn
        else:
            self.rsi_up += (up - self.rsi_up) / 14
            self.rsi_dn += (dn - self.rsi_dn) / 14
        if n >= 14:
            v["rsi_14"] = 100.0 if self.rsi_dn == 0 else 100.0 - 100.0 / (1.0 + self.rsi_up / self.rsi_dn)
        else:
            v["rsi_14"] = NAN

        # Realised volatility over 30 candles: risk scales the size of moves.
        if len(closes) == 31:
            cl = list(closes)
            v["rv_30"] = math.sqrt(math.fsum(math.log(b / a) ** 2 for a, b in zip(cl, cl[1:], strict=False)))
        else:
            v["rv_30"] = NAN

        # Distance to the 30-candle VWAP: where the price sits against what was paid.
        if len(self.vol) == 30:
            vol = math.fsum(self.vol)
            v["vwap_dist_30"] = math.log(close / (math.fsum(self.pv) / vol)) if vol > 0 else 0.0
        else:
            v["vwap_dist_30"] = NAN

        # Order-flow imbalance: (taker buys - taker sells) / volume over k candles.
        buy, sell = self.buy, self.sell
        m = len(buy)
        for k in OFI_LAGS:
            if m >= k:
                b = math.fsum(buy[i] for i in range(m - k, m))
                s = math.fsum(sell[i] for i in range(m - k, m))
                v[f"ofi_{k}"] = (b - s) / (b + s) if b + s > 0 else 0.0
            else:
                v[f"ofi_{k}"] = NAN

        # Activity over 6 candles: volume (log) and trade count.
        if n >= 6:
            vol6 = math.fsum(self.vol[i] for i in range(len(self.vol) - 6, len(self.vol)))
            v["volume_6"] = math.log1p(vol6)
            v["trades_6"] = float(sum(self.trades))
        else:
            v["volume_6"] = v["trades_6"] = NAN
        return FeatureRow(c.symbol, c.window_end_us, close, v, self.version)


def compute_features(candles: Iterable[Candle], window_seconds: int) -> list[FeatureRow]:
    """Batch driver: features of consecutive candles, per symbol, in input order."""
    states: dict[str, FeatureState] = {}
    out: list[FeatureRow] = []
    for c in candles:
        st = states.get(c.symbol)
        if st is None:
            st = states[c.symbol] = FeatureState(window_seconds)
        out.append(st.update(c))
    return out
