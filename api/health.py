"""``GET /health``: each dependency's state, 200 when all are up, else 503.

Computed at most once per ``TICKCAST_API_CACHE_SECONDS`` per worker; costs one Redis
PING and one listing of the registry's aliases. Documents the registry refuses
(planted, corrupt, foreign) are listed under ``rejected`` and never fail it.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, jsonify

from api.services import Services, services
from tickcast.stores.errors import redact

log = logging.getLogger("tickcast.api")
bp = Blueprint("health", __name__)


def health_now(svc: Services) -> tuple[dict[str, Any], int]:
    from models.registry import RegistryError

    deps: dict[str, Any] = {}
    try:
        deps["online_store"] = {"ok": bool(svc.online.ping())}
    except Exception as e:  # noqa: BLE001 - health reports, it never fails
        deps["online_store"] = {"ok": False, "error": redact(str(e))[:300]}
    try:
        svc.registry.ping()
        deps["registry"] = {"ok": True, "errors": svc.models.errors(), "rejected": dict(svc.registry.rejected)}
    except RegistryError as e:
        deps["registry"] = {"ok": False, "error": redact(str(e))[:300]}
    except Exception as e:  # noqa: BLE001
        log.exception("health: registry check failed")
        deps["registry"] = {"ok": False, "error": f"unexpected {type(e).__name__}"}
    ok = all(d["ok"] for d in deps.values())
    return {"status": "ok" if ok else "degraded", "dependencies": deps}, 200 if ok else 503


@bp.get("/health")
def health() -> Any:
    svc = services()
    body, status = svc.answers.get("/health", lambda: health_now(svc))
    return jsonify(body), status
