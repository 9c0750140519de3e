"""The model registry: signed model snapshots in object storage (fsspec).

``TICKCAST_MODEL_STORE`` = ``file:///abs/path`` (default: ``<data dir>/models``) or
``s3://bucket/prefix`` (endpoint and credentials from the standard ``AWS_ENDPOINT_URL``,
``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_REGION`` variables).

Layout under the root::

    models/<name>/<version>.pkl    payload (a pickle)
    models/<name>/<version>.json   signed manifest: metadata, sha256 and size of the payload
    models/<name>/latest.json      signed pointer to the newest version
    aliases/<alias>.json           signed pointer, e.g. "production-BTC_USD"

**Atomicity.** The payload is written first, the manifest second: a version without
a manifest does not exist, so a reader never sees a partial snapshot. Pointers are one
small object: on a file system written to a temporary name, fsynced and renamed
(atomic replace); on S3 a single PUT (atomic by S3's semantics). Moving an alias is
one pointer write, so readers get the old or the new version, never a mix.

**Signing.** Snapshots are pickles, and unpickling runs code. Every manifest and
pointer carries an HMAC-SHA256 made with the key from ``TICKCAST_REGISTRY_KEY``
(for ``file://`` stores without that variable, a random key is created once in
``<data dir>/registry.key``, mode 0600). :meth:`ModelRegistry.load` verifies the
manifest's signature and then the payload's sha256 **before** unpickling; anything
tampered, unsigned or signed with another key raises :class:`SnapshotRejected` and is
never executed.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import pickle
import platform
import secrets
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import fsspec


class RegistryError(Exception):
    pass


class SnapshotRejected(RegistryError):
    """Tampered, unsigned, foreign or corrupt: refused without unpickling."""


class NotFound(RegistryError):
    pass


class RegistryUnavailable(RegistryError):
    """The object store did not answer."""


def _canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()


def _lib_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for mod in ("river", "sklearn", "xgboost", "numpy"):
        try:
            out[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001, S112 - optional libraries
            continue
    return out


class ModelRegistry:
    def __init__(self, url: str, key: bytes) -> None:
        if not key:
            raise RegistryError("the registry needs a signing key")
        self.url = url.rstrip("/")
        self._key = key
        self._lock = threading.Lock()
        if url.startswith("file://"):
            self.fs = fsspec.filesystem("file")
            self.root = url[len("file://"):].rstrip("/")
            self.local = True
        elif url.startswith("s3://"):
            opts: dict[str, Any] = {"config_kwargs": {"connect_timeout": 3, "read_timeout": 10,
                                                      "retries": {"max_attempts": 2}}}
            endpoint = os.environ.get("AWS_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT")
            if endpoint:
                opts["endpoint_url"] = endpoint
            if os.environ.get("AWS_REGION"):
                opts.setdefault("client_kwargs", {})["region_name"] = os.environ["AWS_REGION"]
            self.fs = fsspec.filesystem("s3", skip_instance_cache=True, **opts)
            self.root = url[len("s3://"):].rstrip("/")
            self.local = False
        else:
            raise RegistryError(f"model store must be file:///abs/path or s3://bucket/prefix; got {url!r}")

    # -- low level ----------------------------------------------------------------
    def _p(self, *parts: str) -> str:
        return "/".join((self.root, *parts))

    def _io(self, fn: Any) -> Any:
        try:
            return fn()
        except FileNotFoundError:
            raise
        except RegistryError:
            raise
        except Exception as e:  # botocore / network errors
            raise RegistryUnavailable(f"model store {self.url} unavailable: {type(e).__name__}: {e}") from e

    def _put(self, path: str, data: bytes) -> None:
        def go() -> None:
            if self.local:
                d = os.path.dirname(path)
                os.makedirs(d, exist_ok=True)
                tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
                with open(tmp, "wb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, path)
            else:
                self.fs.pipe_file(path, data)
        self._io(go)

    def _get(self, path: str) -> bytes:
        try:
            return bytes(self._io(lambda: self.fs.cat_file(path)))
        except FileNotFoundError:
            raise NotFound(f"{path} not found in the registry") from None

    def _sign(self, body: dict[str, Any]) -> bytes:
        sig = hmac.new(self._key, _canonical(body), hashlib.sha256).hexdigest()
        return _canonical({"body": body, "hmac": sig})

    def _verify(self, raw: bytes, what: str) -> dict[str, Any]:
        try:
            doc = json.loads(raw)
            body, sig = doc["body"], doc["hmac"]
        except (ValueError, KeyError, TypeError):
            raise SnapshotRejected(f"{what}: not a signed registry document") from None
        want = hmac.new(self._key, _canonical(body), hashlib.sha256).hexdigest()
        if not isinstance(sig, str) or not hmac.compare_digest(sig, want):
            raise SnapshotRejected(f"{what}: signature does not match (tampered, or signed with another key)")
        return dict(body)

    # -- API ---------------------------------------------------------------------
    def save(self, name: str, obj: Any, meta: dict[str, Any]) -> str:
        return self.save_payload(name, pickle.dumps(obj, protocol=5), meta)

    def save_payload(self, name: str, payload: bytes, meta: dict[str, Any]) -> str:
        """Publish an already-pickled model; returns the new version id."""
        ns = time.time_ns()  # sortable: time to the nanosecond, then a random tag
        version = time.strftime("%Y%m%dT%H%M%S", time.gmtime(ns // 10**9)) + f".{ns % 10**9:09d}Z-" + secrets.token_hex(3)
        self._put(self._p("models", name, version + ".pkl"), payload)
        manifest = {"name": name, "version": version, "sha256": hashlib.sha256(payload).hexdigest(),
                    "size": len(payload), "created_at": time.time(), "libraries": _lib_versions(),
                    "meta": meta}
        self._put(self._p("models", name, version + ".json"), self._sign(manifest))
        self._put(self._p("models", name, "latest.json"), self._sign({"name": name, "version": version}))
        return version

    def manifest(self, name: str, version: str) -> dict[str, Any]:
        return self._verify(self._get(self._p("models", name, version + ".json")), f"{name}@{version}")

    def latest_version(self, name: str) -> str:
        return str(self._verify(self._get(self._p("models", name, "latest.json")), f"{name} latest")["version"])

    def load(self, name: str, version: str | None = None) -> tuple[Any, dict[str, Any]]:
        version = version or self.latest_version(name)
        m = self.manifest(name, version)
        if m.get("name") != name or m.get("version") != version:
            raise SnapshotRejected(f"{name}@{version}: manifest names {m.get('name')}@{m.get('version')}")
        payload = self._get(self._p("models", name, version + ".pkl"))
        if len(payload) != m["size"] or hashlib.sha256(payload).hexdigest() != m["sha256"]:
            raise SnapshotRejected(f"{name}@{version}: payload checksum mismatch (modified or partial)")
        return pickle.loads(payload), m  # noqa: S301 - signed and checksummed above

    def set_alias(self, alias: str, name: str, version: str, reason: str = "") -> None:
        self.manifest(name, version)  # must exist and verify
        self._put(self._p("aliases", alias + ".json"),
                  self._sign({"alias": alias, "name": name, "version": version, "reason": reason,
                              "set_at": time.time()}))

    def get_alias(self, alias: str) -> dict[str, Any] | None:
        try:
            return self._verify(self._get(self._p("aliases", alias + ".json")), f"alias {alias}")
        except NotFound:
            return None

    def load_alias(self, alias: str) -> tuple[Any, dict[str, Any]]:
        a = self.get_alias(alias)
        if a is None:
            raise NotFound(f"alias {alias!r} is not set")
        return self.load(a["name"], a["version"])

    def list_models(self) -> list[str]:
        try:
            entries = self._io(lambda: self.fs.ls(self._p("models"), detail=False))
        except FileNotFoundError:
            return []
        return sorted(os.path.basename(str(e).rstrip("/")) for e in entries)

    def list_aliases(self) -> list[dict[str, Any]]:
        try:
            entries = self._io(lambda: self.fs.ls(self._p("aliases"), detail=False))
        except FileNotFoundError:
            return []
        out = []
        for e in sorted(entries):
            base = os.path.basename(str(e))
            if base.endswith(".json"):
                a = self.get_alias(base[:-5])
                if a:
                    out.append(a)
        return out

    def _versions(self, name: str) -> list[str]:
        try:
            entries = self._io(lambda: self.fs.ls(self._p("models", name), detail=False))
        except FileNotFoundError:
            return []
        vs = [os.path.basename(str(e))[:-5] for e in entries if str(e).endswith(".json")]
        return sorted((v for v in vs if v != "latest"), reverse=True)

    def list_versions(self, name: str) -> list[dict[str, Any]]:
        out = []
        for v in self._versions(name):
            try:
                out.append(self.manifest(name, v))
            except NotFound:
                continue  # pruned meanwhile
        return out

    def prune(self, name: str, keep: int) -> int:
        """Delete versions beyond the ``keep`` newest, except any an alias points to."""
        pinned = {(a["name"], a["version"]) for a in self.list_aliases()}
        removed = 0
        for v in self._versions(name)[keep:]:
            if (name, v) in pinned:
                continue
            for ext in (".json", ".pkl"):  # manifest first: the version disappears atomically
                path = self._p("models", name, v + ext)
                with contextlib.suppress(FileNotFoundError):
                    self._io(lambda path=path: self.fs.rm_file(path))
            removed += 1
        return removed


def open_registry(url: str, key: bytes) -> ModelRegistry:
    return ModelRegistry(url, key)


def registry_from_settings(settings: Any) -> ModelRegistry:
    url = settings.model_store_url
    key_text = os.environ.get("TICKCAST_REGISTRY_KEY", "")
    if key_text:
        return ModelRegistry(url, key_text.encode())
    if not url.startswith("file://"):
        raise RegistryError("TICKCAST_REGISTRY_KEY must be set for a remote model store "
                            "(every process that reads or writes the registry needs the same key)")
    key_file = Path(settings.data_dir).resolve() / "registry.key"
    key_file.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
    except FileExistsError:
        pass
    for _ in range(50):  # another process may be writing it right now
        key = key_file.read_text().strip()
        if key:
            return ModelRegistry(url, key.encode())
        time.sleep(0.02)
    raise RegistryError(f"{key_file} is empty; delete it to make a new key")
