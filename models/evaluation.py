"""Honest scoring of price predictors: errors in price units, skill over persistence,
a Diebold–Mariano test, Holm's correction for several candidates, the break-even cost
of trading a model's sign, and time-ordered walk-forward folds with an embargo.

>>> import numpy as np
>>> y = np.array([100.0, 101.0, 102.0, 101.0]); now = np.array([100.5, 100.0, 101.0, 102.0])
>>> s = score(now, y, now)  # persistence scored against itself
>>> s["skill_vs_persistence"], s["n"]
(0.0, 4)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats


def score(predicted: np.ndarray, actual: np.ndarray, price_now: np.ndarray,
          persistence_mae: float | None = None) -> dict[str, float]:
    """MAE, RMSE, directional accuracy and skill = 1 - MAE / MAE_persistence.

    Directional accuracy counts only rows where both the prediction and the outcome
    moved away from the price at prediction time (a flat prediction has no direction)."""
    predicted = np.asarray(predicted, dtype=float)
    actual = np.asarray(actual, dtype=float)
    price_now = np.asarray(price_now, dtype=float)
    err = predicted - actual
    mae = float(np.mean(np.abs(err)))
    rmse = float(np.sqrt(np.mean(err * err)))
    dp, da = predicted - price_now, actual - price_now
    moved = (dp != 0) & (da != 0)
    dacc = float(np.mean((dp[moved] > 0) == (da[moved] > 0))) if moved.any() else float("nan")
    p_mae = float(np.mean(np.abs(price_now - actual))) if persistence_mae is None else persistence_mae
    skill = 1.0 - mae / p_mae if p_mae > 0 else 0.0
    return {"mae": mae, "rmse": rmse, "directional_accuracy": dacc, "skill_vs_persistence": skill,
            "n": int(len(err))}


def diebold_mariano(e_model: np.ndarray, e_base: np.ndarray, h: int = 1) -> dict[str, float]:
    """Diebold–Mariano test of equal accuracy under absolute loss, with the
    Harvey–Leybourne–Newbold small-sample correction and a Newey–West variance with
    ``h - 1`` lags (h-step-ahead forecasts on overlapping horizons are autocorrelated).

    Returns the statistic and the one-sided p-value of "the model is more accurate"
    (small p = significantly better than the baseline)."""
    d = np.abs(np.asarray(e_model, float)) - np.abs(np.asarray(e_base, float))
    n = len(d)
    if n < 10:
        return {"dm_stat": float("nan"), "p_value": 1.0}
    dbar = float(d.mean())
    dc = d - dbar
    lags = max(0, h - 1)
    gamma0 = float(dc @ dc) / n
    var = gamma0
    for k in range(1, lags + 1):
        if k >= n:
            break
        gk = float(dc[k:] @ dc[:-k]) / n
        var += 2 * (1 - k / (lags + 1)) * gk  # Bartlett weights keep the variance positive
    if not var > 0:
        return {"dm_stat": 0.0 if dbar == 0 else math.copysign(math.inf, -dbar), "p_value": 0.5 if dbar == 0 else float(dbar > 0)}
    dm = dbar / math.sqrt(var / n)
    hln = math.sqrt((n + 1 - 2 * h + h * (h - 1) / n) / n) if n + 1 - 2 * h > 0 else 1.0
    stat = dm * hln
    # H1: model loss < baseline loss  <=>  mean(d) < 0
    p = float(stats.t.cdf(stat, df=n - 1))
    return {"dm_stat": float(stat), "p_value": p}


@dataclass(frozen=True)
class Split:
    train_end: int  # rows [0, train_end) train
    test_start: int  # rows [test_start, n) test; the rows between are the embargo
    n: int


def train_test_split_embargo(ts_us: np.ndarray, test_fraction: float, embargo_us: int,
                             horizon_us: int) -> Split:
    """Time-ordered split: the last ``test_fraction`` of rows is the test span; training
    rows are those whose **label time** (ts + horizon) is at least ``embargo_us`` before
    the first test row, so no training label overlaps the test span."""
    ts_us = np.asarray(ts_us)
    n = len(ts_us)
    if not np.all(np.diff(ts_us) >= 0):
        raise ValueError("rows must be sorted by time")
    test_start = int(n * (1 - test_fraction))
    if test_start <= 0 or test_start >= n:
        raise ValueError(f"cannot split {n} rows with test_fraction={test_fraction}")
    cutoff = ts_us[test_start] - embargo_us - horizon_us
    train_end = int(np.searchsorted(ts_us, cutoff, side="right"))
    return Split(train_end, test_start, n)


def time_series_folds(n: int, k: int, gap: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Expanding-window folds inside the training span, with ``gap`` rows embargoed
    between each fold's train and validation parts."""
    from sklearn.model_selection import TimeSeriesSplit

    return [(tr, va) for tr, va in TimeSeriesSplit(n_splits=k, gap=gap).split(np.arange(n))]


@dataclass(frozen=True)
class Fold:
    """One walk-forward fold: train on rows ``[0, train_end)``, test on
    ``[test_start, test_end)``; rows in between are the embargo."""

    train_end: int
    test_start: int
    test_end: int


def walk_forward_folds(ts_us: np.ndarray, n_folds: int, test_fraction: float, embargo_us: int,
                       horizon_us: int) -> list[Fold]:
    """Expanding-window walk-forward folds over time-sorted rows.

    The last ``test_fraction`` of the rows is cut into ``n_folds`` consecutive test
    blocks of (nearly) equal size. Fold ``k`` trains on every row whose **label time**
    (ts + horizon) is at least ``embargo_us`` before its test block's first row, so
    no training label overlaps that block, and the training span grows fold by fold.

    >>> ts = np.arange(100) * 10
    >>> [(f.train_end, f.test_start, f.test_end) for f in walk_forward_folds(ts, 3, 0.3, 60, 60)]
    [(59, 70, 80), (69, 80, 90), (79, 90, 100)]
    """
    ts_us = np.asarray(ts_us)
    n = len(ts_us)
    if n_folds < 1:
        raise ValueError("n_folds must be >= 1")
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1); got {test_fraction}")
    if not np.all(np.diff(ts_us) >= 0):
        raise ValueError("rows must be sorted by time")
    first = int(n * (1 - test_fraction))
    bounds = np.linspace(first, n, n_folds + 1).round().astype(int)
    if first <= 0 or np.any(np.diff(bounds) <= 0):
        raise ValueError(f"cannot cut {n} rows into {n_folds} test blocks with test_fraction={test_fraction}")
    folds = []
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        cutoff = ts_us[a] - embargo_us - horizon_us
        folds.append(Fold(int(np.searchsorted(ts_us, cutoff, side="right")), int(a), int(b)))
    return folds


def holm(p_values: list[float]) -> list[float]:
    """Holm–Bonferroni adjusted p-values (step-down; controls the family-wise error
    rate at any alpha without assumptions on the dependence between the tests):
    reject hypothesis i at level alpha iff its adjusted p-value is <= alpha.

    >>> holm([0.01, 0.04, 0.03])
    [0.03, 0.06, 0.06]
    >>> holm([0.5, 0.001])
    [0.5, 0.002]
    """
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adj = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * float(p_values[i])))
        adj[i] = round(running, 15)
    return adj


def break_even_cost(predicted: np.ndarray, actual: np.ndarray, price_now: np.ndarray) -> dict[str, float]:
    """The cost per trade at which trading the sign of the predicted move breaks even.

    At every row with a predicted move, the strategy goes long (predicted up) or short
    (predicted down) at ``price_now`` and closes at the realised price one horizon later:
    one round trip per row. Its gross return per trade, in basis points, is the
    round-trip cost (fees + half-spreads, both legs) at which it would earn nothing;
    negative means it loses even without costs. Rows where the model predicts no move
    are not traded.

    >>> be = break_even_cost(np.array([101.0, 99.0, 100.0]), np.array([101.0, 101.0, 99.0]), np.array([100.0] * 3))
    >>> be["trades"], round(be["break_even_bps"], 1)
    (2, 0.0)
    """
    dp = np.sign(np.asarray(predicted, float) - np.asarray(price_now, float))
    r_bps = np.log(np.asarray(actual, float) / np.asarray(price_now, float)) * 1e4
    traded = dp != 0
    n = int(traded.sum())
    gross = float(np.mean(dp[traded] * r_bps[traded])) if n else float("nan")
    return {"break_even_bps": gross, "trades": n}
