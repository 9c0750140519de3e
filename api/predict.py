"""``GET /predict?symbol=BTC/USD[&model=auto|production|online|persistence]`` (CONTRACT §7).

One request in four steps, each a function below:

1. :func:`read_request` — the query parameters, checked before any store is touched
   (400 for a bad one, 404 for a symbol not in ``TICKCAST_SYMBOLS``: no Redis key is
   ever built from input);
2. :func:`read_features` — the newest feature row from the online store (503 when
   there is none, or it is older than ``TICKCAST_MAX_FEATURE_AGE_SECONDS``);
3. :func:`pick_model` — ``auto`` serves the live choice among production, online and
   persistence that the feature flow's scoreboard (``tickcast.scoreboard``) writes to
   the online store (:mod:`api.live`); without a scoreboard, the promoted production
   model once there is one, the online model's newest prediction until then;
4. :func:`online_answer` / :func:`production_answer` / :func:`persistence_answer` — the
   prediction and the 200 body: ``{"symbol", "predicted_price", "horizon_seconds",
   "as_of", "feature_age_seconds", "price_at_as_of", "model": {"name", "version",
   "reason"}, "intervals": {"80": [lower, upper], ...}}``; ``as_of`` is the event time
   of the features (or of the online prediction) used.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from flask import Blueprint, jsonify, request

from api.errors import ApiError
from api.feature_groups import GroupMismatch
from api.live import auto_choice, intervals
from api.services import Services, services
from tickcast.schema import is_symbol, us_to_iso

log = logging.getLogger("tickcast.api")
bp = Blueprint("predict", __name__)
MODEL_CHOICES = ("auto", "production", "online", "persistence")


@dataclass
class Features:
    """The newest feature row of a symbol, split into what /predict needs."""

    ts_us: int  # event time of the row (the candle's window_end)
    age_s: float  # seconds since ts_us, now
    version: str  # feature_set_version
    close: float  # the price at ts_us
    values: dict[str, Any]  # the feature values


def read_request(svc: Services) -> tuple[str, str]:
    """``(symbol, model choice)`` from the query string; ApiError 400/404."""
    symbol = request.args.get("symbol", "")
    which = request.args.get("model", "auto")
    if not symbol:
        raise ApiError(400, "bad_request", "query parameter 'symbol' is required, e.g. ?symbol=BTC/USD")
    if not is_symbol(symbol):
        raise ApiError(400, "bad_request", f"symbol must look like BTC/USD (Kraken v2); got {symbol[:40]!r}")
    if which not in MODEL_CHOICES:
        raise ApiError(400, "bad_request",
                       f"model must be 'auto', 'production', 'online' or 'persistence'; got {which[:40]!r}")
    known = svc.settings.symbols
    if symbol not in known:  # before any store is touched: no Redis key is built from input
        raise ApiError(404, "unknown_symbol", f"{symbol} is not served here; symbols: {', '.join(sorted(known))}")
    return symbol, which


def newest_features(svc: Services, symbol: str) -> dict[str, Any] | None:
    """The online store's newest row, through a micro-cache of
    ``TICKCAST_FEATURE_CACHE_SECONDS`` (default 0.1 s): rows change once per candle
    (seconds), a Redis round trip costs about as much as the rest of the request. The
    answer still reports the row's own as_of and its age at answer time; only "no
    features" is never cached."""
    cache_s = svc.settings.feature_cache_seconds
    if cache_s > 0:
        hit = svc.features.get(symbol)
        if hit is not None and time.monotonic() - hit[0] < cache_s:
            return dict(hit[1])
    feats = svc.online.get_features(symbol)
    if feats is not None and cache_s > 0:
        svc.features[symbol] = (time.monotonic(), dict(feats))
    return feats  # type: ignore[no-any-return]


def read_features(svc: Services, symbol: str) -> Features:
    """The newest usable features of ``symbol``; ApiError 503 when missing or stale."""
    feats = newest_features(svc, symbol)
    if feats is None:
        raise ApiError(503, "no_features", f"no features for {symbol} yet: is the feature pipeline running?")
    ts_us = int(feats.pop("ts_us"))
    age = max(0.0, time.time() - ts_us / 1e6)
    svc.metrics.feature_age.labels(symbol).set(age)
    max_age = svc.settings.max_feature_age_seconds
    if max_age > 0 and age > max_age:
        raise ApiError(503, "stale_features", f"the newest features of {symbol} are {age:.1f} s old "
                       f"(limit TICKCAST_MAX_FEATURE_AGE_SECONDS={max_age:g})")
    version = feats.pop("feature_set_version", "")
    close = float(feats.pop("close"))
    return Features(ts_us, age, version, close, feats)


def newest_board(svc: Services, symbol: str) -> dict[str, Any] | None:
    """The live scoreboard of ``symbol`` (api.live), micro-cached like the feature row."""
    cache_s = svc.settings.feature_cache_seconds
    if cache_s > 0:
        hit = svc.boards.get(symbol)
        if hit is not None and time.monotonic() - hit[0] < cache_s:
            return hit[1]
    b = svc.online.get_selection(symbol)
    if cache_s > 0:
        svc.boards[symbol] = (time.monotonic(), b)
    return b  # type: ignore[no-any-return]


def pick_model(svc: Services, symbol: str, which: str, board: dict[str, Any] | None) -> tuple[str, str, bool]:
    """``(production | online | persistence, reason, live)``: ``auto`` is the scoreboard's
    choice (``live`` True); without a scoreboard, the production model once one is
    promoted, else the online model if it has a prediction (else the production model's
    503 stands)."""
    if which != "auto":
        return which, f"requested (model={which})", False
    choice, reason = auto_choice(board)
    if choice is not None:
        return choice, reason, True
    try:
        svc.models.get(symbol)
        return "production", reason, False
    except ApiError as e:
        if e.code != "no_model" or svc.online.get_prediction(symbol) is None:
            raise
        return "online", reason, False


def persistence_answer(svc: Services, symbol: str, f: Features, reason: str,
                       board: dict[str, Any] | None) -> dict[str, Any]:
    """"The price will not move": the newest close, as a legitimate answer."""
    svc.metrics.served.labels(symbol, "persistence").inc()
    return {"symbol": symbol, "predicted_price": f.close, "horizon_seconds": svc.settings.horizon_seconds,
            "as_of": us_to_iso(f.ts_us), "feature_age_seconds": round(f.age_s, 3), "price_at_as_of": f.close,
            "model": {"name": "persistence", "version": "persistence", "reason": reason},
            "intervals": intervals(board, "persistence", f.close)}


def online_answer(svc: Services, symbol: str, reason: str, board: dict[str, Any] | None) -> dict[str, Any]:
    """The online model's newest prediction (made in the feature flow)."""
    p = svc.online.get_prediction(symbol)
    if p is None:
        raise ApiError(503, "no_prediction", f"the online model has no prediction for {symbol} yet")
    svc.metrics.served.labels(symbol, "online").inc()
    price = float(p["predicted_price"])
    return {"symbol": symbol, "predicted_price": price,
            "horizon_seconds": int(p.get("horizon_seconds", svc.settings.horizon_seconds)),
            "as_of": us_to_iso(int(p["ts_us"])),
            "feature_age_seconds": round(max(0.0, time.time() - int(p["ts_us"]) / 1e6), 3),
            "price_at_as_of": float(p.get("price_at_ts", "nan")),
            "model": {"name": p.get("model_name", "online"), "version": p.get("model_version", ""),
                      "reason": reason},
            "intervals": intervals(board, "online", price)}


def group_inputs(svc: Services, pred: Any, symbol: str, ts_us: int) -> tuple[dict[str, float], dict[str, Any]]:
    """The model's other feature groups at the price row's time (:mod:`api.feature_groups`):
    (inputs, ``{group: {"version", "as_of", "age_seconds"}}``); 503 on a version mismatch."""
    if not getattr(pred, "extra_groups", ()):
        return {}, {}
    try:
        return svc.groups.inputs(pred, symbol, ts_us)  # type: ignore[no-any-return]
    except GroupMismatch as e:
        raise ApiError(503, "feature_version_mismatch", str(e)) from e


def production_answer(svc: Services, symbol: str, f: Features, reason: str,
                      board: dict[str, Any] | None) -> dict[str, Any]:
    """The production model's prediction from the features ``f``; ApiError 503 when the
    model was trained on another feature set, the features are not ready, or it raises."""
    from models.predictor import PredictionError

    m = svc.models.get(symbol)
    pred = m.predictor
    if pred.feature_set_version != f.version:
        raise ApiError(503, "feature_version_mismatch",
                       f"the model was trained on features {pred.feature_set_version} but the online store "
                       f"holds {f.version or 'unknown'}; retrain or restart the pipeline with the same window")
    extra, groups_info = group_inputs(svc, pred, symbol, f.ts_us)
    try:
        price, _ = pred.predict_price(f.close, f.values, extra)
    except PredictionError as e:
        raise ApiError(503, "features_not_ready", f"{symbol}: {e}") from e
    except Exception as e:  # a model raising must not become a 500
        log.exception("model %s@%s raised", m.name, m.version)
        raise ApiError(503, "model_error", f"model {m.name}@{m.version} failed: {type(e).__name__}") from e
    svc.metrics.served.labels(symbol, "production").inc()
    svc.metrics.model_info.labels(symbol, m.name, m.version).set(1)
    return {"symbol": symbol, "predicted_price": price, "horizon_seconds": pred.horizon_seconds,
            "as_of": us_to_iso(f.ts_us), "feature_age_seconds": round(f.age_s, 3), "price_at_as_of": f.close,
            "model": {"name": m.name, "version": m.version, "reason": reason},
            "intervals": intervals(board, "production", price),
            "groups": {"price": {"version": f.version, "as_of": us_to_iso(f.ts_us), "age_seconds": round(f.age_s, 3)},
                       **groups_info}}


@bp.get("/predict")
def predict() -> Any:
    svc = services()
    symbol, which = read_request(svc)
    features = read_features(svc, symbol)
    board = newest_board(svc, symbol)
    model, reason, live = pick_model(svc, symbol, which, board)
    if model == "persistence":
        return jsonify(persistence_answer(svc, symbol, features, reason, board))
    if model == "online":
        return jsonify(online_answer(svc, symbol, reason, board))
    if live:
        try:
            svc.models.get(symbol)
        except ApiError as e:
            if e.status != 503:
                raise
            # the scoreboard chose production but this worker cannot load it: persistence, and why
            why = f"the live choice is production but it is unavailable here ({e.code}: {e.message})"
            return jsonify(persistence_answer(svc, symbol, features, why, board))
    return jsonify(production_answer(svc, symbol, features, reason, board))
