"""The model registry: signed, checksummed model snapshots in object storage.

Where it lives
--------------
``TICKCAST_MODEL_STORE`` picks the store (see :func:`registry_from_settings`):

* ``file:///abs/path`` (the default: ``<TICKCAST_DATA_DIR>/models``) - a local directory;
* ``s3://bucket/prefix`` - any S3-compatible object store, through fsspec's ``s3fs``.
  Endpoint and credentials come from the standard AWS variables: ``AWS_ENDPOINT_URL``
  (e.g. ``http://127.0.0.1:8333`` for SeaweedFS or MinIO; ``AWS_ENDPOINT`` is accepted
  too; with a custom endpoint, path-style addressing is used), ``AWS_ACCESS_KEY_ID``,
  ``AWS_SECRET_ACCESS_KEY`` and ``AWS_REGION`` (or ``AWS_DEFAULT_REGION``); anything else
  botocore's credential chain finds also works. The bucket must exist.

Layout under the root::

    models/<name>/<version>.pkl    payload: the pickled model, written first
    models/<name>/<version>.json   signed manifest, written second = the publish step
    models/<name>/latest           signed pointer {name, version} to the newest version
    aliases/<alias>.json           signed pointer {alias, name, version, reason, set_at},
                                   e.g. aliases/production-BTC_USD.json

Version ids are UTC timestamps to the microsecond plus 8 random hex digits,
``20261124T101500.123456Z-1a2b3c4d``: they sort as strings in creation order (strictly
increasing within one process) and never collide between writers. A manifest holds
``format, name, version, sha256, size, created_at, libraries`` (python, river, sklearn,
xgboost, numpy - whichever are installed), ``meta`` (the caller's metadata) and ``hmac``.

Atomicity
---------
A version exists once, and only once, its manifest exists: :meth:`ModelRegistry.load`
reads the manifest first and the payload it names second, and the payload is complete
before the manifest is written. ``latest`` and aliases are single small objects that are
replaced as a whole, so a reader sees the old pointer or the new one, never a mix, and
every version a pointer can name is already fully published.

* **file://** - every object (payload, manifest, pointer) is written to a hidden
  temporary file in the same directory, flushed and ``fsync``-ed, then ``os.replace``-d
  onto its name (an atomic rename on POSIX: readers that open the name get the old
  inode or the new one), then the directory is fsynced so the rename survives a crash.
* **s3://** - every object is one ``PUT`` (S3 never exposes a partially uploaded object;
  since 2020 AWS S3 - and SeaweedFS, MinIO - give read-after-write consistency), so a
  pointer ``PUT`` is an atomic swap. Payloads above 100 MB use a multipart upload, which
  also becomes visible only when completed.

``prune`` unpublishes a version by deleting its manifest before its payload, and never
deletes the version ``latest`` or any alias points to; a reader racing a prune gets
:class:`NotFound` (``load`` of latest/alias retries), never half a model. Writers of one
model name are expected to be one process (the dataflow worker owning the symbol, or
``tickcast train``); concurrent writers stay correct, except that ``latest`` could
briefly name the second-newest version.

Signing
-------
Payloads are pickles, and unpickling executes arbitrary code chosen by whoever wrote
the bytes: a registry that unpickles whatever lies in a bucket is a remote-code-execution
hole. So every manifest and pointer carries ``hmac`` = HMAC-SHA256(key, canonical JSON
of all its other fields) - canonical = ``json.dumps(sort_keys=True, separators=(",",
":"))`` - and a manifest's fields include the payload's sha256 and size. ``load``

1. verifies the manifest's HMAC (and that it names the requested model and version),
2. reads the payload and checks its size and sha256 against the manifest,
3. and only then unpickles.

Anything unsigned, edited, signed with another key, or with a payload that does not
match raises :class:`SnapshotRejected` with the precise reason, and nothing of it is
unpickled. Each document has a ``format`` field, so a manifest cannot pass for a pointer
and vice versa; pointers name their alias, so one alias file copied over another is
refused too. The key is a shared secret from ``TICKCAST_REGISTRY_KEY`` (every process
that reads or writes the registry needs the same one; a value of >= 32 hex digits is
decoded as hex, any other string is used as its UTF-8 bytes). For a ``file://`` store
without the variable, a random 256-bit key is created once in ``<data dir>/registry.key``
(mode 0600) and reused. What signing does not stop: someone holding the key, and
replaying an older, genuinely signed pointer (a rollback to a model that was once
valid).

Failures
--------
:class:`RegistryError` is the base class; :class:`SnapshotRejected` (refused, never
unpickled), :class:`NotFound` (no such model, version or alias) and
:class:`RegistryUnavailable` (the store did not answer, or refused access) derive from
it. S3 calls have bounded connect/read timeouts (``timeout=``, default 3 s) and at most
one retry, so an unreachable store fails within seconds, never hangs. Instances are
safe to share between threads, and survive ``fork`` (the S3 client is re-created in the
child).
"""

from __future__ import annotations

import abc
import contextlib
import functools
import hashlib
import hmac
import importlib.metadata
import json
import logging
import os
import pickle
import platform
import re
import secrets
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from tickcast.config import ConfigError

log = logging.getLogger(__name__)

KEY_ENV = "TICKCAST_REGISTRY_KEY"
EXAMPLE_KEY = "change-me-to-a-long-random-secret"  # deploy/.env.example's placeholder: refused
KEY_FILE = "registry.key"
MANIFEST_FORMAT = "tickcast.registry.manifest/1"
LATEST_FORMAT = "tickcast.registry.latest/1"
ALIAS_FORMAT = "tickcast.registry.alias/1"
PICKLE_PROTOCOL = 5
DEFAULT_TIMEOUT_S = 3.0

# names, aliases and versions are single path components: no "/", no "..", no hidden files
_COMPONENT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_HEX_KEY_RE = re.compile(r"^(?:[0-9a-fA-F]{2}){16,}$")
_TMP_MARK = ".tmp-"
_LIBRARIES = {"river": "river", "sklearn": "scikit-learn", "xgboost": "xgboost", "numpy": "numpy"}

T = TypeVar("T")


class RegistryError(Exception):
    """Base class of every registry failure."""


class SnapshotRejected(RegistryError):
    """Tampered, unsigned, foreign (another key) or checksum mismatch: refused, never unpickled."""


class NotFound(RegistryError):
    """No such model, version or alias."""


class RegistryUnavailable(RegistryError):
    """The object store did not answer in time, or refused access."""


class RegistryKeyMissing(RegistryError, ConfigError):
    """``TICKCAST_REGISTRY_KEY`` is needed and not set (also a ConfigError: one line for the user)."""


# -- helpers --------------------------------------------------------------------------
def _canonical(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def _utc_iso(ns: int | None = None) -> str:
    ns = time.time_ns() if ns is None else ns
    return datetime.fromtimestamp(ns // 10**9, UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{ns // 1000 % 10**6:06d}Z"


_version_lock = threading.Lock()
_last_version_us = 0


def new_version() -> str:
    """A fresh version id: sortable (strictly increasing in this process) and unique."""
    global _last_version_us
    with _version_lock:
        us = max(time.time_ns() // 1000, _last_version_us + 1)
        _last_version_us = us
    stamp = datetime.fromtimestamp(us // 10**6, UTC).strftime("%Y%m%dT%H%M%S")
    return f"{stamp}.{us % 10**6:06d}Z-{secrets.token_hex(4)}"


@functools.lru_cache(maxsize=1)
def library_versions() -> dict[str, str]:
    """Versions of the libraries a pickle depends on (read from metadata; nothing is imported)."""
    out = {"python": platform.python_version()}
    for mod, dist in _LIBRARIES.items():
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            out[mod] = importlib.metadata.version(dist)
    return out


def parse_key(text: str) -> bytes:
    """``TICKCAST_REGISTRY_KEY`` -> key bytes: >= 32 hex digits are decoded, anything else is UTF-8."""
    s = text.strip()
    if not s:
        raise RegistryError(f"{KEY_ENV} is empty")
    if s == EXAMPLE_KEY:
        raise RegistryKeyMissing(f"{KEY_ENV} is still the placeholder of deploy/.env.example: anyone could sign "
                                 "a model pickle with it; set a long random secret (e.g. `openssl rand -hex 32`)")
    return bytes.fromhex(s) if _HEX_KEY_RE.match(s) else s.encode()


def _check_component(kind: str, value: Any) -> str:
    if not isinstance(value, str) or not _COMPONENT_RE.match(value) or _TMP_MARK in value:
        raise RegistryError(f"invalid {kind} {value!r}: expected letters, digits, '.', '_' or '-' "
                            "(not starting with '.' or '-', at most 200 characters)")
    return value


# -- storage backends -----------------------------------------------------------------
class _Backend(abc.ABC):
    """Byte objects under string keys ("models/m/v.json"); put() replaces atomically."""

    url: str
    root: str  # fsspec path of the store's root

    @abc.abstractmethod
    def get(self, key: str) -> bytes: ...
    @abc.abstractmethod
    def get_many(self, keys: list[str]) -> dict[str, bytes | RegistryError]: ...
    @abc.abstractmethod
    def put(self, key: str, data: bytes) -> None: ...
    @abc.abstractmethod
    def delete(self, key: str) -> None: ...
    @abc.abstractmethod
    def list(self, prefix: str) -> tuple[list[str], list[str]]: ...  # (files, directories)
    @abc.abstractmethod
    def etag(self, key: str) -> str | None: ...
    @abc.abstractmethod
    def cleanup_temp(self, prefix: str, older_than_s: float) -> None: ...


class _FileBackend(_Backend):
    def __init__(self, url: str, root: str) -> None:
        if not os.path.isabs(root):
            raise RegistryError(f"model store {url!r}: a file:// store needs an absolute path (file:///abs/path)")
        self.url = url
        self.root = os.path.normpath(root)

    def _path(self, key: str) -> str:
        return os.path.join(self.root, *key.split("/"))

    def _guard(self, what: str, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except (FileNotFoundError, NotADirectoryError):
            raise NotFound(f"{what} not found in {self.url}") from None
        except OSError as e:
            raise RegistryUnavailable(f"model store {self.url}: {what}: {e}") from e

    def get(self, key: str) -> bytes:
        def read() -> bytes:
            with open(self._path(key), "rb") as f:
                return f.read()
        return self._guard(key, read)

    def get_many(self, keys: list[str]) -> dict[str, bytes | RegistryError]:
        out: dict[str, bytes | RegistryError] = {}
        for k in keys:
            try:
                out[k] = self.get(k)
            except RegistryError as e:
                out[k] = e
        return out

    def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        d, base = os.path.split(path)

        def write() -> None:
            os.makedirs(d, exist_ok=True)
            tmp = os.path.join(d, f".{base}{_TMP_MARK}{os.getpid()}-{secrets.token_hex(4)}")
            try:
                with open(tmp, "wb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, path)  # atomic: readers see the old file or the new one
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
            fd = os.open(d, os.O_RDONLY)  # make the rename durable
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        self._guard(key, write)

    def delete(self, key: str) -> None:
        with contextlib.suppress(NotFound):
            self._guard(key, lambda: os.unlink(self._path(key)))

    def list(self, prefix: str) -> tuple[list[str], list[str]]:
        def scan() -> tuple[list[str], list[str]]:
            files: list[str] = []
            dirs: list[str] = []
            with os.scandir(self._path(prefix)) as it:
                for e in it:
                    if e.name.startswith("."):
                        continue  # temporary files of writers in progress
                    (dirs if e.is_dir() else files).append(e.name)
            return files, dirs
        try:
            return self._guard(prefix, scan)
        except NotFound:
            return [], []

    def etag(self, key: str) -> str | None:
        try:
            st = self._guard(key, lambda: os.stat(self._path(key)))
        except NotFound:
            return None
        return f"{st.st_ino}-{st.st_mtime_ns}-{st.st_size}"  # every replace is a new inode

    def cleanup_temp(self, prefix: str, older_than_s: float) -> None:
        d = self._path(prefix)
        with contextlib.suppress(OSError), os.scandir(d) as it:
            for e in it:
                if e.name.startswith(".") and _TMP_MARK in e.name:
                    with contextlib.suppress(OSError):
                        if time.time() - e.stat().st_mtime > older_than_s:
                            os.unlink(e.path)


class _S3Backend(_Backend):
    def __init__(self, url: str, root: str, timeout: float) -> None:
        self.url = url
        self.root = root.strip("/")
        self.bucket = self.root.split("/", 1)[0]
        if not self.bucket:
            raise RegistryError(f"model store {url!r}: expected s3://bucket/prefix")
        self.timeout = timeout
        self._lock = threading.Lock()
        self._fs: Any = None
        self._pid = -1

    @property
    def fs(self) -> Any:
        """The s3fs filesystem (re-created after a fork: aiobotocore clients are not fork-safe)."""
        if self._fs is None or self._pid != os.getpid():
            with self._lock:
                if self._fs is None or self._pid != os.getpid():
                    self._fs, self._pid = self._make_fs(), os.getpid()
        return self._fs

    def _make_fs(self) -> Any:
        import s3fs

        config: dict[str, Any] = {
            "connect_timeout": self.timeout, "read_timeout": self.timeout,
            "retries": {"total_max_attempts": 1, "mode": "standard"},  # one retry, in _guard
            # plain PUT/GET (no aws-chunked CRC trailers): what every S3-compatible server accepts;
            # integrity is the manifest's sha256 anyway
            "request_checksum_calculation": "when_required", "response_checksum_validation": "when_required",
        }
        client: dict[str, Any] = {}
        endpoint = os.environ.get("AWS_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT")
        if endpoint:
            client["endpoint_url"] = endpoint
            config["s3"] = {"addressing_style": "path"}
        region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        if region:
            client["region_name"] = region
        fs = s3fs.S3FileSystem(skip_instance_cache=True, use_listings_cache=False,
                               client_kwargs=client, config_kwargs=config)
        fs.retries = 1  # no s3fs retry loops (class default 5, nested twice in cat_file): see _guard
        return fs

    def _key(self, key: str) -> str:
        return f"{self.root}/{key}"

    def _deadline(self, size: int = 0) -> float:
        # hard wall-clock bound per attempt on top of botocore's socket timeouts (which
        # bound connecting and every read), allowing ~1 MB/s for big payloads
        return 2 * self.timeout + 1 + size / 1e6

    def _translate(self, e: BaseException, what: str) -> RegistryError:
        if isinstance(e, RegistryError):
            return e
        if isinstance(e, FileNotFoundError):
            code = getattr(e.__cause__, "response", {}).get("Error", {}).get("Code")
            if code == "NoSuchBucket":
                return RegistryUnavailable(f"model store {self.url}: bucket {self.bucket!r} does not exist")
            return NotFound(f"{what} not found in {self.url}")
        if isinstance(e, PermissionError):
            return RegistryUnavailable(f"model store {self.url}: access denied ({e}); check "
                                       "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY")
        # botocore/aiohttp connection errors, timeouts (FSTimeoutError has no message), 5xx
        err = RegistryUnavailable(f"model store {self.url} unavailable: {type(e).__name__}: "
                                  f"{str(e) or 'no answer in time'}")
        err.transient = True  # type: ignore[attr-defined]
        return err

    def _guard(self, what: str, fn: Callable[[], T]) -> T:
        # every call is idempotent (GET/HEAD/LIST/DELETE, or a PUT of the same bytes), so a
        # connection error or timeout is retried once; nothing else is
        for attempt in (1, 2):
            try:
                return fn()
            except Exception as e:
                err = self._translate(e, what)
                if isinstance(err, NotFound):
                    raise err from None
                if attempt == 1 and getattr(err, "transient", False):
                    time.sleep(0.1)
                    continue
                raise err from e
        raise AssertionError("unreachable")

    def get(self, key: str) -> bytes:
        return bytes(self._guard(key, lambda: self.fs.cat_file(self._key(key), max_concurrency=1,
                                                                         timeout=self._deadline(50_000_000))))

    def get_many(self, keys: list[str]) -> dict[str, bytes | RegistryError]:
        if not keys:
            return {}
        full = {self._key(k): k for k in keys}
        got = self._guard("listing", lambda: self.fs.cat(list(full), on_error="return", max_concurrency=1,
                                                         timeout=self._deadline() + len(keys) * 0.1))
        out: dict[str, bytes | RegistryError] = {}
        for path, key in full.items():
            v = got.get(path, got.get(path.lstrip("/")))
            if isinstance(v, bytes | bytearray):
                out[key] = bytes(v)
            else:
                out[key] = self._translate(v if isinstance(v, BaseException) else FileNotFoundError(path), key)
        return out

    def put(self, key: str, data: bytes) -> None:
        # one PUT (multipart above 100 MB): the object appears whole or not at all
        self._guard(key, lambda: self.fs.pipe_file(self._key(key), data, timeout=self._deadline(len(data))))

    def delete(self, key: str) -> None:
        with contextlib.suppress(NotFound):
            self._guard(key, lambda: self.fs.rm_file(self._key(key), timeout=self._deadline()))

    def list(self, prefix: str) -> tuple[list[str], list[str]]:
        try:
            entries = self._guard(prefix, lambda: self.fs.ls(self._key(prefix), detail=True, refresh=True,
                                                              timeout=self._deadline()))
        except NotFound:
            return [], []
        files: list[str] = []
        dirs: list[str] = []
        for e in entries:
            base = str(e["name"]).rstrip("/").rsplit("/", 1)[-1]
            (dirs if e.get("type") == "directory" else files).append(base)
        return files, dirs

    def etag(self, key: str) -> str | None:
        bucket, _, k = self._key(key).partition("/")
        try:
            head = self._guard(key, lambda: self.fs.call_s3("head_object", Bucket=bucket, Key=k,
                                                            timeout=self._deadline()))
        except NotFound:
            return None
        return str(head.get("ETag", "")).strip('"') + "-" + str(head.get("LastModified", ""))

    def cleanup_temp(self, prefix: str, older_than_s: float) -> None:
        pass  # S3 writes leave no temporary objects


# -- the registry ---------------------------------------------------------------------
class ModelRegistry:
    """Signed model snapshots with versions, a ``latest`` pointer, aliases and retention.

    Construct with :func:`open_registry` or :func:`registry_from_settings`.
    """

    def __init__(self, url: str, key: bytes, *, timeout: float = DEFAULT_TIMEOUT_S) -> None:
        if not isinstance(key, bytes | bytearray) or not key:
            raise RegistryError("the model registry needs a non-empty signing key (bytes)")
        self.url = url.rstrip("/")
        self._key = bytes(key)
        self._write_lock = threading.Lock()
        self._backend: _Backend
        if url.startswith("file://"):
            self._backend = _FileBackend(self.url, url[len("file://"):])
        elif url.startswith("s3://"):
            self._backend = _S3Backend(self.url, url[len("s3://"):], timeout)
        else:
            raise RegistryError(f"model store must be file:///abs/path or s3://bucket/prefix, got {url!r}")

    def __repr__(self) -> str:
        return f"ModelRegistry({self.url!r})"

    @property
    def fs(self) -> Any:
        """The fsspec filesystem underneath (for tests and bucket provisioning)."""
        if isinstance(self._backend, _S3Backend):
            return self._backend.fs
        import fsspec

        return fsspec.filesystem("file")

    def _p(self, *parts: str) -> str:
        """Full fsspec path of an object (layout in the module docstring)."""
        return "/".join((self._backend.root, *parts))

    # -- signing ----------------------------------------------------------------------
    def _mac(self, body: dict[str, Any]) -> str:
        return hmac.new(self._key, _canonical(body), hashlib.sha256).hexdigest()

    def _sign(self, body: dict[str, Any]) -> bytes:
        body = json.loads(_canonical(body))  # normalise (tuples, numpy scalars...) before signing
        return _canonical({**body, "hmac": self._mac(body)}) + b"\n"

    def _verify(self, raw: bytes, fmt: str, what: str) -> dict[str, Any]:
        try:
            doc = json.loads(raw)
        except ValueError:
            raise SnapshotRejected(f"{what}: not a JSON document (corrupt or tampered)") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("hmac"), str):
            raise SnapshotRejected(f"{what}: unsigned (no hmac field); refusing it")
        body = {k: v for k, v in doc.items() if k != "hmac"}
        if not hmac.compare_digest(doc["hmac"], self._mac(body)):
            raise SnapshotRejected(f"{what}: HMAC signature does not match: the document was modified, "
                                   f"or signed with another key (check {KEY_ENV})")
        if body.get("format") != fmt:
            raise SnapshotRejected(f"{what}: is a {body.get('format')!r} document, expected {fmt!r}")
        return body

    # -- publishing -------------------------------------------------------------------
    def save(self, name: str, obj: Any, meta: dict[str, Any]) -> str:
        """Pickle ``obj`` and publish it as a new version of ``name``; returns the version id."""
        return self.save_payload(name, pickle.dumps(obj, protocol=PICKLE_PROTOCOL), meta)

    def save_payload(self, name: str, payload: bytes, meta: dict[str, Any]) -> str:
        """Publish an already-pickled model (payload, then signed manifest, then ``latest``)."""
        _check_component("model name", name)
        if not isinstance(meta, dict):
            raise TypeError(f"meta must be a dict, got {type(meta).__name__}")
        version = new_version()
        self._backend.put(f"models/{name}/{version}.pkl", bytes(payload))
        manifest = {
            "format": MANIFEST_FORMAT, "name": name, "version": version,
            "sha256": hashlib.sha256(payload).hexdigest(), "size": len(payload),
            "created_at": _utc_iso(), "libraries": library_versions(), "pickle_protocol": PICKLE_PROTOCOL,
            "meta": meta,
        }
        self._backend.put(f"models/{name}/{version}.json", self._sign(manifest))  # published
        with self._write_lock:  # never move latest backwards (two threads saving one name)
            current = self._read_latest(name, missing_ok=True, strict=False)
            if current is None or current < version:
                self._backend.put(f"models/{name}/latest",
                                  self._sign({"format": LATEST_FORMAT, "name": name, "version": version}))
        return version

    def set_alias(self, alias: str, name: str, version: str, reason: str = "") -> None:
        """Point ``alias`` at ``name@version`` (which must exist and verify): one atomic write."""
        _check_component("alias", alias)
        self.manifest(name, version)
        self._backend.put(f"aliases/{alias}.json", self._sign({
            "format": ALIAS_FORMAT, "alias": alias, "name": name, "version": version,
            "reason": str(reason), "set_at": _utc_iso()}))

    # -- reading ----------------------------------------------------------------------
    def manifest(self, name: str, version: str) -> dict[str, Any]:
        """The verified manifest of ``name@version`` (without its hmac)."""
        _check_component("model name", name)
        _check_component("version", version)
        raw = self._backend.get(f"models/{name}/{version}.json")
        return self._check_manifest(raw, name, version)

    def _check_manifest(self, raw: bytes, name: str, version: str) -> dict[str, Any]:
        what = f"manifest of {name}@{version}"
        m = self._verify(raw, MANIFEST_FORMAT, what)
        if m.get("name") != name or m.get("version") != version:
            raise SnapshotRejected(f"{what}: it is signed for {m.get('name')}@{m.get('version')} "
                                   "(copied from elsewhere)")
        if not (isinstance(m.get("sha256"), str) and _SHA256_RE.match(m["sha256"])
                and isinstance(m.get("size"), int) and m["size"] >= 0):
            raise SnapshotRejected(f"{what}: no valid sha256/size")
        return m

    def _read_latest(self, name: str, *, missing_ok: bool, strict: bool = True) -> str | None:
        try:
            raw = self._backend.get(f"models/{name}/latest")
        except NotFound:
            if missing_ok:
                return None
            raise
        try:
            doc = self._verify(raw, LATEST_FORMAT, f"latest pointer of {name}")
            if doc.get("name") != name:
                raise SnapshotRejected(f"latest pointer of {name}: it is signed for {doc.get('name')!r}")
            return _check_component("version", doc.get("version"))
        except RegistryError:
            if strict:
                raise
            return None  # overwritten by the next save

    def latest_version(self, name: str) -> str:
        """The version ``latest`` points to (or the newest published one, if no pointer yet)."""
        _check_component("model name", name)
        v = self._read_latest(name, missing_ok=True)
        if v is not None:
            return v
        versions = self._versions(name)
        if not versions:
            raise NotFound(f"model {name!r} has no versions in {self.url}")
        return versions[0]

    def load(self, name: str, version: str | None = None, alias: str | None = None) -> tuple[Any, dict[str, Any]]:
        """``(model, manifest)`` of ``name`` at ``version``, at what ``alias`` points to, or latest.

        The manifest's HMAC and the payload's size and sha256 are verified before
        unpickling; any mismatch raises :class:`SnapshotRejected`.
        """
        _check_component("model name", name)
        if version is not None and alias is not None:
            raise ValueError("give version or alias, not both")
        if version is not None:
            return self._load_version(name, version)
        for attempt in range(3):  # a pointer may name a version pruned a moment later
            if alias is not None:
                a = self.get_alias(alias)
                if a is None:
                    raise NotFound(f"alias {alias!r} is not set in {self.url}")
                if a["name"] != name:
                    raise NotFound(f"alias {alias!r} points to model {a['name']!r}, not {name!r}")
                v = a["version"]
            else:
                v = self.latest_version(name)
            try:
                return self._load_version(name, v)
            except NotFound:
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def load_alias(self, alias: str) -> tuple[Any, dict[str, Any]]:
        """``(model, manifest)`` of what ``alias`` points to."""
        a = self.get_alias(alias)
        if a is None:
            raise NotFound(f"alias {alias!r} is not set in {self.url}")
        return self.load(a["name"], alias=alias)

    def _load_version(self, name: str, version: str) -> tuple[Any, dict[str, Any]]:
        m = self.manifest(name, version)
        payload = self._backend.get(f"models/{name}/{version}.pkl")
        what = f"payload of {name}@{version}"
        if len(payload) != m["size"]:
            raise SnapshotRejected(f"{what}: {len(payload)} bytes, the signed manifest says {m['size']} "
                                   "(truncated or modified); not unpickled")
        digest = hashlib.sha256(payload).hexdigest()
        if not hmac.compare_digest(digest, m["sha256"]):
            raise SnapshotRejected(f"{what}: sha256 {digest[:16]}... does not match the signed manifest's "
                                   f"{m['sha256'][:16]}... (modified or corrupt); not unpickled")
        try:
            obj = pickle.loads(payload)  # noqa: S301 - authenticated (HMAC) and checksummed above
        except Exception as e:
            raise RegistryError(f"{name}@{version} is authentic but cannot be unpickled here "
                                f"({type(e).__name__}: {e}); it was written with {m.get('libraries')}, "
                                f"this process has {library_versions()}") from e
        return obj, m

    def get_alias(self, alias: str) -> dict[str, Any] | None:
        """``{alias, name, version, reason, set_at}``, verified; ``None`` if the alias is not set."""
        _check_component("alias", alias)
        try:
            raw = self._backend.get(f"aliases/{alias}.json")
        except NotFound:
            return None
        return self._check_alias(raw, alias)

    def _check_alias(self, raw: bytes, alias: str) -> dict[str, Any]:
        a = self._verify(raw, ALIAS_FORMAT, f"alias {alias}")
        if a.get("alias") != alias:
            raise SnapshotRejected(f"alias {alias}: the pointer is signed for alias {a.get('alias')!r} "
                                   "(copied from another alias)")
        _check_component("model name", a.get("name"))
        _check_component("version", a.get("version"))
        return {k: a.get(k) for k in ("alias", "name", "version", "reason", "set_at")}

    def current_alias_etag(self, alias: str) -> str | None:
        """A cheap change token for ``alias`` (one HEAD / stat, not verified): compare it with
        the previous one and call :meth:`get_alias`/:meth:`load_alias` only when it changed.
        ``None`` when the alias is not set."""
        _check_component("alias", alias)
        return self._backend.etag(f"aliases/{alias}.json")

    def list_aliases(self) -> list[dict[str, Any]]:
        """Every verified alias (unverifiable ones are logged and left out)."""
        files, _ = self._backend.list("aliases")
        names = sorted(f[:-5] for f in files if f.endswith(".json") and _COMPONENT_RE.match(f[:-5]))
        out = []
        for alias, raw in self._backend.get_many([f"aliases/{a}.json" for a in names]).items():
            a_name = alias[len("aliases/"):-5]
            if isinstance(raw, NotFound):
                continue
            if isinstance(raw, RegistryError):
                raise raw
            try:
                out.append(self._check_alias(raw, a_name))
            except RegistryError as e:
                log.warning("registry %s: ignoring alias %s: %s", self.url, a_name, e)
        return sorted(out, key=lambda a: a["alias"])

    def list_models(self) -> list[str]:
        _, dirs = self._backend.list("models")
        return sorted(d for d in dirs if _COMPONENT_RE.match(d))

    def _versions(self, name: str) -> list[str]:
        """Published versions of ``name`` (those with a manifest), newest first."""
        files, _ = self._backend.list(f"models/{name}")
        vs = (f[:-5] for f in files if f.endswith(".json"))
        return sorted((v for v in vs if _COMPONENT_RE.match(v) and _TMP_MARK not in v), reverse=True)

    def list_versions(self, name: str) -> list[dict[str, Any]]:
        """Verified manifests of ``name``, newest first (ones failing verification are logged, skipped)."""
        _check_component("model name", name)
        versions = self._versions(name)
        got = self._backend.get_many([f"models/{name}/{v}.json" for v in versions])
        out = []
        for v in versions:
            raw = got[f"models/{name}/{v}.json"]
            if isinstance(raw, NotFound):
                continue  # pruned meanwhile
            if isinstance(raw, RegistryError):
                raise raw
            try:
                out.append(self._check_manifest(raw, name, v))
            except SnapshotRejected as e:
                log.warning("registry %s: ignoring %s", self.url, e)
        return out

    # -- retention --------------------------------------------------------------------
    def _pins(self) -> set[tuple[str, str]]:
        """(name, version) of every alias - read without trusting signatures: keeping more is safe."""
        files, _ = self._backend.list("aliases")
        pins = set()
        for raw in self._backend.get_many([f"aliases/{f}" for f in files if f.endswith(".json")]).values():
            if isinstance(raw, NotFound):
                continue
            if isinstance(raw, RegistryError):
                raise raw
            with contextlib.suppress(ValueError, AttributeError):
                doc = json.loads(raw)
                pins.add((str(doc.get("name")), str(doc.get("version"))))
        return pins

    def prune(self, name: str, keep: int) -> int:
        """Delete versions of ``name`` beyond the ``keep`` newest, except the ones an alias or
        ``latest`` points to; also payloads of failed saves older than those kept. Returns
        the number of versions deleted."""
        _check_component("model name", name)
        if keep < 0:
            raise ValueError("keep must be >= 0")
        versions = self._versions(name)
        pinned = {v for (n, v) in self._pins() if n == name}
        latest = self._read_latest(name, missing_ok=True, strict=False)
        if latest is not None:
            pinned.add(latest)
        kept = set(versions[:keep]) | pinned
        removed = 0
        for v in versions[keep:]:
            if v in pinned:
                continue
            self._backend.delete(f"models/{name}/{v}.json")  # unpublish first...
            self._backend.delete(f"models/{name}/{v}.pkl")  # ...then free the payload
            removed += 1
        # payloads whose save died before the manifest; only older than every kept version,
        # so a save in progress (always newer) is left alone
        if kept:
            oldest_kept = min(kept)
            files, _ = self._backend.list(f"models/{name}")
            published = set(versions)
            for f in files:
                if f.endswith(".pkl") and f[:-4] not in published and f[:-4] < oldest_kept:
                    self._backend.delete(f"models/{name}/{f}")
        self._backend.cleanup_temp(f"models/{name}", older_than_s=3600)
        return removed


# -- construction ---------------------------------------------------------------------
def open_registry(url: str, key: bytes, *, timeout: float = DEFAULT_TIMEOUT_S) -> ModelRegistry:
    """A registry on ``file:///abs/path`` or ``s3://bucket/prefix`` (S3 settings from the
    ``AWS_ENDPOINT_URL`` / ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` / ``AWS_REGION``
    environment variables), signing with ``key``."""
    return ModelRegistry(url, key, timeout=timeout)


def _local_key(data_dir: Path) -> bytes:
    """The key in ``<data_dir>/registry.key``, created once (0600, published atomically)."""
    path = data_dir.resolve() / KEY_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{KEY_FILE}{_TMP_MARK}{os.getpid()}-{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_hex(32) + "\n")
                f.flush()
                os.fsync(f.fileno())
            with contextlib.suppress(FileExistsError):
                os.link(tmp, path)  # atomic, and never replaces a key another process made
        finally:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        log.warning("%s is readable by others (mode %o); it signs the model registry", path, mode)
    try:
        return parse_key(path.read_text())
    except RegistryError:
        raise RegistryError(f"{path} is empty; delete it to create a new key "
                            "(snapshots signed with the old key will be refused)") from None


def registry_from_settings(settings: Any, *, timeout: float = DEFAULT_TIMEOUT_S) -> ModelRegistry:
    """The registry at ``settings.model_store_url`` with the key from ``TICKCAST_REGISTRY_KEY``;
    without it, a ``file://`` store uses (and creates once) ``<data_dir>/registry.key`` and any
    other store raises :class:`RegistryKeyMissing`."""
    url = settings.model_store_url
    raw = os.environ.get(KEY_ENV, "")
    if raw.strip():
        key = parse_key(raw)
    elif url.startswith("file://"):
        key = _local_key(Path(settings.data_dir))
    else:
        raise RegistryKeyMissing(
            f"{KEY_ENV} is not set: the model store {url} is shared, so every process that reads or "
            f"writes it needs the same signing key (e.g. {KEY_ENV}=$(openssl rand -hex 32))")
    return ModelRegistry(url, key, timeout=timeout)


__all__ = [
    "ModelRegistry", "NotFound", "RegistryError", "RegistryKeyMissing", "RegistryUnavailable",
    "SnapshotRejected", "library_versions", "new_version", "open_registry", "parse_key",
    "registry_from_settings",
]
