"""The object store stopped mid-run and restarted: the feature flow keeps computing
features and predictions, snapshot publishing retries with backoff, and snapshots
resume once the store is back (a real SeaweedFS S3 server, stopped and restarted on
the same ports and directory; the live simulator as the source)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from models.registry import ModelRegistry, RegistryError, open_registry
from models.signing import SigningKey
from tests.helpers import wait_until
from tickcast.embedded import SeaweedS3

REPO = Path(__file__).resolve().parents[1]


def _versions(reg: ModelRegistry) -> list[str]:
    try:
        return [m["version"] for m in reg.list_versions("online-BTC_USD")]
    except RegistryError:
        return []


def _feature_ts(r: redis.Redis) -> int:
    v = r.hget("tickcast:features:BTC/USD", "ts_us")
    return int(v) if v is not None else 0


@pytest.mark.slow
def test_flow_survives_an_object_store_outage(tmp_path: Path, redis_db_url: str,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    s3 = SeaweedS3(tmp_path / "s3", buckets=("models",)).start()
    key = SigningKey.generate()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TICKCAST_", "BYTEWAX_", "AWS_"))}
    env.update(s3.aws_env())
    env.update(TICKCAST_SOURCE="sim", TICKCAST_SYMBOLS="BTC/USD", TICKCAST_DATA_DIR=str(tmp_path),
               TICKCAST_REDIS_URL=redis_db_url, TICKCAST_WINDOW_SECONDS="1", TICKCAST_HORIZON_SECONDS="2",
               TICKCAST_SNAPSHOT_EVERY="2", TICKCAST_SIM_RATE="20", TICKCAST_MODEL_STORE="s3://models/reg",
               TICKCAST_REGISTRY_SIGNING_KEY=key.to_text())
    for k, v in s3.aws_env().items():
        monkeypatch.setenv(k, v)
    reader = open_registry("s3://models/reg", public_keys=[key.public], timeout=1.0)
    r = redis.Redis.from_url(redis_db_url)
    log_path = tmp_path / "flow.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "bytewax.run", "dataflows.features"], cwd=REPO, env=env,
                                stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: proc.poll() is None and len(_versions(reader)) >= 2, 90, "first snapshots")
        s3.stop()
        down_at_ts = _feature_ts(r)
        time.sleep(10)  # several snapshot intervals with the store down
        assert proc.poll() is None, log_path.read_text()[-3000:]
        assert _feature_ts(r) >= down_at_ts + 5_000_000  # features kept flowing to Redis meanwhile
        text = log_path.read_text()
        assert "registry unavailable" in text and "pending, retry" in text, text[-3000:]

        s3.start()
        back = time.time()
        before = set(_versions(reader))

        def resumed() -> bool:
            new = set(_versions(reader)) - before
            return any(reader.manifest("online-BTC_USD", v)["created_at"] > _iso(back) for v in new)

        wait_until(resumed, 60, "snapshots after the restart")
        assert proc.poll() is None
        # the publisher logs right after the snapshot became visible: wait for the line, not race it
        wait_until(lambda: "registry available again after" in log_path.read_text(), 15, "the recovery log line")
        model, manifest = reader.load("online-BTC_USD")
        assert hasattr(model, "predict_one") and manifest["meta"]["samples_seen"] > 0
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        s3.stop()
        r.close()


def _iso(t: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def test_flow_without_a_signing_key_stops_with_one_line(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TICKCAST_", "BYTEWAX_"))}
    env.update(TICKCAST_SOURCE="sim", TICKCAST_DATA_DIR=str(tmp_path), TICKCAST_MODEL_STORE="s3://models/reg")
    r = subprocess.run([sys.executable, "-m", "bytewax.run", "dataflows.features"], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr[-2000:]
    (line,) = r.stderr.strip().splitlines()
    assert line.startswith("tickcast: TICKCAST_REGISTRY_SIGNING_KEY is not set"), line
    env["TICKCAST_REGISTRY_SIGNING_KEY"] = "00" * 32
    r = subprocess.run([sys.executable, "-m", "bytewax.run", "dataflows.features"], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "not a random key" in r.stderr and len(r.stderr.strip().splitlines()) == 1
