"""A trained model as the registry stores it and the API serves it.

Every servable model — Lasso, XGBoost, a River online model — is wrapped in a
:class:`Predictor`: it takes one feature row (close + feature values, exactly as the
online store holds them), turns it into inputs with :mod:`tickcast.model_inputs`
(the same code training used) and returns the predicted price at ``t + horizon``.

A model may need more feature groups than ``price`` (:mod:`tickcast.groups`):
``groups`` names them and ``group_versions`` pins each one's definition version; the
caller passes the other groups' values at the price row's time as ``extra`` (their
columns are model inputs as they are). Snapshots pickled before groups existed load
with ``groups == ("price",)``.

>>> p = Predictor("persistence", "constant", [], None, "fs1-w10s", 60)
>>> p.predict_price(100.0, {}), p.groups, p.extra_groups
((100.0, 0.0), ('price',), ())
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from tickcast.model_inputs import model_inputs, price_from_return


class PredictionError(ValueError):
    """The features cannot be turned into a prediction (not warm, wrong version, ...)."""


@dataclass
class Predictor:
    name: str  # "lasso" | "xgboost" | "river-linear" | ...
    kind: str  # "sklearn" (array in input_names order) | "river" (dict) | "constant"
    input_names: list[str]  # model input names (without the "x_" prefix)
    estimator: Any
    feature_set_version: str
    horizon_seconds: int
    params: dict[str, Any] = field(default_factory=dict)
    groups: tuple[str, ...] = ("price",)  # feature groups the model needs (a class default: old pickles load)
    group_versions: tuple[tuple[str, str], ...] = ()  # (group, definition version) of each extra group

    @property
    def extra_groups(self) -> tuple[str, ...]:
        """The groups besides ``price`` whose values :meth:`predict_price` needs in ``extra``."""
        return tuple(g for g in self.groups if g != "price")

    def _linear_form(self) -> tuple[float, list[float]] | None:
        """(intercept, weights) when the estimator is StandardScaler + a linear model:
        the API then predicts with one dot product instead of scikit-learn's per-call
        validation (the same numbers, ~100x cheaper for one row)."""
        cached = self.__dict__.get("_linear")
        if cached is not None or "_linear" in self.__dict__:
            return cached
        form = None
        try:
            steps = getattr(self.estimator, "steps", None)
            if steps and len(steps) == 2 and hasattr(steps[1][1], "coef_") and hasattr(steps[0][1], "scale_"):
                sc, lin = steps[0][1], steps[1][1]
                w = [float(c) / float(s) for c, s in zip(lin.coef_, sc.scale_, strict=True)]
                b = float(lin.intercept_) - sum(wi * float(m) for wi, m in zip(w, sc.mean_, strict=True))
                form = (b, w)
            elif steps is None and hasattr(self.estimator, "coef_") and hasattr(self.estimator, "intercept_"):
                form = (float(self.estimator.intercept_), [float(c) for c in self.estimator.coef_])
        except (TypeError, ValueError, AttributeError):
            form = None
        self.__dict__["_linear"] = form
        return form

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "_linear"}

    def predict_return_bps(self, x: dict[str, float]) -> float:
        if self.kind == "constant":
            return 0.0
        if self.kind == "river":
            y = float(self.estimator.predict_one(x) or 0.0)
        elif self.kind == "sklearn" and (form := self._linear_form()) is not None:
            try:
                b, w = form
                y = b + sum(wi * x[n] for wi, n in zip(w, self.input_names, strict=True))
            except KeyError as e:
                raise PredictionError(f"feature row lacks model input {e.args[0]}") from None
        elif self.kind == "sklearn":
            import numpy as np

            missing = [n for n in self.input_names if n not in x]
            if missing:
                raise PredictionError(f"feature row lacks model inputs {missing[:3]}")
            row = np.array([[x[n] for n in self.input_names]], dtype=float)
            y = float(self.estimator.predict(row)[0])
        else:
            raise PredictionError(f"unknown predictor kind {self.kind!r}")
        if not math.isfinite(y):
            raise PredictionError(f"model {self.name} returned a non-finite value")
        return y

    def predict_price(self, close: float, values: dict[str, float],
                      extra: dict[str, float] | None = None) -> tuple[float, float]:
        """(predicted price at t + horizon, predicted log-return in bps). ``extra``: the
        values of the model's other groups at the price row's time."""
        if self.kind == "constant":
            return close, 0.0
        x = model_inputs(close, values)
        if x is None:
            raise PredictionError("features are not all finite yet (indicators warming up)")
        if extra:
            x.update(extra)
        y = self.predict_return_bps(x)
        return price_from_return(close, y), y
