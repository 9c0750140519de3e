"""From a feature row to model inputs and back to prices — shared by the online
learner, training and the API, so every model sees exactly the same inputs.

Models predict the **log-return over the horizon in basis points**,
``y = 1e4 * log(price[t + h] / price[t])``, where price is the candle close (the last
trade at or before the time). Inputs are made scale-free (returns and distances in
basis points, oscillators centred), because raw price levels make linear models blow
up and do not transfer across symbols or regimes.

>>> x = model_inputs(100.0, {"ret_1": 0.001, "rsi_14": 75.0})
>>> round(x["ret_1_bps"], 6), x["rsi_14_c"]
(10.0, 0.5)
>>> round(price_from_return(100.0, 10.0), 6)
100.10005
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from math import isfinite, log, log1p
from typing import Any

BPS = 1e4


def _rule(name: str) -> tuple[str, int]:
    """How one feature becomes a model input: (input name, transform kind)."""
    if name.startswith(("ret_", "rv_", "vwap_dist_")):
        return name + "_bps", 0
    if name.startswith("ema_"):
        return name + "_gap_bps", 1
    if name.startswith("macd"):
        return name + "_bps", 2
    if name == "rsi_14":
        return "rsi_14_c", 3
    if name.startswith("trades_"):
        return name + "_log", 4
    return name, 5


_RULES: dict[str, tuple[str, int]] = {}
# The rules of one key order (feature rows share FEATURE_NAMES' order): (keys, [(out, kind)])
_PLAN: list[tuple[tuple[str, ...], list[tuple[str, int]]]] = []


def _plan(values: Mapping[str, float]) -> list[tuple[str, int]]:
    keys = tuple(values)
    cached = _PLAN[0] if _PLAN else None  # one read: another thread may replace it
    if cached is not None and cached[0] == keys:
        return cached[1]
    rules = []
    for name in keys:
        r = _RULES.get(name)
        if r is None:
            r = _RULES[name] = _rule(name)
        rules.append(r)
    _PLAN[:] = [(keys, rules)]
    return rules


def model_inputs(close: float, values: Mapping[str, float], partial: bool = False) -> dict[str, float] | None:
    """Scale-free inputs from one feature row; ``None`` if the price is not positive or,
    unless ``partial``, any input is not finite (indicators still warming up). With
    ``partial=True`` non-finite inputs are left out (River models take sparse dicts)."""
    if not (close > 0 and isfinite(close)):
        return None
    x: dict[str, float] = {}
    for (out, kind), v in zip(_plan(values), values.values(), strict=True):
        if v is None or not isfinite(v):
            if partial:
                continue
            return None
        if kind == 0:  # returns, volatility, distances: basis points
            x[out] = v * BPS
        elif kind == 5:  # ofi_* in [-1, 1], volume_6 already log1p
            x[out] = v
        elif kind == 1:  # EMAs: gap of the price to the average, bps
            if v <= 0:
                if partial:
                    continue
                return None
            x[out] = log(close / v) * BPS
        elif kind == 2:  # MACD family: relative to the price, bps
            x[out] = v / close * BPS
        elif kind == 3:  # RSI centred on 0, in [-1, 1]
            x[out] = (v - 50.0) / 50.0
        else:  # counts: log
            x[out] = log1p(max(v, 0.0))
    return x


def target_bps(price_now: float, price_later: float) -> float:
    """The label: log-return from now to the horizon, in basis points."""
    return math.log(price_later / price_now) * BPS


def price_from_return(price_now: float, ret_bps: float) -> float:
    return price_now * math.exp(ret_bps / BPS)


def model_inputs_frame(close: Any, values: Any) -> Any:
    """Vectorised :func:`model_inputs` over a pandas DataFrame of feature columns.

    Returns a DataFrame of the same inputs (same names, same numbers as the row-wise
    function, tested) with NaN where the row-wise function would return ``None``."""
    import numpy as np
    import pandas as pd

    close = np.asarray(close, dtype=float)
    out: dict[str, Any] = {}
    with np.errstate(divide="ignore", invalid="ignore"):
        for name in values.columns:
            v = values[name].to_numpy(dtype=float)
            if name.startswith(("ret_", "rv_", "vwap_dist_")):
                out[name + "_bps"] = v * BPS
            elif name.startswith("ema_"):
                out[name + "_gap_bps"] = np.where(v > 0, np.log(close / v) * BPS, np.nan)
            elif name.startswith("macd"):
                out[name + "_bps"] = v / close * BPS
            elif name == "rsi_14":
                out["rsi_14_c"] = (v - 50.0) / 50.0
            elif name.startswith("trades_"):
                out[name + "_log"] = np.log1p(np.maximum(v, 0.0))
            else:
                out[name] = v
    frame = pd.DataFrame(out, index=values.index)
    bad = ~np.isfinite(frame.to_numpy()).all(axis=1) | ~(np.isfinite(close) & (close > 0))
    frame.loc[bad, :] = np.nan
    return frame
