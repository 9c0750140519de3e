"""The inference API (Flask application factory).

``gunicorn 'api:create_app()'`` or ``flask --app api run``.

* ``GET /predict?symbol=BTC/USD[&model=auto|production|online]`` — the newest feature row
  from the online store (Redis) and the production model of that symbol from the
  registry (alias ``production-<SYMBOL>``), cached in memory and re-checked every
  ``MODEL_REFRESH_SECONDS``: a new production version is loaded by one request while
  the others keep using the cached model, then swapped in atomically — no restart, no
  failed request. ``model=online`` returns the online model's newest prediction,
  made in the feature flow; ``auto`` (default) serves the production model once one
  has been promoted and the online model until then.
* ``GET /health``, ``GET /metrics`` (Prometheus, per worker process),
  ``GET /openapi.json``, ``GET /models``.

Every error is JSON ``{"error": {"code", "message"}}`` with a real status: 400 bad
request, 401 missing/wrong token, 404 unknown symbol or route, 503 stale features / no
model / store unreachable / rejected snapshot (expected failures of a dependency). An
unexpected error is a JSON 500 ``internal_error`` without details (logged with its
traceback). Connection URLs in messages are redacted (``user:***@``).

Authentication: with ``TICKCAST_API_TOKEN`` set (>= 16 characters), every route but
``/predict``, ``/health``, ``/openapi.json`` and the dashboard's static page and script
needs ``Authorization: Bearer <token>``; the dashboard page sends the token it finds in
its URL fragment (``/dashboard#token=…``, never sent to the server in the URL).

``/health`` and ``/models`` are computed at most once per ``TICKCAST_API_CACHE_SECONDS``
per worker; ``/health`` costs one Redis PING and one listing of the registry's aliases.
Documents the registry refuses (planted, corrupt, foreign) are counted in
``tickcast_registry_rejected_total{kind}`` and never fail ``/health``.
"""

from __future__ import annotations

import hmac
import logging
import os
import re
import threading
import time
from dataclasses import dataclass
from typing import Any

from flask import Flask, Response, g, jsonify, request

from api.dashboard import OPENAPI_PATHS as DASHBOARD_PATHS
from api.dashboard import dashboard
from api.feature_groups import GroupInputs, GroupMismatch
from tickcast.config import ConfigError, Settings
from tickcast.schema import us_to_iso
from tickcast.stores.errors import redact

log = logging.getLogger("tickcast.api")
SYMBOL_RE = re.compile(r"^[A-Z0-9]{1,16}/[A-Z0-9]{1,16}$")  # anchored for OpenAPI; always fullmatch
MODEL_REFRESH_SECONDS = 2.0
TOKEN_ENV = "TICKCAST_API_TOKEN"
MIN_TOKEN_CHARS = 16
PUBLIC_ROUTES = frozenset({"/predict", "/health", "/openapi.json", "/dashboard", "/dashboard/app.js"})


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@dataclass
class Loaded:
    predictor: Any
    name: str
    version: str


class ModelCache:
    """Production models per symbol, hot-swapped when the registry alias moves."""

    def __init__(self, registry: Any, refresh_s: float = MODEL_REFRESH_SECONDS) -> None:
        self.registry = registry
        self.refresh_s = refresh_s
        self._models: dict[str, Loaded] = {}
        self._checked: dict[str, float] = {}
        self._errors: dict[str, str] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def _lock(self, symbol: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(symbol, threading.Lock())

    def get(self, symbol: str) -> Loaded:
        from models.registry import RegistryError, RegistryUnavailable, SnapshotRejected
        from models.train import alias_for

        cached = self._models.get(symbol)
        now = time.monotonic()
        if cached is not None and now - self._checked.get(symbol, 0) < self.refresh_s:
            return cached
        lock = self._lock(symbol)
        if not lock.acquire(blocking=cached is None):
            return cached  # type: ignore[return-value]  # another request is refreshing it
        try:
            cached = self._models.get(symbol)
            if cached is not None and time.monotonic() - self._checked.get(symbol, 0) < self.refresh_s:
                return cached
            try:
                alias = self.registry.get_alias(alias_for(symbol))
                if alias is None:
                    raise ApiError(503, "no_model", f"no production model for {symbol} yet "
                                   f"(registry alias {alias_for(symbol)} is not set; run tickcast train)")
                if cached is None or cached.version != alias["version"]:
                    predictor, manifest = self.registry.load(alias["name"], alias["version"])
                    cached = Loaded(predictor, manifest["meta"].get("model", predictor.name), alias["version"])
                    self._models[symbol] = cached
                self._errors.pop(symbol, None)
            except SnapshotRejected as e:
                self._errors[symbol] = redact(str(e))
                if cached is None:
                    raise ApiError(503, "model_rejected",
                                   f"the production model of {symbol} was refused: {redact(str(e))}") from e
                log.error("keeping %s@%s: new production snapshot refused: %s", symbol, cached.version, e)
            except RegistryUnavailable as e:
                self._errors[symbol] = redact(str(e))
                if cached is None:
                    raise ApiError(503, "registry_unavailable", redact(str(e))) from e
            except RegistryError as e:
                self._errors[symbol] = redact(str(e))
                if cached is None:
                    raise ApiError(503, "no_model", redact(str(e))) from e
            self._checked[symbol] = time.monotonic()
            return cached
        finally:
            lock.release()

    def errors(self) -> dict[str, str]:
        return dict(self._errors)


OPENAPI: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {"title": "tickcast inference API", "version": "1.0.0",
             "description": "Predicts crypto prices TICKCAST_HORIZON_SECONDS ahead from Kraken trades."},
    "paths": {
        "/predict": {"get": {
            "summary": "Predicted price at as_of + horizon",
            "parameters": [
                {"name": "symbol", "in": "query", "required": True,
                 "schema": {"type": "string", "pattern": SYMBOL_RE.pattern}, "example": "BTC/USD"},
                {"name": "model", "in": "query", "required": False,
                 "schema": {"type": "string", "enum": ["auto", "production", "online"], "default": "auto"},
                 "description": "auto = the promoted production model, or the online model until one is"},
            ],
            "responses": {
                "200": {"description": "prediction", "content": {"application/json": {"schema": {
                    "$ref": "#/components/schemas/Prediction"}}}},
                "400": {"$ref": "#/components/responses/Error"},
                "404": {"$ref": "#/components/responses/Error"},
                "503": {"$ref": "#/components/responses/Error"},
            }}},
        "/health": {"get": {"summary": "Each dependency's state", "responses": {
            "200": {"description": "healthy", "content": {"application/json": {"schema": {"type": "object"}}}},
            "503": {"description": "a dependency is down",
                    "content": {"application/json": {"schema": {"type": "object"}}}}}}},
        "/metrics": {"get": {"summary": "Prometheus metrics (bearer token if TICKCAST_API_TOKEN is set)",
                             "responses": {
            "200": {"description": "text format", "content": {"text/plain": {"schema": {"type": "string"}}}},
            "401": {"$ref": "#/components/responses/Error"}}}},
        "/models": {"get": {"summary": "Registry listing (bearer token if TICKCAST_API_TOKEN is set)", "responses": {
            "200": {"description": "models and aliases",
                    "content": {"application/json": {"schema": {"type": "object"}}}},
            "401": {"$ref": "#/components/responses/Error"},
            "503": {"$ref": "#/components/responses/Error"}}}},
        "/openapi.json": {"get": {"summary": "This document", "responses": {
            "200": {"description": "OpenAPI 3", "content": {"application/json": {"schema": {"type": "object"}}}}}}},
        **DASHBOARD_PATHS,  # /dashboard, /dashboard/app.js, /dashboard/data (api/dashboard.py)
    },
    "components": {
        "schemas": {
            "Prediction": {"type": "object", "required": [
                "symbol", "predicted_price", "horizon_seconds", "as_of", "feature_age_seconds", "model"],
                "properties": {
                    "symbol": {"type": "string"}, "predicted_price": {"type": "number"},
                    "horizon_seconds": {"type": "integer"}, "as_of": {"type": "string", "format": "date-time"},
                    "feature_age_seconds": {"type": "number"}, "price_at_as_of": {"type": "number"},
                    "groups": {"type": "object", "description": "each feature group the model used: "
                               "definition version, as_of (null: no data, e.g. no news) and age",
                               "additionalProperties": {"type": "object", "properties": {
                                   "version": {"type": "string"},
                                   "as_of": {"type": "string", "format": "date-time", "nullable": True},
                                   "age_seconds": {"type": "number", "nullable": True}}}},
                    "model": {"type": "object", "required": ["name", "version"], "properties": {
                        "name": {"type": "string"}, "version": {"type": "string"}}}}},
            "Error": {"type": "object", "required": ["error"], "properties": {"error": {
                "type": "object", "required": ["code", "message"],
                "properties": {"code": {"type": "string"}, "message": {"type": "string"}}}}},
        },
        "responses": {"Error": {"description": "error", "content": {"application/json": {"schema": {
            "$ref": "#/components/schemas/Error"}}}}},
    },
}


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    """Application factory. ``test_config`` may hold ``settings`` (a Settings),
    ``env`` (a mapping read instead of os.environ) and ``model_refresh_seconds``."""
    from prometheus_client import (
        CONTENT_TYPE_LATEST,
        CollectorRegistry,
        Counter,
        Gauge,
        Histogram,
        generate_latest,
    )

    from models.registry import RegistryError, RegistryUnavailable, registry_from_settings
    from tickcast.stores.online import OnlineStore, StoreUnavailable, open_online

    cfg = dict(test_config or {})
    env: Any = cfg.get("env") if cfg.get("env") is not None else os.environ
    try:
        settings: Settings = cfg.get("settings") or Settings.from_env(env)
        token = (env.get(TOKEN_ENV) or "").strip()
        if token and len(token) < MIN_TOKEN_CHARS:
            raise ConfigError(f"{TOKEN_ENV} is {len(token)} characters: use at least {MIN_TOKEN_CHARS} "
                              "random ones (e.g. `openssl rand -hex 24`), or unset it")
        online: OnlineStore = open_online(settings)
        registry = registry_from_settings(settings, env=env)  # a reader: public keys only
    except ConfigError as e:
        raise SystemExit(f"tickcast: {redact(str(e))}") from None  # one line, not a traceback
    app = Flask("tickcast")
    app.json.sort_keys = False  # type: ignore[attr-defined]
    models = ModelCache(registry, cfg.get("model_refresh_seconds", MODEL_REFRESH_SECONDS))
    app.extensions["tickcast"] = {"settings": settings, "online": online, "registry": registry, "models": models}
    app.register_blueprint(dashboard)  # GET /dashboard, /dashboard/data: reads the offline store

    metrics = CollectorRegistry()
    latency = Histogram("tickcast_api_request_seconds", "request latency", ["route", "status"], registry=metrics,
                        buckets=(0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0))
    served = Counter("tickcast_predictions_served_total", "predictions served", ["symbol", "model"],
                     registry=metrics)
    age_g = Gauge("tickcast_feature_age_seconds", "age of the features used", ["symbol"], registry=metrics)
    version_g = Gauge("tickcast_model_info", "model serving a symbol (value 1)", ["symbol", "name", "version"],
                      registry=metrics)
    rejected = Counter("tickcast_registry_rejected_total",
                       "registry documents refused (unsigned, bad signature shape, unknown key, oversize, ...)",
                       ["kind"], registry=metrics)
    registry.on_reject = lambda kind: rejected.labels(kind).inc()
    unexpected = Counter("tickcast_api_unexpected_errors_total", "requests that failed with a 500", ["route"],
                         registry=metrics)

    def fail(status: int, code: str, message: str) -> tuple[Response, int]:
        return jsonify({"error": {"code": code, "message": message}}), status

    @app.errorhandler(ApiError)
    def _api_error(e: ApiError) -> tuple[Response, int]:
        return fail(e.status, e.code, e.message)

    @app.errorhandler(StoreUnavailable)
    def _store_down(e: StoreUnavailable) -> tuple[Response, int]:
        return fail(503, "store_unavailable", redact(str(e)))

    @app.errorhandler(RegistryUnavailable)
    def _registry_down(e: RegistryUnavailable) -> tuple[Response, int]:
        return fail(503, "registry_unavailable", redact(str(e)))

    @app.errorhandler(404)
    def _not_found(e: Exception) -> tuple[Response, int]:
        return fail(404, "not_found", f"no route {request.path}; see /openapi.json")

    @app.errorhandler(405)
    def _method(e: Exception) -> tuple[Response, int]:
        return fail(405, "method_not_allowed", f"{request.method} is not allowed on {request.path}")

    @app.errorhandler(Exception)
    def _unexpected(e: Exception) -> tuple[Response, int]:
        from werkzeug.exceptions import HTTPException

        if isinstance(e, HTTPException) and e.code is not None and e.code < 500:
            return fail(e.code, "bad_request", e.description or e.name)
        log.exception("unexpected error on %s", request.path)
        unexpected.labels(request.url_rule.rule if request.url_rule is not None else "unmatched").inc()
        return fail(500, "internal_error", "internal error; the server log has the details")

    @app.before_request
    def _start() -> Response | tuple[Response, int] | None:
        g.t0 = time.perf_counter()
        if token and request.path not in PUBLIC_ROUTES:
            got = request.headers.get("Authorization", "")
            scheme, _, given = got.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
                resp, status = fail(401, "unauthorized", f"this route needs Authorization: Bearer <{TOKEN_ENV}>")
                resp.headers["WWW-Authenticate"] = 'Bearer realm="tickcast"'
                return resp, status
        return None

    @app.after_request
    def _observe(resp: Response) -> Response:
        route = request.url_rule.rule if request.url_rule is not None else "unmatched"
        latency.labels(route, str(resp.status_code)).observe(time.perf_counter() - g.get("t0", time.perf_counter()))
        return resp

    known = set(settings.symbols)
    # Micro-cache of the newest feature row per symbol (TICKCAST_FEATURE_CACHE_SECONDS,
    # default 0.1 s): rows change once per candle (seconds), a Redis round trip costs
    # about as much as the rest of the request. The response still reports the row's
    # own as_of and its age at answer time; only "no features" is never cached.
    cache_s = settings.feature_cache_seconds
    feature_cache: dict[str, tuple[float, dict[str, Any]]] = {}

    def newest_features(symbol: str) -> dict[str, Any] | None:
        if cache_s > 0:
            hit = feature_cache.get(symbol)
            now = time.monotonic()
            if hit is not None and now - hit[0] < cache_s:
                return dict(hit[1])
        feats = online.get_features(symbol)
        if feats is not None and cache_s > 0:
            feature_cache[symbol] = (time.monotonic(), dict(feats))
        return feats

    group_inputs = GroupInputs(online, cache_s)

    def production_group_inputs(pred: Any, symbol: str, ts_us: int) -> tuple[dict[str, float], dict[str, Any]]:
        """The model's other feature groups at the price row's time (api/feature_groups.py)."""
        if not getattr(pred, "extra_groups", ()):
            return {}, {}
        try:
            return group_inputs.inputs(pred, symbol, ts_us)
        except GroupMismatch as e:
            raise ApiError(503, "feature_version_mismatch", str(e)) from e

    @app.get("/predict")
    def predict() -> Any:
        symbol = request.args.get("symbol", "")
        which = request.args.get("model", "auto")
        if not symbol:
            raise ApiError(400, "bad_request", "query parameter 'symbol' is required, e.g. ?symbol=BTC/USD")
        if not SYMBOL_RE.fullmatch(symbol):
            raise ApiError(400, "bad_request", f"symbol must look like BTC/USD (Kraken v2); got {symbol[:40]!r}")
        if which not in ("auto", "production", "online"):
            raise ApiError(400, "bad_request",
                           f"model must be 'auto', 'production' or 'online'; got {which[:40]!r}")
        if symbol not in known:  # before any store is touched: no Redis key is built from input
            raise ApiError(404, "unknown_symbol", f"{symbol} is not served here; symbols: {', '.join(sorted(known))}")
        feats = newest_features(symbol)
        if feats is None:
            raise ApiError(503, "no_features", f"no features for {symbol} yet: is the feature pipeline running?")
        ts_us = int(feats.pop("ts_us"))
        age = max(0.0, time.time() - ts_us / 1e6)
        age_g.labels(symbol).set(age)
        max_age = settings.max_feature_age_seconds
        if max_age > 0 and age > max_age:
            raise ApiError(503, "stale_features", f"the newest features of {symbol} are {age:.1f} s old "
                           f"(limit TICKCAST_MAX_FEATURE_AGE_SECONDS={max_age:g})")
        version = feats.pop("feature_set_version", "")
        close = float(feats.pop("close"))
        if which == "auto":
            # the production model when one is promoted, else the online model's prediction
            try:
                models.get(symbol)
                which = "production"
            except ApiError as e:
                if e.code != "no_model" or online.get_prediction(symbol) is None:
                    raise
                which = "online"
        if which == "online":
            p = online.get_prediction(symbol)
            if p is None:
                raise ApiError(503, "no_prediction", f"the online model has no prediction for {symbol} yet")
            served.labels(symbol, "online").inc()
            return jsonify({"symbol": symbol, "predicted_price": float(p["predicted_price"]),
                            "horizon_seconds": int(p.get("horizon_seconds", settings.horizon_seconds)),
                            "as_of": us_to_iso(int(p["ts_us"])),
                            "feature_age_seconds": round(max(0.0, time.time() - int(p["ts_us"]) / 1e6), 3),
                            "price_at_as_of": float(p.get("price_at_ts", "nan")),
                            "model": {"name": p.get("model_name", "online"), "version": p.get("model_version", "")}})
        m = models.get(symbol)
        pred = m.predictor
        if pred.feature_set_version != version:
            raise ApiError(503, "feature_version_mismatch",
                           f"the model was trained on features {pred.feature_set_version} but the online store "
                           f"holds {version or 'unknown'}; retrain or restart the pipeline with the same window")
        from models.predictor import PredictionError

        extra, groups_info = production_group_inputs(pred, symbol, ts_us)
        try:
            price, _ = pred.predict_price(close, feats, extra)
        except PredictionError as e:
            raise ApiError(503, "features_not_ready", f"{symbol}: {e}") from e
        except Exception as e:  # a model raising must not become a 500
            log.exception("model %s@%s raised", m.name, m.version)
            raise ApiError(503, "model_error", f"model {m.name}@{m.version} failed: {type(e).__name__}") from e
        served.labels(symbol, "production").inc()
        version_g.labels(symbol, m.name, m.version).set(1)
        return jsonify({"symbol": symbol, "predicted_price": price, "horizon_seconds": pred.horizon_seconds,
                        "as_of": us_to_iso(ts_us), "feature_age_seconds": round(age, 3), "price_at_as_of": close,
                        "model": {"name": m.name, "version": m.version},
                        "groups": {"price": {"version": version, "as_of": us_to_iso(ts_us),
                                             "age_seconds": round(age, 3)}, **groups_info}})

    answer_ttl = settings.api_cache_seconds
    answers: dict[str, tuple[float, Any]] = {}  # route -> (monotonic time, response body and status)
    answer_locks = {"/health": threading.Lock(), "/models": threading.Lock()}

    def cached(route: str, compute: Any) -> Any:
        """One computation per route per ``answer_ttl`` in this worker (concurrent callers wait for it)."""
        with answer_locks[route]:
            hit = answers.get(route)
            if hit is not None and time.monotonic() - hit[0] < answer_ttl:
                return hit[1]
            value = compute()
            if answer_ttl > 0:
                answers[route] = (time.monotonic(), value)
            return value

    def health_now() -> tuple[dict[str, Any], int]:
        deps: dict[str, Any] = {}
        try:
            deps["online_store"] = {"ok": bool(online.ping())}
        except Exception as e:  # noqa: BLE001 - health reports, it never fails
            deps["online_store"] = {"ok": False, "error": redact(str(e))[:300]}
        try:
            registry.ping()
            deps["registry"] = {"ok": True, "errors": models.errors(), "rejected": dict(registry.rejected)}
        except RegistryError as e:
            deps["registry"] = {"ok": False, "error": redact(str(e))[:300]}
        except Exception as e:  # noqa: BLE001
            log.exception("health: registry check failed")
            deps["registry"] = {"ok": False, "error": f"unexpected {type(e).__name__}"}
        ok = all(d["ok"] for d in deps.values())
        return {"status": "ok" if ok else "degraded", "dependencies": deps}, 200 if ok else 503

    @app.get("/health")
    def health() -> Any:
        body, status = cached("/health", health_now)
        return jsonify(body), status

    @app.get("/metrics")
    def prometheus() -> Response:
        return Response(generate_latest(metrics), mimetype=CONTENT_TYPE_LATEST)

    @app.get("/openapi.json")
    def openapi() -> Any:
        return jsonify(OPENAPI)

    def models_now() -> dict[str, Any]:
        listing: dict[str, list[dict[str, Any]]] = {}
        out = {"aliases": registry.list_aliases(), "models": listing}
        for name in registry.list_models():
            listing[name] = [{"version": m["version"], "created_at": m.get("created_at"),
                              "model_kind": m["meta"].get("model_kind"), "metrics": m["meta"].get("metrics")}
                             for m in registry.list_versions(name)[:20]]
        return out

    @app.get("/models")
    def list_models() -> Any:
        return jsonify(cached("/models", models_now))

    return app
