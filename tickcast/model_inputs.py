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

import functools
import math
from collections.abc import Mapping
from math import isfinite, log, log1p
from typing import Any

BPS = 1e4


# Transform kinds. Each kind's arithmetic is written twice, side by side: row-wise in
# model_inputs (the per-candle hot path) and vectorised in _VECTOR (training); a test
# checks they agree on every feature.
_BPS, _GAP_BPS, _REL_BPS, _CENTRED, _LOG, _AS_IS = range(6)

#: How a feature becomes a model input — THE table (first matching prefix wins; a feature
#: matching none is used as it is): (feature-name prefixes, input-name suffix, kind).
#: A new feature whose name fits a row needs no edit here.
TRANSFORMS: tuple[tuple[tuple[str, ...], str, int], ...] = (
    (("ret_", "rv_", "vwap_dist_"), "_bps", _BPS),  # returns, volatility, distances -> bps
    (("ema_",), "_gap_bps", _GAP_BPS),  # an average -> gap of the price to it, bps
    (("macd",), "_bps", _REL_BPS),  # MACD family -> relative to the price, bps
    (("rsi_",), "_c", _CENTRED),  # RSI -> centred on 0, in [-1, 1]
    (("trades_",), "_log", _LOG),  # counts -> log1p
)


def _rule(name: str) -> tuple[str, int]:
    """How one feature becomes a model input: (input name, transform kind)."""
    for prefixes, suffix, kind in TRANSFORMS:
        if name.startswith(prefixes):
            return name + suffix, kind
    return name, _AS_IS


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
        if kind == _BPS:
            x[out] = v * BPS
        elif kind == _AS_IS:  # ofi_* in [-1, 1], volume_6 already log1p
            x[out] = v
        elif kind == _GAP_BPS:
            if v <= 0:
                if partial:
                    continue
                return None
            x[out] = log(close / v) * BPS
        elif kind == _REL_BPS:
            x[out] = v / close * BPS
        elif kind == _CENTRED:
            x[out] = (v - 50.0) / 50.0
        else:  # _LOG
            x[out] = log1p(max(v, 0.0))
    return x


def target_bps(price_now: float, price_later: float) -> float:
    """The label: log-return from now to the horizon, in basis points."""
    return math.log(price_later / price_now) * BPS


def price_from_return(price_now: float, ret_bps: float) -> float:
    return price_now * math.exp(ret_bps / BPS)


_VECTOR: dict[int, Any] = {}  # kind -> vectorised transform (built on first use: numpy is imported lazily)


def _vector() -> dict[int, Any]:
    import numpy as np

    return {
        _BPS: lambda v, c: v * BPS,
        _GAP_BPS: lambda v, c: np.where(v > 0, np.log(c / v) * BPS, np.nan),
        _REL_BPS: lambda v, c: v / c * BPS,
        _CENTRED: lambda v, c: (v - 50.0) / 50.0,
        _LOG: lambda v, c: np.log1p(np.maximum(v, 0.0)),
        _AS_IS: lambda v, c: v,
    }


def input_names(raw_names: tuple[str, ...]) -> tuple[str, ...]:
    """The model-input names of feature columns ``raw_names`` (in the same order)."""
    return tuple(_rule(n)[0] for n in raw_names)


@functools.lru_cache(maxsize=16)
def _kind_columns(raw_names: tuple[str, ...]) -> tuple[tuple[int, list[int]], ...]:
    groups: dict[int, list[int]] = {}
    for j, name in enumerate(raw_names):
        groups.setdefault(_rule(name)[1], []).append(j)
    return tuple(groups.items())


def input_block(raw_names: tuple[str, ...], close: Any, raw: Any) -> Any:
    """Vectorised :func:`model_inputs` (``partial=True``) over a block of rows: ``raw`` is
    the rows x ``raw_names`` array of feature values, ``close`` the rows' prices; returns
    the inputs array, NaN where the row-wise function leaves an input out (a row whose
    price is not positive is all NaN). Elementwise only, so a row's inputs do not depend
    on the other rows of the block."""
    import numpy as np

    if not _VECTOR:
        _VECTOR.update(_vector())
    close = np.asarray(close, dtype=np.float64)
    raw = np.asarray(raw, dtype=np.float64)
    out = np.empty_like(raw)
    c = close[:, None]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        for kind, cols in _kind_columns(raw_names):
            out[:, cols] = _VECTOR[kind](raw[:, cols], c)
        out[~np.isfinite(out)] = np.nan
        out[~((close > 0) & np.isfinite(close))] = np.nan
    return out


def model_inputs_frame(close: Any, values: Any) -> Any:
    """Vectorised :func:`model_inputs` over a pandas DataFrame of feature columns.

    Returns a DataFrame of the same inputs (same names, same numbers as the row-wise
    function, tested) with NaN where the row-wise function would return ``None``."""
    import numpy as np
    import pandas as pd

    if not _VECTOR:
        _VECTOR.update(_vector())
    close = np.asarray(close, dtype=float)
    out: dict[str, Any] = {}
    with np.errstate(divide="ignore", invalid="ignore"):
        for name in values.columns:
            out_name, kind = _rule(name)
            out[out_name] = _VECTOR[kind](values[name].to_numpy(dtype=float), close)
    frame = pd.DataFrame(out, index=values.index)
    bad = ~np.isfinite(frame.to_numpy()).all(axis=1) | ~(np.isfinite(close) & (close > 0))
    frame.loc[bad, :] = np.nan
    return frame
