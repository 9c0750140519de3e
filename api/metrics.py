"""``GET /metrics`` (Prometheus text format, per gunicorn worker) and the request
timing every route is measured by (``tickcast_api_request_seconds{route,status}``)."""

from __future__ import annotations

import time

from flask import Blueprint, Flask, Response, g

from api.errors import route_of_request
from api.services import Metrics, services

bp = Blueprint("metrics", __name__)


@bp.get("/metrics")
def prometheus() -> Response:
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    return Response(generate_latest(services().metrics.registry), mimetype=CONTENT_TYPE_LATEST)


def install_timing(app: Flask, metrics: Metrics) -> None:
    """Time every request of ``app`` (registered first, so 401s are timed too)."""
    latency = metrics.latency

    @app.before_request
    def _start() -> None:
        g.t0 = time.perf_counter()

    @app.after_request
    def _observe(resp: Response) -> Response:
        elapsed = time.perf_counter() - g.get("t0", time.perf_counter())
        latency.labels(route_of_request(), str(resp.status_code)).observe(elapsed)
        return resp
