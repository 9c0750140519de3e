"""Optional bearer-token authentication (``TICKCAST_API_TOKEN``, >= 16 characters).

With a token set, every route but :data:`PUBLIC_ROUTES` needs
``Authorization: Bearer <token>`` (else a JSON 401 with ``WWW-Authenticate``); the
dashboard page sends the token it finds in its URL fragment (``/dashboard#token=…``,
never sent to the server in the URL).
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from typing import Any

from flask import Flask, Response, request

from api.errors import error_response
from tickcast.config import ConfigError

TOKEN_ENV = "TICKCAST_API_TOKEN"
MIN_TOKEN_CHARS = 16
PUBLIC_ROUTES = frozenset({"/predict", "/health", "/openapi.json", "/dashboard", "/dashboard/app.js"})


def token_from_env(env: Mapping[str, Any]) -> str:
    """The token ("" = none); ConfigError when it is too short to be a secret."""
    token = str(env.get(TOKEN_ENV) or "").strip()
    if token and len(token) < MIN_TOKEN_CHARS:
        raise ConfigError(f"{TOKEN_ENV} is {len(token)} characters: use at least {MIN_TOKEN_CHARS} "
                          "random ones (e.g. `openssl rand -hex 24`), or unset it")
    return token


def install(app: Flask, token: str) -> None:
    """Require the token on every non-public route of ``app`` (nothing when ``token`` is "")."""
    if not token:
        return

    @app.before_request
    def _check() -> tuple[Response, int] | None:
        if request.path in PUBLIC_ROUTES:
            return None
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
            resp, status = error_response(401, "unauthorized", f"this route needs Authorization: Bearer <{TOKEN_ENV}>")
            resp.headers["WWW-Authenticate"] = 'Bearer realm="tickcast"'
            return resp, status
        return None
