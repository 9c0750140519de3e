"""Point-in-time-correct training sets from the offline store.

* Features at ``t`` are what the feature pipeline wrote for the candle ending at
  ``t``: they use only trades with event time < ``t`` (the pipeline's contract).
* The label of row ``t`` is the close of the candle ending **exactly** at
  ``t + horizon``, found by an as-of lookup on time (``merge_asof`` with a tolerance
  shorter than one window) — never a row shift, which would silently cross gaps.
  Rows whose label is unknown (the end of the data, gaps) are dropped.
* Baselines are computed from information at ``t`` only: persistence = close at
  ``t``; mean of the last 10 closes (rows ``t-9 … t``, gaps not bridged).
* Feature groups (:mod:`tickcast.groups`): the label rows are the ``price`` group's;
  :func:`join_groups` adds any other group's values at each row's ``t``, computed by
  the group's :meth:`~tickcast.groups.FeatureGroup.join` from data available at ``t``
  only (for ``news``: items with ``available_at <= t``), as inputs ``x_<column>``.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import pandas as pd

from tickcast.features import FEATURE_NAMES
from tickcast.model_inputs import model_inputs_frame, target_bps


class DatasetError(ValueError):
    """The requested data cannot make a training set; the message says why."""


def load_features(store: Any, symbols: list[str] | None, since_us: int | None, until_us: int | None) -> pd.DataFrame:
    """Feature rows from the offline store, sorted by (symbol, ts)."""
    where: list[str] = []
    params: dict[str, Any] = {}
    if symbols:
        where.append("symbol IN {symbols:Array(String)}")
        params["symbols"] = symbols
    if since_us is not None:
        where.append("ts >= fromUnixTimestamp64Micro({since:Int64}, 'UTC')")
        params["since"] = since_us
    if until_us is not None:
        where.append("ts < fromUnixTimestamp64Micro({until:Int64}, 'UTC')")
        params["until"] = until_us
    cols = ", ".join(FEATURE_NAMES)
    sql = (f"SELECT symbol, toUnixTimestamp64Micro(ts) AS ts_us, close, {cols}, feature_set_version "
           f"FROM features {'WHERE ' + ' AND '.join(where) if where else ''} ORDER BY symbol, ts")
    df = store.query_df(sql, parameters=params)
    if df is None or len(df) == 0:
        return pd.DataFrame(columns=["symbol", "ts_us", "close", *FEATURE_NAMES, "feature_set_version"])
    df["ts_us"] = df["ts_us"].astype("int64")
    return df


def build_dataset(features: pd.DataFrame, horizon_us: int, window_us: int) -> pd.DataFrame:
    """One symbol's rows -> inputs ``x_*``, label ``y_bps`` and ``label_price``,
    ``price`` (at t), ``mean10`` (baseline). Sorted by time."""
    if features.empty:
        raise DatasetError("no feature rows in the requested range")
    if features["symbol"].nunique() != 1:
        raise DatasetError("build_dataset takes one symbol at a time")
    ordered = features["ts_us"].is_monotonic_increasing  # load_features' order: no sorted copy needed
    df = (features if ordered else features.sort_values("ts_us", kind="stable")).reset_index(drop=True)
    if df["ts_us"].duplicated().any():
        raise DatasetError("duplicate feature timestamps: read through the deduplicating views")
    # label: as-of lookup of the close at exactly t + horizon (tolerance < one window)
    left = pd.DataFrame({"label_ts": df["ts_us"] + horizon_us})
    right = pd.DataFrame({"label_ts": df["ts_us"], "label_price": df["close"].astype(float)})
    lab = pd.merge_asof(left, right, on="label_ts", direction="backward", tolerance=window_us - 1)
    df["label_price"] = lab["label_price"].to_numpy()
    # baseline: mean of the last 10 closes, only over contiguous rows
    contiguous = df["ts_us"].diff().eq(window_us)
    run_id = (~contiguous).cumsum()
    df["mean10"] = df.groupby(run_id)["close"].transform(lambda s: s.rolling(10, min_periods=1).mean())
    x = model_inputs_frame(df["close"].to_numpy(), df[list(FEATURE_NAMES)])
    x.columns = [f"x_{c}" for c in x.columns]
    keep = np.isfinite(df["label_price"].to_numpy()) & np.isfinite(x.to_numpy()).all(axis=1)
    df = pd.concat([df, x], axis=1)
    df = df[keep]  # one filtered copy (a year of 10-s candles: ~1.4 GB per copy)
    df = df.rename(columns={"close": "price"}).reset_index(drop=True)
    df["y_bps"] = [target_bps(p, q) for p, q in zip(df["price"], df["label_price"], strict=True)]
    return df


def join_groups(ds: pd.DataFrame, store: Any, symbol: str, groups: list[Any], since_us: int | None,
                until_us: int | None) -> tuple[pd.DataFrame, dict[str, list[str]]]:
    """``ds`` (one symbol's label rows, from :func:`build_dataset`) with the values of every
    group of ``groups`` (other than ``price``) at each row's ``ts_us`` as inputs
    ``x_<column>``. Returns (dataset, {group name: its input columns}); a group with no
    offline data for the symbol in the span is left out (and out of the mapping)."""
    out: dict[str, list[str]] = {}
    for g in groups:
        if g.name == "price":
            continue
        source = g.load(store, symbol, since_us, until_us)
        if source is None or len(source) == 0:
            continue
        vals = g.join(source, ds["ts_us"].to_numpy())
        cols = [f"x_{c}" for c in g.columns]
        ds = pd.concat([ds.reset_index(drop=True),
                        pd.DataFrame(vals.to_numpy(dtype=float), columns=cols)], axis=1)
        out[g.name] = cols
    return ds, out


def input_columns(df: pd.DataFrame) -> list[str]:
    return [c for c in df.columns if c.startswith("x_")]


def fingerprint(df: pd.DataFrame) -> str:
    """A stable hash of the rows a model was trained/tested on (reproducibility)."""
    h = hashlib.sha256()
    h.update(pd.util.hash_pandas_object(df[["ts_us", "price", "label_price"]], index=False).to_numpy().tobytes())
    return h.hexdigest()[:16]
