"""The inference API against a real Valkey server and a real registry (file and S3)."""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.linear_model import Ridge

from api import create_app
from models.predictor import Predictor
from models.registry import ModelRegistry
from models.signing import SigningKey
from tests.helpers import SIGNER, feature_row, predictor, publish
from tickcast.config import Settings
from tickcast.features import FEATURE_NAMES
from tickcast.model_inputs import model_inputs
from tickcast.stores.online import OnlineStore

INPUTS = list(model_inputs(100.0, {n: 1.0 for n in FEATURE_NAMES}) or {})

class Exploding:
    def predict(self, X: Any) -> Any:
        raise RuntimeError("boom")


@pytest.fixture(params=["file", "s3"])
def env(request: pytest.FixtureRequest, tmp_path: Path, redis_db_url: str,
        monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    monkeypatch.setenv("TICKCAST_REGISTRY_PUBLIC_KEYS", SIGNER.public.to_text())
    if request.param == "file":
        store = f"file://{tmp_path / 'models'}"
    else:
        for k, v in request.getfixturevalue("s3_server").items():
            monkeypatch.setenv(k, v)
        bucket = "api-" + uuid.uuid4().hex[:8]
        store = f"s3://{bucket}/reg"
        ModelRegistry(store).fs.mkdir(bucket)
    settings = Settings.from_env({"TICKCAST_REDIS_URL": redis_db_url, "TICKCAST_DATA_DIR": str(tmp_path),
                                  "TICKCAST_MODEL_STORE": store})
    return {"settings": settings, "registry": ModelRegistry(store, signer=SIGNER),
            "online": OnlineStore(redis_db_url)}


def client(env: dict[str, Any], refresh: float = 0.0, feature_cache: float = 0.0) -> Any:
    """An app that reads Redis on every request (the tests change rows between requests)
    unless ``feature_cache`` says otherwise."""
    settings = env["settings"].with_(feature_cache_seconds=feature_cache)
    return create_app({"settings": settings, "model_refresh_seconds": refresh}).test_client()


def test_feature_micro_cache_serves_a_row_at_most_its_ttl(env: dict[str, Any]) -> None:
    """TICKCAST_FEATURE_CACHE_SECONDS: a worker reuses a symbol's row for at most the TTL;
    the age it reports is the row's age at answer time; 'no features' is never cached."""
    ttl = 1.5
    publish(env["registry"], predictor(10.0))
    c = client(env, feature_cache=ttl)
    assert c.get("/predict?symbol=BTC/USD").json["error"]["code"] == "no_features"
    env["online"].put_features([feature_row(age_s=2.0, close=60000.0)])
    assert c.get("/predict?symbol=BTC/USD").json["price_at_as_of"] == 60000.0  # seen at once; model loaded
    time.sleep(ttl + 0.05)
    first = c.get("/predict?symbol=BTC/USD").json  # re-read from Redis: cached from now on
    env["online"].put_features([feature_row(age_s=1.0, close=61000.0)])
    time.sleep(0.05)
    again = c.get("/predict?symbol=BTC/USD").json
    assert again["price_at_as_of"] == 60000.0 and again["as_of"] == first["as_of"]  # within the TTL
    assert again["feature_age_seconds"] >= first["feature_age_seconds"]  # aged at answer time
    time.sleep(ttl)
    assert c.get("/predict?symbol=BTC/USD").json["price_at_as_of"] == 61000.0  # after the TTL


def test_predict_happy_path(env: dict[str, Any]) -> None:
    v = publish(env["registry"], predictor(10.0))
    env["online"].put_features([feature_row()])
    r = client(env).get("/predict?symbol=BTC/USD")
    assert r.status_code == 200, r.json
    body = r.json
    assert set(body) >= {"symbol", "predicted_price", "horizon_seconds", "as_of", "feature_age_seconds", "model"}
    assert body["model"] == {"name": "ridge", "version": v, "reason": body["model"]["reason"]}
    assert body["model"]["reason"].startswith("no live scoreboard") and body["horizon_seconds"] == 60
    assert body["predicted_price"] == pytest.approx(60000.0 * np.exp(10 / 1e4))
    assert 0.5 < body["feature_age_seconds"] < 30 and body["as_of"].endswith("Z")


@pytest.mark.parametrize(("query", "status", "code"), [
    ("", 400, "bad_request"), ("?symbol=", 400, "bad_request"), ("?symbol=btc-usd", 400, "bad_request"),
    ("?symbol=BTC/USD&model=magic", 400, "bad_request"), ("?symbol=DOGE/EUR", 404, "unknown_symbol"),
])
def test_bad_requests(env: dict[str, Any], query: str, status: int, code: str) -> None:
    r = client(env).get("/predict" + query)
    assert r.status_code == status and r.json["error"]["code"] == code and r.json["error"]["message"]


def test_errors_are_json_with_real_statuses(env: dict[str, Any]) -> None:
    c = client(env)
    r = c.get("/predict?symbol=BTC/USD")
    assert (r.status_code, r.json["error"]["code"]) == (503, "no_features")
    env["online"].put_features([feature_row(age_s=500)])
    r = c.get("/predict?symbol=BTC/USD")
    assert (r.status_code, r.json["error"]["code"]) == (503, "stale_features") and "500" in r.json["error"]["message"][:60]
    env["online"].put_features([feature_row()])
    r = c.get("/predict?symbol=BTC/USD")
    assert (r.status_code, r.json["error"]["code"]) == (503, "no_model")
    r = c.get("/predict?symbol=BTC/USD&model=production")
    assert (r.status_code, r.json["error"]["code"]) == (503, "no_model")
    assert c.get("/nowhere").json["error"]["code"] == "not_found"
    assert c.post("/predict?symbol=BTC/USD").status_code == 405


def test_model_raising_and_version_mismatch_are_503(env: dict[str, Any]) -> None:
    env["online"].put_features([feature_row()])
    bad = predictor(1.0)
    bad.estimator = Exploding()
    publish(env["registry"], bad)
    r = client(env).get("/predict?symbol=BTC/USD")
    assert (r.status_code, r.json["error"]["code"]) == (503, "model_error")
    publish(env["registry"], predictor(1.0, version="fs1-w60s"))
    r = client(env).get("/predict?symbol=BTC/USD")
    assert (r.status_code, r.json["error"]["code"]) == (503, "feature_version_mismatch")


def test_corrupt_snapshot_is_refused(env: dict[str, Any]) -> None:
    env["online"].put_features([feature_row()])
    reg = env["registry"]
    v = publish(reg, predictor(1.0))
    p = reg._p("models", "batch-BTC_USD", v + ".pkl")
    reg.fs.pipe_file(p, reg.fs.cat_file(p)[:-3] + b"xyz")
    r = client(env).get("/predict?symbol=BTC/USD")
    assert (r.status_code, r.json["error"]["code"]) == (503, "model_rejected")


def test_online_model_prediction(env: dict[str, Any]) -> None:
    env["online"].put_features([feature_row()])
    ts = int(time.time() * 1e6)
    env["online"].put_predictions([{"symbol": "BTC/USD", "ts_us": ts, "predicted_price": 60001.5,
                                    "horizon_seconds": 60, "model_name": "river-linear",
                                    "model_version": "river-linear-online", "price_at_ts": 60000.0}])
    r = client(env).get("/predict?symbol=BTC/USD&model=online")
    assert r.status_code == 200 and r.json["predicted_price"] == 60001.5
    assert r.json["model"] == {"name": "river-linear", "version": "river-linear-online",
                               "reason": "requested (model=online)"}
    # no production model yet: the default serves the online model's prediction
    assert client(env).get("/predict?symbol=BTC/USD").json["model"]["name"] == "river-linear"
    v = publish(env["registry"], predictor(1.0))
    assert client(env).get("/predict?symbol=BTC/USD").json["model"]["version"] == v


def test_stores_down_are_503_fast(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.helpers import free_port

    monkeypatch.setenv("TICKCAST_REGISTRY_PUBLIC_KEYS", SIGNER.public.to_text())
    s = Settings.from_env({"TICKCAST_REDIS_URL": f"redis://127.0.0.1:{free_port()}",
                           "TICKCAST_DATA_DIR": str(tmp_path)})
    c = create_app({"settings": s}).test_client()
    t0 = time.monotonic()
    r = c.get("/predict?symbol=BTC/USD")
    assert (r.status_code, r.json["error"]["code"]) == (503, "store_unavailable")
    assert time.monotonic() - t0 < 3
    h = c.get("/health")
    assert h.status_code == 503 and h.json["dependencies"]["online_store"]["ok"] is False


def test_registry_down_is_503(tmp_path: Path, redis_db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.helpers import free_port

    monkeypatch.setenv("TICKCAST_REGISTRY_PUBLIC_KEYS", SIGNER.public.to_text())
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "y")
    s = Settings.from_env({"TICKCAST_REDIS_URL": redis_db_url, "TICKCAST_MODEL_STORE": "s3://gone/x"})
    OnlineStore(redis_db_url).put_features([feature_row()])
    r = create_app({"settings": s}).test_client().get("/predict?symbol=BTC/USD")
    assert (r.status_code, r.json["error"]["code"]) == (503, "registry_unavailable")


def test_hot_swap_under_concurrent_requests(env: dict[str, Any]) -> None:
    reg = env["registry"]
    v1 = publish(reg, predictor(10.0))
    env["online"].put_features([feature_row()])
    app = create_app({"settings": env["settings"], "model_refresh_seconds": 0.05})
    failures: list[Any] = []
    versions: set[str] = set()
    stop = threading.Event()

    def hammer() -> None:
        c = app.test_client()
        while not stop.is_set():
            r = c.get("/predict?symbol=BTC/USD")
            if r.status_code != 200:
                failures.append(r.json)
            else:
                versions.add(r.json["model"]["version"])
    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 10
    while v1 not in versions and time.monotonic() < deadline:  # serving v1 before the swap
        time.sleep(0.05)
    time.sleep(0.2)
    v2 = publish(reg, predictor(-10.0))
    deadline = time.monotonic() + 10
    while v2 not in versions and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.2)
    stop.set()
    for t in threads:
        t.join()
    assert failures == []
    assert versions == {v1, v2}, app.extensions["tickcast"]["models"].errors()


def test_health_metrics_openapi_models(env: dict[str, Any]) -> None:
    publish(env["registry"], predictor(1.0))
    env["online"].put_features([feature_row()])
    c = client(env)
    assert c.get("/predict?symbol=BTC/USD").status_code == 200
    h = c.get("/health")
    assert h.status_code == 200 and h.json["dependencies"]["online_store"]["ok"] is True
    m = c.get("/metrics").get_data(as_text=True)
    assert "tickcast_api_request_seconds_bucket" in m and 'route="/predict"' in m
    assert 'tickcast_predictions_served_total{model="production",symbol="BTC/USD"} 1.0' in m
    doc = c.get("/openapi.json").json
    assert doc["openapi"].startswith("3.") and "/predict" in doc["paths"]
    models = c.get("/models").json
    assert models["aliases"][0]["alias"] == "production-BTC_USD" and "batch-BTC_USD" in models["models"]


def test_linear_fast_path_equals_scikit_learn() -> None:
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, len(INPUTS))) * 3 + 1
    y = X @ rng.normal(size=len(INPUTS)) + rng.normal(size=300)
    est = make_pipeline(StandardScaler(), Ridge()).fit(X, y)
    p = Predictor("ridge", "sklearn", INPUTS, est, "fs1-w10s", 60)
    for row in X[:20]:
        assert p.predict_return_bps(dict(zip(INPUTS, row, strict=True))) == pytest.approx(
            float(est.predict(row[None, :])[0]), rel=1e-12, abs=1e-12)


# -- hostile input and faults ------------------------------------------------------------------
def test_unknown_symbols_are_refused_before_any_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An unconfigured symbol is a 404 without touching Redis (here: nothing listens), and
    identifiers are matched whole ("BTC/USD\\n" is not BTC/USD)."""
    from tests.helpers import free_port

    monkeypatch.setenv("TICKCAST_REGISTRY_PUBLIC_KEYS", SIGNER.public.to_text())
    s = Settings.from_env({"TICKCAST_REDIS_URL": f"redis://127.0.0.1:{free_port()}",
                           "TICKCAST_DATA_DIR": str(tmp_path)})
    c = create_app({"settings": s}).test_client()
    for symbol, status, code in [("DOGE/EUR", 404, "unknown_symbol"), ("BTC/USD%0A", 400, "bad_request"),
                                 ("BTC/USD/X", 400, "bad_request")]:
        r = c.get("/predict?symbol=" + symbol)
        assert (r.status_code, r.json["error"]["code"]) == (status, code), symbol
    assert c.get("/predict?symbol=BTC/USD").json["error"]["code"] == "store_unavailable"  # the control
    assert c.get("/dashboard/data?symbol=BTC/USD%0A").status_code == 400


def test_planted_registry_files_never_take_health_or_predict_down(env: dict[str, Any]) -> None:
    """A production alias with a non-hex signature, a manifest of another key, a multi-MB
    garbage alias: /health stays 200, /predict answers 503 model_rejected (or keeps the
    model it has), /models leaves them out, /metrics counts them by kind."""
    reg = env["registry"]
    env["online"].put_features([feature_row()])
    publish(reg, predictor(1.0))
    c = client(env)
    assert c.get("/predict?symbol=BTC/USD").status_code == 200
    alias_key = reg._p("aliases", "production-BTC_USD.json")
    good = reg.fs.cat_file(alias_key)
    import json as _json

    doc = _json.loads(good)
    planted = {
        "bad_signature_shape": _json.dumps({**doc, "signature": "é" * 128}).encode(),
        "unknown_key": open_signed_by_other(reg, doc),
        "too_large": b"{" + b" " * (2 << 20) + b"}",
    }
    for kind, raw in planted.items():
        reg.fs.pipe_file(alias_key, raw)
        fresh = client(env)  # no model cached yet: 503 model_rejected
        r = fresh.get("/predict?symbol=BTC/USD")
        assert (r.status_code, r.json["error"]["code"]) == (503, "model_rejected"), (kind, r.json)
        assert c.get("/predict?symbol=BTC/USD").status_code == 200  # the app that had it keeps serving it
        h = fresh.get("/health")
        assert h.status_code == 200 and h.json["dependencies"]["registry"]["ok"] is True, (kind, h.json)
        assert fresh.get("/models").json["aliases"] == []
        assert f'tickcast_registry_rejected_total{{kind="{kind}"}}' in fresh.get("/metrics").get_data(as_text=True)
    reg.fs.pipe_file(alias_key, good)
    assert client(env).get("/predict?symbol=BTC/USD").status_code == 200


def open_signed_by_other(reg: ModelRegistry, doc: dict[str, Any]) -> bytes:
    """``doc`` re-signed by a key the API does not trust."""
    other = ModelRegistry(reg.url, signer=SigningKey.generate())
    return other._sign({k: v for k, v in doc.items() if k not in ("signature", "key_id")})


def test_key_rotation_keeps_production_serving(env: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """The API trusts the old and the new writer key: it serves the production model the
    old key signed, then the one the new key promotes, without a failed request."""
    new = SigningKey.generate()
    monkeypatch.setenv("TICKCAST_REGISTRY_PUBLIC_KEYS", f"{SIGNER.public.to_text()},{new.public.to_text()}")
    env["online"].put_features([feature_row()])
    v_old = publish(env["registry"], predictor(10.0))
    c = client(env)
    statuses, versions = [], []
    for _ in range(3):
        r = c.get("/predict?symbol=BTC/USD")
        statuses.append(r.status_code)
        versions.append(r.json.get("model", {}).get("version"))
    trainer = ModelRegistry(env["registry"].url, signer=new)  # the rotated trainer
    v_new = publish(trainer, predictor(-10.0))
    for _ in range(3):
        r = c.get("/predict?symbol=BTC/USD")
        statuses.append(r.status_code)
        versions.append(r.json.get("model", {}).get("version"))
    assert set(statuses) == {200} and versions[0] == v_old and versions[-1] == v_new
    # without the new key in the keyring the rotated model would be refused (the control)
    monkeypatch.setenv("TICKCAST_REGISTRY_PUBLIC_KEYS", SIGNER.public.to_text())
    r = client(env).get("/predict?symbol=BTC/USD")
    assert (r.status_code, r.json["error"]["code"]) == (503, "model_rejected")


def test_bearer_token_protects_all_but_the_public_routes(env: dict[str, Any]) -> None:
    token = "t0k3n-" + uuid.uuid4().hex
    env["online"].put_features([feature_row()])
    publish(env["registry"], predictor(1.0))
    e = {"TICKCAST_API_TOKEN": token, "TICKCAST_REGISTRY_PUBLIC_KEYS": SIGNER.public.to_text()}
    import os

    app = create_app({"settings": env["settings"], "env": {**os.environ, **e}})
    c = app.test_client()
    for path in ("/predict?symbol=BTC/USD", "/health", "/openapi.json", "/dashboard", "/dashboard/app.js"):
        assert c.get(path).status_code == 200, path
    for path in ("/models", "/metrics", "/dashboard/data?symbol=BTC/USD"):
        r = c.get(path)
        assert r.status_code == 401 and r.json["error"]["code"] == "unauthorized", path
        assert r.headers["WWW-Authenticate"].startswith("Bearer")
        assert c.get(path, headers={"Authorization": "Bearer wrong-" + token}).status_code == 401
        assert c.get(path, headers={"Authorization": f"Bearer {token}"}).status_code in (200, 503), path
    with pytest.raises(SystemExit, match="TICKCAST_API_TOKEN is 5 characters"):
        create_app({"settings": env["settings"], "env": {**os.environ, **e, "TICKCAST_API_TOKEN": "short"}})


def test_errors_redact_credentials_and_unexpected_ones_are_bare_500s(
        tmp_path: Path, redis_db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.helpers import free_port

    monkeypatch.setenv("TICKCAST_REGISTRY_PUBLIC_KEYS", SIGNER.public.to_text())
    s = Settings.from_env({"TICKCAST_REDIS_URL": f"redis://:hunter2-redis@127.0.0.1:{free_port()}/0",
                           "TICKCAST_CLICKHOUSE_URL": f"http://api:hunter2-ch@127.0.0.1:{free_port()}/db",
                           "TICKCAST_DATA_DIR": str(tmp_path)})
    c = create_app({"settings": s}).test_client()
    for path in ("/predict?symbol=BTC/USD", "/health", "/dashboard/data?symbol=BTC/USD"):
        r = c.get(path)
        assert r.status_code == 503 and "hunter2" not in r.get_data(as_text=True), (path, r.json)
    # an unexpected error: a JSON 500 without details, counted
    ok = Settings.from_env({"TICKCAST_REDIS_URL": redis_db_url, "TICKCAST_DATA_DIR": str(tmp_path)})
    app = create_app({"settings": ok})
    online = app.extensions["tickcast"]["online"]
    monkeypatch.setattr(online, "get_features", lambda symbol: 1 / 0)
    r = app.test_client().get("/predict?symbol=BTC/USD")
    assert r.status_code == 500 and r.json == {"error": {"code": "internal_error",
                                                         "message": "internal error; the server log has the details"}}
    assert 'tickcast_api_unexpected_errors_total{route="/predict"} 1.0' in app.test_client().get(
        "/metrics").get_data(as_text=True)


def test_health_and_models_are_cached(env: dict[str, Any]) -> None:
    """Within TICKCAST_API_CACHE_SECONDS a worker answers /health and /models from memory:
    N requests cost one registry listing, not N."""
    publish(env["registry"], predictor(1.0))
    app = create_app({"settings": env["settings"].with_(api_cache_seconds=60.0)})
    reg = app.extensions["tickcast"]["registry"]
    calls = {"ping": 0, "list_aliases": 0}
    for name in calls:
        real = getattr(reg, name)

        def counted(*a: Any, _real: Any = real, _name: str = name, **k: Any) -> Any:
            calls[_name] += 1
            return _real(*a, **k)
        setattr(reg, name, counted)
    c = app.test_client()
    for _ in range(20):
        assert c.get("/health").status_code == 200 and c.get("/models").status_code == 200
    assert calls == {"ping": 1, "list_aliases": 1}


def test_dashboard_queries_have_a_time_limit(tmp_path: Path, redis_db_url: str,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """TICKCAST_DASHBOARD_QUERY_SECONDS reaches the engine: with a limit no query can meet,
    /dashboard/data is a 503 naming the timeout (never a stuck worker); with the default
    the same data answers 200."""
    from tickcast.pipeline import run_batch
    from tickcast.sim import MarketSimulator, SimParams
    from tickcast.stores.offline import LakeStore
    from tickcast.stores.tables import candles_to_arrow, features_to_arrow

    monkeypatch.setenv("TICKCAST_REGISTRY_PUBLIC_KEYS", SIGNER.public.to_text())
    out = run_batch(MarketSimulator(["BTC/USD"], seed=1, params=SimParams(rate=5)).next_trades(20_000), 10, 0.0)
    lake = LakeStore(tmp_path / "offline")
    lake.ensure_schema()
    lake.insert("candles", candles_to_arrow(out.candles))
    lake.insert("features", features_to_arrow(out.features))
    lake.close()
    base = Settings.from_env({"TICKCAST_REDIS_URL": redis_db_url, "TICKCAST_DATA_DIR": str(tmp_path),
                              "TICKCAST_SYMBOLS": "BTC/USD"})
    ok = create_app({"settings": base}).test_client().get("/dashboard/data?symbol=BTC/USD&minutes=1440")
    assert ok.status_code == 200, ok.json
    slow = create_app({"settings": base.with_(dashboard_query_seconds=1e-6)})
    slow.config["TICKCAST_DASHBOARD_CACHE_SECONDS"] = 0
    r = slow.test_client().get("/dashboard/data?symbol=BTC/USD&minutes=1440")
    assert r.status_code == 503 and "Timeout exceeded" in r.json["error"]["message"], r.json


def test_auto_serves_the_live_choice_with_reason_and_intervals(env: dict[str, Any]) -> None:
    """The feature flow's scoreboard (tickcast.scoreboard, in Redis) decides what auto serves."""
    row = feature_row(close=60000.0)
    env["online"].put_features([row])
    board = {"symbol": "BTC/USD", "ts_us": row.ts_us, "choice": "persistence", "name": "persistence",
             "version": "persistence", "since": "2026-01-01T00:00:00.000000Z", "labels": 900, "window": 720,
             "reason": "default: no candidate has beaten persistence significantly yet",
             "candidates": {"persistence": {"mae": 36.6, "n": 720, "intervals_bps": {"80": 10.0, "95": 20.0}},
                            "production": {"mae": 37.9, "n": 720, "p_value": 0.97,
                                           "intervals_bps": {"80": 12.0, "95": 25.0}}}}
    env["online"].put_selections([board])
    v = publish(env["registry"], predictor(10.0))
    body = client(env).get("/predict?symbol=BTC/USD").json
    assert body["predicted_price"] == 60000.0 and body["model"]["name"] == "persistence"
    assert body["model"]["reason"] == board["reason"]
    assert body["intervals"]["80"] == pytest.approx([60000.0 / np.exp(1e-3), 60000.0 * np.exp(1e-3)])
    assert body["intervals"]["95"] == pytest.approx([60000.0 / np.exp(2e-3), 60000.0 * np.exp(2e-3)])
    # the production model on request, with its own intervals
    body = client(env).get("/predict?symbol=BTC/USD&model=production").json
    price = 60000.0 * np.exp(10 / 1e4)
    assert body["model"]["version"] == v and body["predicted_price"] == pytest.approx(price)
    assert body["intervals"]["80"] == pytest.approx([price / np.exp(1.2e-3), price * np.exp(1.2e-3)])
    # the scoreboard moves to production: auto follows
    env["online"].put_selections([{**board, "choice": "production", "reason": "production beats persistence"}])
    body = client(env).get("/predict?symbol=BTC/USD").json
    assert body["model"] == {"name": "ridge", "version": v, "reason": "production beats persistence"}
    # /models shows each symbol's live scoreboard
    live = client(env).get("/models").json["live"]
    assert live["BTC/USD"]["choice"] == "production" and live["BTC/USD"]["candidates"]["production"]["p_value"] == 0.97


def test_auto_falls_back_to_persistence_when_the_chosen_production_model_is_missing(env: dict[str, Any]) -> None:
    row = feature_row(close=60000.0)
    env["online"].put_features([row])
    env["online"].put_selections([{"symbol": "BTC/USD", "ts_us": row.ts_us, "choice": "production",
                                   "reason": "production beats persistence", "candidates": {}}])
    body = client(env).get("/predict?symbol=BTC/USD").json  # no alias in this registry
    assert body["predicted_price"] == 60000.0 and body["model"]["name"] == "persistence"
    assert body["model"]["reason"].startswith("the live choice is production but it is unavailable here (no_model")
    assert body["intervals"] == {}
