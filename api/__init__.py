"""The inference API (Flask application factory).

``gunicorn 'api:create_app()'`` or ``flask --app api run``. The routes are blueprints,
one module each:

================== ====================================================================
module             routes
================== ====================================================================
``api.predict``    ``GET /predict?symbol=BTC/USD[&model=auto|production|online]``
``api.health``     ``GET /health`` (each dependency's state)
``api.models``     ``GET /models`` (registry listing)
``api.metrics``    ``GET /metrics`` (Prometheus, per worker process)
``api.openapi``    ``GET /openapi.json`` (the document of all of these)
``api.dashboard``  ``GET /dashboard``, ``/dashboard/app.js``, ``/dashboard/data``
================== ====================================================================

What they share (settings, online store, registry reader, production-model cache,
metrics) is :class:`api.services.Services`; errors are JSON in one style
(:mod:`api.errors`); ``TICKCAST_API_TOKEN`` guards every route but the public ones
(:mod:`api.auth`).
"""

from __future__ import annotations

import os
from typing import Any

from flask import Flask

from api import auth, errors, metrics
from api.feature_groups import GroupInputs
from api.services import MODEL_REFRESH_SECONDS, Metrics, ModelCache, Services, TtlCache
from tickcast.config import ConfigError, Settings
from tickcast.fatal import fatal
from tickcast.stores.errors import redact

__all__ = ["create_app"]


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    """Application factory. ``test_config`` may hold ``settings`` (a Settings),
    ``env`` (a mapping read instead of os.environ) and ``model_refresh_seconds``.
    Bad configuration exits with one line (SystemExit), not a traceback."""
    from api import dashboard, health, openapi, predict
    from api import models as model_listing
    from models.registry import registry_from_settings
    from tickcast.stores.online import open_online

    cfg = dict(test_config or {})
    env: Any = cfg.get("env") if cfg.get("env") is not None else os.environ
    try:
        settings: Settings = cfg.get("settings") or Settings.from_env(env)
        token = auth.token_from_env(env)
        online = open_online(settings)
        registry = registry_from_settings(settings, env=env)  # a reader: public keys only
    except ConfigError as e:
        fatal(redact(str(e)), 1)  # one line, not a traceback

    app = Flask("tickcast")
    app.json.sort_keys = False  # type: ignore[attr-defined]
    svc = Services(settings, online, registry,
                   ModelCache(registry, cfg.get("model_refresh_seconds", MODEL_REFRESH_SECONDS)), Metrics(),
                   token, answers=TtlCache(settings.api_cache_seconds))
    svc.groups = GroupInputs(online, settings.feature_cache_seconds)
    registry.on_reject = lambda kind: svc.metrics.rejected.labels(kind).inc()
    app.extensions["tickcast"] = svc

    errors.install(app, on_unexpected=lambda route: svc.metrics.unexpected.labels(route).inc())
    metrics.install_timing(app, svc.metrics)
    auth.install(app, token)
    for module in (predict, health, model_listing, metrics, openapi, dashboard):
        app.register_blueprint(module.bp)
    return app
