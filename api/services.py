"""What the API's routes share, created once per app by :func:`api.create_app`.

:class:`Services` holds the settings, the online store (Redis), the model registry
(a reader: public keys only), the production-model cache (:class:`ModelCache`), the
Prometheus collectors (:class:`Metrics`) and two small per-worker caches. A route gets
it with :func:`services` (it lives in ``app.extensions["tickcast"]``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from flask import current_app

from api.errors import ApiError
from tickcast.config import Settings
from tickcast.stores.errors import redact

log = logging.getLogger("tickcast.api")
MODEL_REFRESH_SECONDS = 2.0
T = TypeVar("T")


@dataclass
class Loaded:
    predictor: Any
    name: str
    version: str


class ModelCache:
    """Production models per symbol (registry alias ``production-<SYMBOL>``), re-checked
    every ``refresh_s``: a new version is loaded by one request while the others keep
    using the cached model, then swapped in atomically — no restart, no failed request."""

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
        """The production model of ``symbol``; ApiError 503 when there is none usable."""
        from models.registry import (
            RegistryError,
            RegistryUnavailable,
            SnapshotRejected,
            production_alias,
        )

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
                alias = self.registry.get_alias(production_alias(symbol))
                if alias is None:
                    raise ApiError(503, "no_model", f"no production model for {symbol} yet "
                                   f"(registry alias {production_alias(symbol)} is not set; run tickcast train)")
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


class Metrics:
    """The API's Prometheus collectors, in a registry of their own (per worker process)."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = r = CollectorRegistry()
        self.latency = Histogram("tickcast_api_request_seconds", "request latency", ["route", "status"], registry=r,
                                 buckets=(0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0))
        self.served = Counter("tickcast_predictions_served_total", "predictions served", ["symbol", "model"],
                              registry=r)
        self.feature_age = Gauge("tickcast_feature_age_seconds", "age of the features used", ["symbol"], registry=r)
        self.model_info = Gauge("tickcast_model_info", "model serving a symbol (value 1)",
                                ["symbol", "name", "version"], registry=r)
        self.rejected = Counter("tickcast_registry_rejected_total",
                                "registry documents refused (unsigned, bad signature shape, unknown key, oversize, ...)",
                                ["kind"], registry=r)
        self.unexpected = Counter("tickcast_api_unexpected_errors_total", "requests that failed with a 500",
                                  ["route"], registry=r)


class TtlCache:
    """One computation per key per ``ttl_s`` in this worker; concurrent callers of a key
    wait for the one computing it. ``ttl_s`` <= 0: no caching."""

    def __init__(self, ttl_s: float) -> None:
        self.ttl_s = ttl_s
        self._values: dict[str, tuple[float, Any]] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def get(self, key: str, compute: Callable[[], T]) -> T:
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            hit = self._values.get(key)
            if hit is not None and time.monotonic() - hit[0] < self.ttl_s:
                return hit[1]  # type: ignore[no-any-return]
            value = compute()
            if self.ttl_s > 0:
                self._values[key] = (time.monotonic(), value)
            return value


@dataclass
class Services:
    settings: Settings
    online: Any  # tickcast.stores.online.OnlineStore
    registry: Any  # models.registry.ModelRegistry (a reader)
    models: ModelCache
    metrics: Metrics
    token: str = ""  # TICKCAST_API_TOKEN, "" = no authentication
    answers: TtlCache = field(default_factory=lambda: TtlCache(0.0))  # /health, /models
    features: dict[str, tuple[float, dict[str, Any]]] = field(default_factory=dict)  # /predict micro-cache
    boards: dict[str, tuple[float, dict[str, Any] | None]] = field(default_factory=dict)  # live scoreboards
    groups: Any = None  # api.feature_groups.GroupInputs: the other feature groups a model needs

    def __getitem__(self, name: str) -> Any:  # app.extensions["tickcast"]["settings"], as before
        return getattr(self, name)


def services() -> Services:
    """The services of the current app (inside a request)."""
    return current_app.extensions["tickcast"]  # type: ignore[no-any-return]
