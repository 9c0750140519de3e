"""The one definition of tickcast's features, computed incrementally from candles.

:class:`FeatureState` consumes the consecutive candles of ONE symbol (empty windows
included) and returns the feature row at each candle's ``window_end``. The Bytewax
flow drives it per symbol (it is part of the recovery state); :func:`compute_features`
drives the very same class from a plain loop for backfill and training, so the
stream and the training set cannot disagree.

Contracts:

* **No look-ahead.** The row at ``ts_us`` is computed from the candles whose
  ``window_end_us <= ts_us`` only, i.e. from trades with event time ``< ts_us``.
  Feeding later candles never changes an earlier row.
* **Periods are counted in candles**, not seconds: ``ret_30`` is 30 candles back
  (5 minutes of 10-s candles, 30 minutes of 1-min candles). The column names (which
  are ClickHouse columns and model inputs) therefore stay fixed whatever
  ``TICKCAST_WINDOW_SECONDS`` is; the candle length is part of
  :func:`feature_set_version` (``fs1-w10s``), so rows built on different candle
  lengths never mix in one training set or behind one model.
* **Warm-up.** A feature is NaN until it has enough history; from the
  :data:`WARM_UP_CANDLES`-th candle on every feature is finite, also on runs of empty
  windows (zero volume) and flat prices: RSI with no movement at all is 50, order-flow
  imbalance and VWAP distance with no volume are 0.
* **Versioning.** :data:`DEFINITION_VERSION` (``fs1``) names the definitions in this
  file. Bump it (``fs2`` ...) whenever a definition, a period, the warm-up or
  :data:`FEATURE_NAMES` changes: stored rows, trained models and recovery snapshots
  carry the version, so old and new values are never mixed silently.
* ``ema_12``, ``ema_26``, ``macd*`` and ``rsi_14`` reproduce ``ta`` 0.11
  (``EMAIndicator``, ``MACD(26, 12, 9)``, ``RSIIndicator(14)``) bit for bit after
  warm-up: the recursions below are the ones pandas' ``ewm(adjust=False).mean()``
  evaluates. One deliberate difference: with no price movement at all (both Wilder
  averages exactly 0) ``rsi_14`` is 50, where ``ta`` says 100.

>>> from tickcast.schema import Candle
>>> st = FeatureState(10)
>>> rows = [st.update(Candle("X/USD", i * 10_000_000, (i + 1) * 10_000_000, 100.0 + i,
...                          100.0 + i, 100.0 + i, 100.0 + i, 1.0, 100.0 + i, 1, 0.6, 0.4))
...         for i in range(40)]
>>> row = rows[-1]
>>> row.ts_us, row.close, row.feature_set_version
(400000000, 139.0, 'fs1-w10s')
>>> round(row.values["ret_1"], 6), round(row.values["ofi_30"], 12), row.values["rsi_14"]
(0.00722, 0.2, 100.0)
>>> import math
>>> math.isnan(rows[0].values["ret_1"]), all(map(math.isfinite, rows[WARM_UP_CANDLES - 1].values.values()))
(True, True)
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from math import fsum, log, log1p, sqrt
from typing import Final

from tickcast.schema import US_PER_S, Candle, FeatureRow

DEFINITION_VERSION: Final = "fs1"

#: Column order of the feature vector (ClickHouse columns, model inputs). Fixed.
FEATURE_NAMES: Final[tuple[str, ...]] = (
    "ret_1", "ret_3", "ret_6", "ret_30",
    "ema_12", "ema_26", "macd", "macd_signal", "macd_hist", "rsi_14",
    "rv_30", "vwap_dist_30",
    "ofi_1", "ofi_6", "ofi_30",
    "volume_6", "trades_6",
)

#: From this many candles on, every feature is finite (``macd_signal`` is the slowest:
#: 26 candles for the slow EMA, then 9 MACD values for the signal EMA: 26 + 9 - 1).
WARM_UP_CANDLES: Final = 34

NAN: Final = float("nan")

# Smoothing factors as pandas derives them (ewm(span=n): alpha = 2/(n+1); ta's RSI
# passes alpha=1/14, which pandas turns into com = 13 and back into alpha = 1/14; all
# of these round-trip exactly). pandas evaluates adjust=False as
# ``(1 - alpha) * prev + alpha * x`` and keeps ``prev`` when ``prev == x``; mirroring
# that expression (not ``prev + alpha * (x - prev)``) makes the values bit-identical.
_A12: Final = 2.0 / 13.0
_K12: Final = 1.0 - _A12
_A26: Final = 2.0 / 27.0
_K26: Final = 1.0 - _A26
_A9: Final = 2.0 / 10.0
_K9: Final = 1.0 - _A9
_A14: Final = 1.0 / 14.0
_K14: Final = 1.0 - _A14


def feature_set_version(window_seconds: int) -> str:
    """The version stamped on every row: definitions + candle length.

    >>> feature_set_version(10), feature_set_version(60)
    ('fs1-w10s', 'fs1-w60s')
    """
    return f"{DEFINITION_VERSION}-w{window_seconds}s"


class FeatureState:
    """Incremental features of ONE symbol's consecutive candles.

    ``update(candle)`` must receive that symbol's candles in order and without gaps
    (every window, empty ones included: the candle builders emit them); anything else
    raises :class:`ValueError` naming the expected and the received window, because a
    skipped window would silently change what every lookback means.

    Plain Python, about 2 KB pickled: it is the Bytewax recovery state of the feature
    step. A pickled copy continues exactly like the original.
    """

    __slots__ = (
        "version", "window_us", "symbol", "_end_us", "_n",
        "_closes", "_r2", "_pv30", "_vol30", "_buy30", "_sell30",
        "_vol6", "_buy6", "_sell6", "_trades6",
        "_ema12", "_ema26", "_sig", "_up", "_dn",
    )

    def __init__(self, window_seconds: int) -> None:
        if window_seconds <= 0:
            raise ValueError(f"window_seconds must be a positive int; got {window_seconds!r}")
        self.version = feature_set_version(window_seconds)
        self.window_us = window_seconds * US_PER_S
        self.symbol: str | None = None  # bound by the first candle
        self._end_us: int | None = None  # window_end of the last candle seen
        self._n = 0  # candles seen
        # Ring buffers of the last 30 (or 6) candles. Window sums are recomputed with
        # math.fsum (exactly rounded) on every update instead of running sums, which
        # drift and would make stream and batch differ after a restore.
        self._closes: deque[float] = deque(maxlen=31)
        self._r2: deque[float] = deque(maxlen=30)  # squared 1-candle log returns
        self._pv30: deque[float] = deque(maxlen=30)  # vwap * volume
        self._vol30: deque[float] = deque(maxlen=30)
        self._buy30: deque[float] = deque(maxlen=30)
        self._sell30: deque[float] = deque(maxlen=30)
        self._vol6: deque[float] = deque(maxlen=6)
        self._buy6: deque[float] = deque(maxlen=6)
        self._sell6: deque[float] = deque(maxlen=6)
        self._trades6: deque[int] = deque(maxlen=6)
        self._ema12 = 0.0
        self._ema26 = 0.0
        self._sig = 0.0  # EMA-9 of the MACD line
        self._up = 0.0  # Wilder averages of up / down moves (RSI)
        self._dn = 0.0

    def __getstate__(self) -> dict[str, object]:
        return {k: getattr(self, k) for k in self.__slots__}

    def __setstate__(self, state: dict[str, object]) -> None:
        version = state.get("version")
        window_us = state.get("window_us")
        if not isinstance(window_us, int) or version != feature_set_version(window_us // US_PER_S):
            raise ValueError(
                f"FeatureState snapshot has feature set {version!r} but this code defines "
                f"{DEFINITION_VERSION!r}; restart the feature flow from fresh recovery state "
                "(and backfill) instead of resuming it"
            )
        for k in self.__slots__:
            setattr(self, k, state[k])

    def _out_of_sequence(self, c: Candle) -> ValueError:
        got = f"{c.symbol} [{c.window_start_us}, {c.window_end_us})"
        if self.symbol is not None and c.symbol != self.symbol:
            return ValueError(f"FeatureState of {self.symbol} got a candle of another symbol: {got}")
        if c.window_end_us - c.window_start_us != self.window_us:
            return ValueError(f"FeatureState ({self.version}) expects {self.window_us} us candles; got {got}")
        return ValueError(
            f"FeatureState expects consecutive candles: the next {self.symbol} window starts at "
            f"{self._end_us}; got {got} (gaps must be filled with empty candles upstream)"
        )

    def update(self, candle: Candle) -> FeatureRow:
        """Consume the next candle; return the row at ``candle.window_end_us``.

        The row uses this candle and the ones before it only (``window_end <= ts``)."""
        c = candle
        if self._end_us is None:  # the first candle binds the symbol
            if c.window_end_us - c.window_start_us != self.window_us:
                raise self._out_of_sequence(c)
            self.symbol = c.symbol
        elif (c.window_start_us != self._end_us or c.symbol != self.symbol
              or c.window_end_us - c.window_start_us != self.window_us):
            raise self._out_of_sequence(c)
        self._end_us = c.window_end_us
        n = self._n = self._n + 1
        close = c.close
        closes = self._closes

        if n == 1:
            # pandas seeds every adjust=False EMA with the first value; ta's RSI sees a
            # zero move on the first candle (diff is NaN there and becomes 0.0).
            r1 = NAN
            ema12 = ema26 = close
            up = dn = 0.0
        else:
            prev = closes[-1]
            r1 = log(close / prev)
            self._r2.append(r1 * r1)
            ema12 = self._ema12
            if ema12 != close:
                ema12 = _K12 * ema12 + _A12 * close
            ema26 = self._ema26
            if ema26 != close:
                ema26 = _K26 * ema26 + _A26 * close
            diff = close - prev
            move = diff if diff > 0.0 else 0.0
            up = self._up
            if up != move:
                up = _K14 * up + _A14 * move
            move = -diff if diff < 0.0 else 0.0
            dn = self._dn
            if dn != move:
                dn = _K14 * dn + _A14 * move
        closes.append(close)
        self._ema12, self._ema26, self._up, self._dn = ema12, ema26, up, dn

        vol = c.volume
        buy = c.buy_volume
        sell = c.sell_volume
        self._pv30.append(c.vwap * vol)
        self._vol30.append(vol)
        self._buy30.append(buy)
        self._sell30.append(sell)
        self._vol6.append(vol)
        self._buy6.append(buy)
        self._sell6.append(sell)
        self._trades6.append(c.trades)

        # MACD(12, 26, 9) as ta.trend.MACD: trend acceleration (fast minus slow EMA),
        # its signal EMA and their difference (the crossing). ta's signal is an EMA of
        # the MACD series, whose first 25 values are NaN: pandas starts it at the first
        # valid MACD value and waits for 9 of them.
        if n >= 26:
            macd = ema12 - ema26
            sig = self._sig
            if n == 26:
                sig = macd
            elif sig != macd:
                sig = _K9 * sig + _A9 * macd
            self._sig = sig
            if n >= WARM_UP_CANDLES:
                macd_signal, macd_hist = sig, macd - sig
            else:
                macd_signal = macd_hist = NAN
        else:
            macd = macd_signal = macd_hist = NAN

        # RSI-14 (Wilder) as ta.momentum.RSIIndicator: bounded momentum, overbought /
        # oversold. With no movement at all it is 50 (neutral) rather than ta's 100.
        if n < 14:
            rsi = NAN
        elif dn != 0.0:
            rsi = 100.0 - 100.0 / (1.0 + up / dn)
        else:
            rsi = 100.0 if up != 0.0 else 50.0

        # Order-flow imbalance over the latest candle and 6: who is aggressive (taker
        # buys minus taker sells over their sum, in [-1, 1]); 0 without volume.
        ofi_1 = (buy - sell) / (buy + sell) if buy + sell > 0.0 else 0.0
        if n >= 6:
            b = fsum(self._buy6)
            s = fsum(self._sell6)
            ofi_6 = (b - s) / (b + s) if b + s > 0.0 else 0.0
            # Activity: how much is traded and how often; moves on thin markets mean less.
            volume_6 = log1p(fsum(self._vol6))
            trades_6 = float(sum(self._trades6))
        else:
            ofi_6 = volume_6 = trades_6 = NAN
        # Log returns over 1, 3, 6 and 30 candles: momentum at several speeds (log
        # returns add up across candles and are symmetric in up / down moves).
        if n > 6:
            ret_3 = log(close / closes[-4])
            ret_6 = log(close / closes[-7])
        else:
            ret_3 = log(close / closes[-4]) if n > 3 else NAN
            ret_6 = NAN

        if n >= 30:
            b = fsum(self._buy30)
            s = fsum(self._sell30)
            ofi_30 = (b - s) / (b + s) if b + s > 0.0 else 0.0  # the slower flow regime
            # Distance to the 30-candle VWAP: where the price sits against what was
            # actually paid lately (mean-reversion / trend-strength cue); 0 without volume.
            v30 = fsum(self._vol30)
            vwap_dist = log(close / (fsum(self._pv30) / v30)) if v30 > 0.0 else 0.0
        else:
            ofi_30 = vwap_dist = NAN

        if n > 30:
            ret_30 = log(close / closes[0])
            # Realised volatility over 30 candles: the scale of recent moves, so a model
            # can tell a big move from a normal one in a wild market.
            rv = sqrt(fsum(self._r2))
        else:
            ret_30 = rv = NAN

        values = {
            "ret_1": r1, "ret_3": ret_3, "ret_6": ret_6, "ret_30": ret_30,
            "ema_12": ema12 if n >= 12 else NAN, "ema_26": ema26 if n >= 26 else NAN,
            "macd": macd, "macd_signal": macd_signal, "macd_hist": macd_hist, "rsi_14": rsi,
            "rv_30": rv, "vwap_dist_30": vwap_dist,
            "ofi_1": ofi_1, "ofi_6": ofi_6, "ofi_30": ofi_30,
            "volume_6": volume_6, "trades_6": trades_6,
        }
        return FeatureRow(c.symbol, c.window_end_us, close, values, self.version)


def compute_features(candles: Iterable[Candle], window_seconds: int) -> list[FeatureRow]:
    """Batch driver for backfill and training: one :class:`FeatureState` per symbol.

    ``candles`` may interleave symbols; each symbol's candles must be consecutive and
    in order (as :class:`FeatureState` requires). Rows come back in input order.
    """
    states: dict[str, FeatureState] = {}
    out: list[FeatureRow] = []
    append = out.append
    for c in candles:
        st = states.get(c.symbol)
        if st is None:
            st = states[c.symbol] = FeatureState(window_seconds)
        append(st.update(c))
    return out
