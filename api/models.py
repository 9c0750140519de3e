"""``GET /models``: the registry's aliases and, per model name, its newest 20 versions
(kind and metrics). Computed at most once per ``TICKCAST_API_CACHE_SECONDS`` per worker."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify

from api.live import scoreboard_view
from api.services import Services, services

bp = Blueprint("models", __name__)
VERSIONS_LISTED = 20


def models_now(svc: Services) -> dict[str, Any]:
    registry = svc.registry
    listing: dict[str, list[dict[str, Any]]] = {}
    boards = {s: svc.online.get_selection(s) for s in sorted(svc.settings.symbols)}
    out = {"aliases": registry.list_aliases(), "models": listing,
           "live": {s: scoreboard_view(b) for s, b in boards.items() if b}}
    for name in registry.list_models():
        listing[name] = [{"version": m["version"], "created_at": m.get("created_at"),
                          "model_kind": m["meta"].get("model_kind"), "metrics": m["meta"].get("metrics")}
                         for m in registry.list_versions(name)[:VERSIONS_LISTED]]
    return out


@bp.get("/models")
def list_models() -> Any:
    svc = services()
    return jsonify(svc.answers.get("/models", lambda: models_now(svc)))
