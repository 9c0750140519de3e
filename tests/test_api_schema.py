"""Schemathesis generates requests from /openapi.json: no server errors, ever."""

from __future__ import annotations

from pathlib import Path

import pytest
import schemathesis

from api import create_app
from tickcast.config import Settings


@pytest.fixture
def api_schema(tmp_path: Path, redis_db_url: str, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    from models.registry import ModelRegistry
    from tests.helpers import SIGNER, feature_row, predictor, publish

    monkeypatch.setenv("TICKCAST_REGISTRY_PUBLIC_KEYS", SIGNER.public.to_text())
    from tickcast.stores.online import OnlineStore

    store = f"file://{tmp_path / 'models'}"
    publish(ModelRegistry(store, signer=SIGNER), predictor(1.0))
    online = OnlineStore(redis_db_url)
    online.put_features([feature_row()])
    row = feature_row()
    online.put_predictions([{"symbol": "BTC/USD", "ts_us": row.ts_us, "predicted_price": 60001.0,
                             "horizon_seconds": 60, "model_name": "river-linear", "model_version": "v"}])
    settings = Settings.from_env({"TICKCAST_REDIS_URL": redis_db_url, "TICKCAST_DATA_DIR": str(tmp_path),
                                  "TICKCAST_MODEL_STORE": store})
    app = create_app({"settings": settings})
    return schemathesis.openapi.from_wsgi("/openapi.json", app)


def test_no_server_errors(api_schema) -> None:  # type: ignore[no-untyped-def]
    """Every generated request gets a documented answer: never a 500, and every error is
    the JSON error object (503 is the documented answer for missing data/models)."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    ops = [r.ok() for r in api_schema.get_all_operations()]
    assert len(ops) >= 4  # /predict, /health, /metrics, /models (+ the document itself)

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.data())
    def run(data: st.DataObject) -> None:
        op = data.draw(st.sampled_from(ops))
        case = data.draw(op.as_strategy())
        response = case.call()
        assert response.status_code != 500, response.text
        assert response.status_code in (200, 400, 404, 405, 503), response.status_code
        if response.status_code >= 400:
            body = response.json()
            assert body["error"]["code"] and body["error"]["message"]

    run()
