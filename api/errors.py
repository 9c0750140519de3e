"""The API's one error style (CONTRACT §7): ``{"error": {"code", "message"}}`` with a
real status, never a 500 with a traceback.

A route raises :class:`ApiError` (or lets a store's ``StoreUnavailable`` /
the registry's ``RegistryUnavailable`` through: both are a 503); :func:`install`
turns every error of the app into that JSON, including Flask's own 404/405 and
anything unexpected (a JSON 500 ``internal_error`` without details, logged with its
traceback and counted in ``tickcast_api_unexpected_errors_total``). Connection URLs in
messages are redacted (``user:***@``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from flask import Flask, Response, jsonify, request

from tickcast.stores.errors import redact

log = logging.getLogger("tickcast.api")


class ApiError(Exception):
    """An answer other than 200: ``status`` (400, 401, 404, 503, ...), a stable
    ``code`` clients can test, and a one-line ``message`` for people."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def error_response(status: int, code: str, message: str) -> tuple[Response, int]:
    """The JSON body and status of an error (for the few places that build one by hand)."""
    return jsonify({"error": {"code": code, "message": message}}), status


def route_of_request() -> str:
    """The matched route's rule (``/predict``), or ``unmatched`` (a label for metrics)."""
    return request.url_rule.rule if request.url_rule is not None else "unmatched"


def install(app: Flask, on_unexpected: Callable[[str], None] = lambda route: None) -> None:
    """Register the error handlers on ``app``; ``on_unexpected(route)`` is called for each 500."""
    from models.registry import RegistryUnavailable
    from tickcast.stores.errors import StoreUnavailable

    @app.errorhandler(ApiError)
    def _api_error(e: ApiError) -> tuple[Response, int]:
        return error_response(e.status, e.code, e.message)

    @app.errorhandler(StoreUnavailable)
    def _store_down(e: StoreUnavailable) -> tuple[Response, int]:
        return error_response(503, "store_unavailable", redact(str(e)))

    @app.errorhandler(RegistryUnavailable)
    def _registry_down(e: RegistryUnavailable) -> tuple[Response, int]:
        return error_response(503, "registry_unavailable", redact(str(e)))

    @app.errorhandler(404)
    def _not_found(e: Exception) -> tuple[Response, int]:
        return error_response(404, "not_found", f"no route {request.path}; see /openapi.json")

    @app.errorhandler(405)
    def _method(e: Exception) -> tuple[Response, int]:
        return error_response(405, "method_not_allowed", f"{request.method} is not allowed on {request.path}")

    @app.errorhandler(Exception)
    def _unexpected(e: Exception) -> tuple[Response, int]:
        from werkzeug.exceptions import HTTPException

        if isinstance(e, HTTPException) and e.code is not None and e.code < 500:
            return error_response(e.code, "bad_request", e.description or e.name)
        log.exception("unexpected error on %s", request.path)
        on_unexpected(route_of_request())
        return error_response(500, "internal_error", "internal error; the server log has the details")
