"""The default online model: Bayesian linear regression on running-standardised inputs,
learned in mini-batches — River's ``StandardScaler() | BayesianLinearRegression()``,
same model, numpy arithmetic over a block of rows at a time.

Why not River's objects: River learns and predicts one dict at a time (its mini-batch
API takes pandas frames); at ~10 trades per candle that per-row overhead was most of
the feature flow's cost. Here the state is a few numpy arrays over a fixed input order:

* **scaler** — per input: count of finite values, mean, population variance (River's
  ``StandardScaler``: ``z = (x - mean) / std``, ``z = 0`` when the variance is 0 or the
  value is missing, statistics updated *before* a learned row is scaled);
* **posterior** — precision ``P = I / alpha + beta * sum(z z')`` and ``eta = beta *
  sum(z y)`` (River's ``_ss_arr`` / ``_eta_arr``), mean ``m = P^-1 eta``.

:meth:`learn_batch` folds K rows at once (the scaler's statistics merged with Chan's
formula, ``P += beta Z'Z``, one ``solve``); :meth:`predict_block` scores a block of rows
with the current state using only elementwise operations and a per-row reduction, so
a row's prediction does not depend on how rows were grouped into blocks (tested: the
flow's stream/batch parity and kill -9 recovery need it). With ``K = 1`` it is River's
per-row model up to rounding (tested against River to 1e-9).

>>> import numpy as np
>>> m = BayesLinear(("a", "b"), beta=100.0)  # label noise sd 0.1
>>> rng = np.random.default_rng(0)
>>> X = rng.normal(size=(600, 2))
>>> for i in range(0, 600, 12):
...     _ = m.learn_batch(X[i:i + 12], 3.0 * X[i:i + 12, 0] + rng.normal(0, 0.1, 12))
>>> p = float(m.predict_block(np.array([[1.0, 0.0]]))[0])
>>> 2.7 < p < 3.3
True
>>> m.predict_one({"a": 1.0}) == p  # River-style sparse dict: a missing input counts as its mean
False
>>> abs(m.predict_one({"a": 1.0}) - p) < 0.1
True
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np


class BayesLinear:
    """Online Bayesian linear regression with a running standard scaler (picklable)."""

    def __init__(self, names: Sequence[str], alpha: float = 1.0, beta: float = 1 / 60) -> None:
        d = len(names)
        self.names = tuple(names)
        self.alpha, self.beta = float(alpha), float(beta)
        self.count = np.zeros(d)
        self.mean = np.zeros(d)
        self.var = np.zeros(d)
        self.prec = np.eye(d) / self.alpha
        self.eta = np.zeros(d)
        self.coef = np.zeros(d)  # posterior mean m (on standardised inputs)
        self.learned = 0
        self.refused = 0  # batches whose update was not finite (left out)
        self.w = np.zeros(d)  # the scaler folded into the weights: y = sum_i w_i (x_i - mean_i)

    def learn_batch(self, X: np.ndarray, y: np.ndarray) -> bool:
        """Learn the rows of ``X`` (NaN = missing input) with targets ``y`` at once; False
        (and the model unchanged) if the update is not finite (a hostile value)."""
        with np.errstate(all="ignore"):
            return self._learn(X, y)

    def _learn(self, X: np.ndarray, y: np.ndarray) -> bool:
        X = np.asarray(X, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        ok = np.isfinite(X)
        seen = ok.astype(np.float64)
        ones = np.ones(len(X))
        # the scaler: merge the batch into (count, mean, M2) — column sums as products with
        # ones (deterministic for a given batch, and cheaper than reductions at this size)
        D = np.where(ok, X - self.mean, 0.0)  # deviations from the old mean, 0 where missing
        s1 = ones @ D
        nb = ones @ seen
        n = self.count + nb
        delta = s1 / np.maximum(n, 1.0)  # mean moves by this; a column never seen stays at 0
        mean = self.mean + delta
        var = (self.var * self.count + ones @ (D * D) - s1 * delta) / np.maximum(n, 1.0)
        std = np.sqrt(np.maximum(var, 0.0))
        inv = np.divide(1.0, std, out=np.zeros_like(std), where=std > 0)
        Z = (D - delta * seen) * inv  # (x - new mean) / new std, 0 where missing
        bZ = self.beta * Z
        prec = self.prec + bZ.T @ Z
        eta = self.eta + bZ.T @ y
        try:
            coef = np.linalg.solve(prec, eta)  # (scipy's LAPACK dposv is 6 us faster, but importing scipy.linalg costs 0.3 s)
        except np.linalg.LinAlgError:
            coef = eta * np.nan
        if not (np.isfinite(coef).all() and np.isfinite(var).all() and np.isfinite(prec).all()):
            self.refused += 1  # a hostile value: keep the model as it was
            return False
        self.count, self.mean, self.var = n, mean, var
        self.prec, self.eta, self.coef = prec, eta, coef
        self.learned += len(y)
        self.w = coef * inv  # the scaler folded into the weights: y = sum_i w_i (x_i - mean_i)
        return True

    def predict_block(self, X: np.ndarray) -> np.ndarray:
        """Predictions of the rows of ``X`` (NaN = missing input: contributes 0)."""
        D = X - self.mean
        D[~np.isfinite(D)] = 0.0
        y: np.ndarray = (D * self.w).sum(axis=1)  # a per-row reduction: independent of the block's length
        return y

    # River-style interface (the registry's ``river`` predictor kind calls predict_one)
    def predict_one(self, x: Mapping[str, float]) -> float:
        row = np.array([[x.get(n, np.nan) for n in self.names]], dtype=np.float64)
        return float(self.predict_block(row)[0])

    def learn_one(self, x: Mapping[str, float], y: float) -> None:
        self.learn_batch(np.array([[x.get(n, np.nan) for n in self.names]], dtype=np.float64), np.array([y]))

    def __repr__(self) -> str:
        return f"BayesLinear({len(self.names)} inputs, alpha={self.alpha:g}, beta={self.beta:g}, learned={self.learned})"
