"""The model registry on a local directory and on a real S3 server (SeaweedFS)."""

from __future__ import annotations

import pickle
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from models.registry import ModelRegistry, NotFound, RegistryUnavailable, SnapshotRejected

KEY = b"test-key"


@pytest.fixture(params=["file", "s3"])
def registry(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModelRegistry:
    if request.param == "file":
        return ModelRegistry(f"file://{tmp_path / 'models'}", KEY)
    s3 = request.getfixturevalue("s3_server")
    for k, v in s3.items():
        monkeypatch.setenv(k, v)
    bucket = "reg-" + uuid.uuid4().hex[:10]
    reg = ModelRegistry(f"s3://{bucket}/tickcast", KEY)
    reg.fs.mkdir(bucket)
    return reg


class Model:
    def __init__(self, n: int, size: int = 1) -> None:
        self.n = n
        self.blob = bytes(size)


def test_save_load_round_trip_and_listing(registry: ModelRegistry) -> None:
    v1 = registry.save("m", Model(1), {"model_kind": "online:linear", "samples_seen": 10})
    v2 = registry.save("m", Model(2), {"model_kind": "online:linear", "samples_seen": 20})
    obj, man = registry.load("m")
    assert obj.n == 2 and man["version"] == v2 and man["meta"]["samples_seen"] == 20
    assert registry.load("m", v1)[0].n == 1
    assert [m["version"] for m in registry.list_versions("m")] == sorted([v1, v2], reverse=True)
    assert registry.list_models() == ["m"]
    assert "python" in man["libraries"] and len(man["sha256"]) == 64
    with pytest.raises(NotFound):
        registry.load("nope")


def _path(reg: ModelRegistry, *parts: str) -> str:
    return reg._p(*parts)  # the layout is documented; tests tamper with it deliberately


def test_modified_payload_is_refused(registry: ModelRegistry) -> None:
    v = registry.save("m", Model(1, 100), {})
    p = _path(registry, "models", "m", v + ".pkl")
    data = bytearray(registry.fs.cat_file(p))
    data[-5] ^= 0xFF
    registry.fs.pipe_file(p, bytes(data))
    with pytest.raises(SnapshotRejected, match="checksum"):
        registry.load("m", v)


def test_edited_manifest_and_foreign_key_are_refused(registry: ModelRegistry, tmp_path: Path) -> None:
    v = registry.save("m", Model(1), {"samples_seen": 1})
    p = _path(registry, "models", "m", v + ".json")
    registry.fs.pipe_file(p, registry.fs.cat_file(p).replace(b'"samples_seen":1', b'"samples_seen":9'))
    with pytest.raises(SnapshotRejected, match="signature"):
        registry.load("m", v)
    other = ModelRegistry(registry.url, b"another key")
    v2 = registry.save("m", Model(2), {})
    with pytest.raises(SnapshotRejected):
        other.load("m", v2)


class Evil:
    marker = ""

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path(self.marker).write_text, ("pwned",))


def test_malicious_pickle_signed_with_another_key_never_runs(registry: ModelRegistry, tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    evil = Evil()
    evil.marker = str(marker)
    attacker = ModelRegistry(registry.url, b"attacker key")
    v = attacker.save_payload("m", pickle.dumps(evil), {})
    with pytest.raises(SnapshotRejected):
        registry.load("m", v)
    assert not marker.exists()


def test_retention_keeps_newest_and_aliased(registry: ModelRegistry) -> None:
    versions = []
    for i in range(6):
        versions.append(registry.save("m", Model(i), {}))
        time.sleep(0.002)
    registry.set_alias("production-X", "m", versions[0], "first")
    assert registry.prune("m", keep=2) == 3
    left = {m["version"] for m in registry.list_versions("m")}
    assert left == {versions[0], versions[4], versions[5]}
    assert registry.load_alias("production-X")[0].n == 0


def test_alias_moves_atomically_under_concurrent_readers(registry: ModelRegistry) -> None:
    a = registry.save("m", Model(1, 200_000), {})
    b = registry.save("m", Model(2, 200_000), {})
    registry.set_alias("production-X", "m", a)
    seen: set[int] = set()
    errors: list[Exception] = []
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            try:
                seen.add(registry.load_alias("production-X")[0].n)
            except Exception as e:  # noqa: BLE001
                errors.append(e)
    threads = [threading.Thread(target=read) for _ in range(3)]
    for t in threads:
        t.start()
    for i in range(20):
        registry.set_alias("production-X", "m", b if i % 2 == 0 else a, "flip")
    stop.set()
    for t in threads:
        t.join()
    assert errors == [] and seen <= {1, 2} and seen


def test_reader_never_sees_a_partial_snapshot(registry: ModelRegistry) -> None:
    registry.save("m", Model(0, 300_000), {})
    errors: list[Exception] = []
    loaded: list[int] = []
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            try:
                loaded.append(registry.load("m")[0].n)
            except Exception as e:  # noqa: BLE001
                errors.append(e)
    t = threading.Thread(target=read)
    t.start()
    for i in range(1, 15):
        registry.save("m", Model(i, 300_000), {})
    stop.set()
    t.join()
    assert errors == [] and loaded and loaded == sorted(loaded)


def test_unreachable_store_fails_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.conftest import free_port

    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "y")
    reg = ModelRegistry("s3://nowhere/p", KEY)
    t0 = time.monotonic()
    with pytest.raises(RegistryUnavailable):
        reg.get_alias("production-X")
    assert time.monotonic() - t0 < 15
