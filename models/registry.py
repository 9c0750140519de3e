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
xgboost, numpy - whichever are installed), ``meta`` (the caller's metadata), ``key_id`` and ``signature``.

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
hole. So every manifest and pointer carries ``key_id`` and ``signature`` = the Ed25519
signature (:mod:`models.signing`), by the writer's private key, of the canonical JSON of
all its other fields - canonical = ``json.dumps(sort_keys=True, separators=(",", ":"))``
- and a manifest's fields include the payload's sha256 and size. Writers (the feature
flow, ``tickcast train``) hold a private key; readers (the API) hold only a keyring of
public keys, so a reader cannot sign, and several public keys can be trusted at once
(rotation: the new key signs, readers trust old and new until no document of the old
one is still in use). ``load``

1. reads at most ``MAX_DOCUMENT_BYTES`` of the manifest; checks it is a JSON object
   whose ``signature`` has the shape of an Ed25519 signature (128 hex digits) and whose
   ``key_id`` is in the keyring, then verifies the signature (and that it names the
   requested model and version, with a sha256 and a size <= ``max_payload_bytes``),
2. reads at most ``size + 1`` bytes of the payload and checks its size and sha256,
3. and only then unpickles.

Anything unsigned, edited, signed by a key not in the keyring, oversized, of the wrong
shape, or with a payload that does not match raises :class:`SnapshotRejected` (with
``kind`` naming the check) and nothing of it is unpickled; every rejection is counted
in ``ModelRegistry.rejected`` (and passed to ``on_reject``, which the API turns into a
Prometheus counter) and logged (once a minute per document). Each document has a
``format`` field, so a manifest cannot pass for a pointer and vice versa; pointers name
their alias, so one alias file copied over another is refused too.

Documents signed with the shared HMAC key of earlier versions (an ``hmac`` field) are
refused like unsigned ones (kind ``legacy_hmac``): every reader held that key, so any
of them could have forged one. ``python -m models.registry resign`` re-signs the ones
that still verify under the old key (run once by an operator holding both keys).
What signing does not stop: someone holding a private key, and replaying an older,
genuinely signed pointer (a rollback to a model that was once valid).

Keys (:func:`registry_from_settings`): writers read ``TICKCAST_REGISTRY_SIGNING_KEY``,
everyone reads ``TICKCAST_REGISTRY_PUBLIC_KEYS`` (a writer always trusts its own public
key). A ``file://`` store with neither set uses ``<data dir>/registry-keys/``: the
first writer creates ``signing.key`` (0600) and appends its public key to
``public.keys``, which readers re-read when they meet an unknown key id - the laptop
case needs no configuration. Any other store needs the variables set.

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
import collections
import contextlib
import functools
import hashlib
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

from models.signing import KEY_ID_RE as _KEY_ID_RE
from models.signing import SIGNATURE_RE as _SIGNATURE_RE
from models.signing import KeyError_, Keyring, PublicKey, SigningKey, parse_public_keys
from tickcast.config import ConfigError, registry_keys

log = logging.getLogger(__name__)

LEGACY_KEY_ENV = "TICKCAST_REGISTRY_KEY"  # the shared HMAC key of earlier versions: no longer used
SIGNING_KEY_ENV = "TICKCAST_REGISTRY_SIGNING_KEY"
PUBLIC_KEYS_ENV = "TICKCAST_REGISTRY_PUBLIC_KEYS"
KEY_DIR = "registry-keys"  # under the data dir, for file:// stores without configured keys
SIGNING_KEY_FILE = "signing.key"
PUBLIC_KEYS_FILE = "public.keys"
MAX_DOCUMENT_BYTES = 1 << 20  # manifests and pointers are a few kB
DEFAULT_MAX_PAYLOAD_BYTES = 256 << 20
MANIFEST_FORMAT = "tickcast.registry.manifest/1"
LATEST_FORMAT = "tickcast.registry.latest/1"
ALIAS_FORMAT = "tickcast.registry.alias/1"
PICKLE_PROTOCOL = 5
DEFAULT_TIMEOUT_S = 3.0

# names, aliases and versions are single path components: no "/", no "..", no hidden files
_COMPONENT_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")  # always fullmatch ("$" allows a "\n")
_SHA256_RE = re.compile(r"[0-9a-f]{64}")
_TMP_MARK = ".tmp-"
_LIBRARIES = {"river": "river", "sklearn": "scikit-learn", "xgboost": "xgboost", "numpy": "numpy"}

T = TypeVar("T")


def _symbol_part(symbol: str) -> str:
    return symbol.replace("/", "_")


# ---- names: the one place that says what the models of a symbol are called -------------

def production_alias(symbol: str) -> str:
    """The alias ``tickcast train`` moves when a model passes the gate and ``/predict`` serves.

    >>> production_alias("BTC/USD")
    'production-BTC_USD'
    """
    return "production-" + _symbol_part(symbol)


def batch_model_name(symbol: str) -> str:
    """The registry name of a symbol's batch-trained models (promoted or candidates).

    >>> batch_model_name("BTC/USD")
    'batch-BTC_USD'
    """
    return "batch-" + _symbol_part(symbol)


def online_model_name(symbol: str) -> str:
    """The registry name of a symbol's online-model snapshots (written by the feature flow).

    >>> online_model_name("BTC/USD")
    'online-BTC_USD'
    """
    return "online-" + _symbol_part(symbol)


class RegistryError(Exception):
    """Base class of every registry failure."""


class SnapshotRejected(RegistryError):
    """Tampered, unsigned, foreign (a key not in the keyring), oversized or checksum
    mismatch: refused, never unpickled. ``kind`` names the failed check."""

    def __init__(self, message: str, kind: str = "rejected") -> None:
        super().__init__(message)
        self.kind = kind


class NotFound(RegistryError):
    """No such model, version or alias."""


class RegistryUnavailable(RegistryError):
    """The object store did not answer in time, or refused access."""


class RegistryKeyMissing(RegistryError, ConfigError):
    """A signing key or the public keys are needed and not set (also a ConfigError: one line)."""


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


def _check_component(kind: str, value: Any) -> str:
    if not isinstance(value, str) or not _COMPONENT_RE.fullmatch(value) or _TMP_MARK in value:
        raise RegistryError(f"invalid {kind} {value!r}: expected letters, digits, '.', '_' or '-' "
                            "(not starting with '.' or '-', at most 200 characters)")
    return value


# -- storage backends -----------------------------------------------------------------
class _Backend(abc.ABC):
    """Byte objects under string keys ("models/m/v.json"); put() replaces atomically."""

    url: str
    root: str  # fsspec path of the store's root

    @abc.abstractmethod
    def get(self, key: str, max_bytes: int) -> bytes: ...  # at most max_bytes (more = truncated)
    @abc.abstractmethod
    def get_many(self, keys: list[str], max_bytes: int) -> dict[str, bytes | RegistryError]: ...
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

    def get(self, key: str, max_bytes: int) -> bytes:
        def read() -> bytes:
            with open(self._path(key), "rb") as f:
                return f.read(max_bytes)
        return self._guard(key, read)

    def get_many(self, keys: list[str], max_bytes: int) -> dict[str, bytes | RegistryError]:
        out: dict[str, bytes | RegistryError] = {}
        for k in keys:
            try:
                out[k] = self.get(k, max_bytes)
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


def _empty_range(e: BaseException) -> bool:
    """S3 answers a ranged GET of an empty object with 416."""
    return "range is not satisfiable" in str(e).lower() or "InvalidRange" in str(e)


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

    def get(self, key: str, max_bytes: int) -> bytes:
        # a ranged GET: a planted multi-GB object costs at most max_bytes
        def fetch() -> bytes:
            try:
                return bytes(self.fs.cat_file(self._key(key), start=0, end=max_bytes, max_concurrency=1,
                                              timeout=self._deadline(max_bytes)))
            except OSError as e:
                if _empty_range(e):
                    return b""
                raise
        return self._guard(key, fetch)

    def get_many(self, keys: list[str], max_bytes: int) -> dict[str, bytes | RegistryError]:
        if not keys:
            return {}
        full = {self._key(k): k for k in keys}
        got = self._guard("listing", lambda: self.fs.cat(list(full), on_error="return", max_concurrency=1,
                                                         start=0, end=max_bytes,
                                                         timeout=self._deadline() + len(keys) * 0.1))
        out: dict[str, bytes | RegistryError] = {}
        for path, key in full.items():
            v = got.get(path, got.get(path.lstrip("/")))
            if isinstance(v, bytes | bytearray):
                out[key] = bytes(v)
            elif isinstance(v, OSError) and _empty_range(v):
                out[key] = b""
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

    def __init__(self, url: str, keyring: Keyring | None = None, *, signer: SigningKey | None = None,
                 max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES, timeout: float = DEFAULT_TIMEOUT_S,
                 on_reject: Callable[[str], None] | None = None) -> None:
        if keyring is not None and not isinstance(keyring, Keyring):
            raise TypeError(f"keyring must be a models.signing.Keyring, got {type(keyring).__name__}")
        if signer is not None and not isinstance(signer, SigningKey):
            raise TypeError(f"signer must be a models.signing.SigningKey, got {type(signer).__name__}")
        self.url = url.rstrip("/")
        self.keyring = keyring if keyring is not None else Keyring()
        self.signer = signer
        if signer is not None and self.keyring.get(signer.key_id) is None:
            self.keyring.add(signer.public)  # a writer reads back what it wrote
        if max_payload_bytes < 1:
            raise ValueError("max_payload_bytes must be >= 1")
        self.max_payload_bytes = int(max_payload_bytes)
        self.rejected: collections.Counter[str] = collections.Counter()  # by kind; see on_reject
        self.on_reject = on_reject
        self._logged: dict[tuple[str, str], float] = {}
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
    def _reject(self, what: str, kind: str, reason: str) -> SnapshotRejected:
        """Count and log (once a minute per document and kind) a refused document."""
        self.rejected[kind] += 1
        if self.on_reject is not None:
            with contextlib.suppress(Exception):
                self.on_reject(kind)
        now = time.monotonic()
        if now - self._logged.get((what, kind), -1e9) >= 60.0:
            if len(self._logged) > 10_000:
                self._logged.clear()
            self._logged[(what, kind)] = now
            log.warning("registry %s: rejected %s (%s): %s", self.url, what, kind, reason)
        return SnapshotRejected(f"{what}: {reason}", kind)

    def _sign(self, body: dict[str, Any]) -> bytes:
        if self.signer is None:
            raise RegistryKeyMissing(f"this registry handle of {self.url} is read-only (no signing key): "
                                     f"set {SIGNING_KEY_ENV} on writers")
        body = json.loads(_canonical(body))  # normalise (tuples, numpy scalars...) before signing
        body.pop("signature", None)
        body["key_id"] = self.signer.key_id
        return _canonical({**body, "signature": self.signer.sign(_canonical(body))}) + b"\n"

    def _verify(self, raw: bytes, fmt: str, what: str) -> dict[str, Any]:
        """Shape first, then the signature: never raises anything but SnapshotRejected."""
        if len(raw) >= MAX_DOCUMENT_BYTES:
            raise self._reject(what, "too_large", f"larger than {MAX_DOCUMENT_BYTES} bytes; not a registry document")
        try:
            doc = json.loads(raw)
        except (ValueError, RecursionError):
            raise self._reject(what, "not_json", "not a JSON document (corrupt or tampered)") from None
        if not isinstance(doc, dict):
            raise self._reject(what, "not_json", "not a JSON object (corrupt or tampered)")
        sig, kid = doc.get("signature"), doc.get("key_id")
        if sig is None:
            if "hmac" in doc:
                raise self._reject(what, "legacy_hmac", "signed with the shared HMAC key of an earlier version, "
                                   "which every reader held; re-sign it (`python -m models.registry resign`) "
                                   "or publish it again")
            raise self._reject(what, "unsigned", "unsigned (no signature field); refusing it")
        if not isinstance(sig, str) or not _SIGNATURE_RE.fullmatch(sig):
            raise self._reject(what, "bad_signature_shape", "the signature is not 128 lower-case hex digits")
        if not isinstance(kid, str) or not _KEY_ID_RE.fullmatch(kid):
            raise self._reject(what, "bad_key_id", "key_id is missing or malformed")
        key = self.keyring.get(kid)
        if key is None:
            raise self._reject(what, "unknown_key", f"signed by {kid}, which is not in the keyring "
                               f"({', '.join(self.keyring.ids()) or 'empty'}); check {PUBLIC_KEYS_ENV}")
        body = {k: v for k, v in doc.items() if k != "signature"}
        try:
            data = _canonical(body)
        except (ValueError, TypeError, RecursionError):
            raise self._reject(what, "not_json", "cannot be canonicalised") from None
        if not key.verify(sig, data):
            raise self._reject(what, "bad_signature", f"signature by {kid} does not match: the document was "
                               "modified, or signed with another key")
        body.pop("key_id", None)
        if body.get("format") != fmt:
            raise self._reject(what, "wrong_format", f"is a {str(body.get('format'))[:60]!r} document, "
                               f"expected {fmt!r}")
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
        if self.signer is None:
            raise RegistryKeyMissing(f"this registry handle of {self.url} is read-only (no signing key): "
                                     f"set {SIGNING_KEY_ENV} on writers")
        if len(payload) > self.max_payload_bytes:
            raise RegistryError(f"{name}: the pickled model is {len(payload)} bytes, above the limit of "
                                f"{self.max_payload_bytes} (TICKCAST_REGISTRY_MAX_PAYLOAD_MB): readers would "
                                "refuse it")
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
        """The verified manifest of ``name@version`` (without its signature)."""
        _check_component("model name", name)
        _check_component("version", version)
        raw = self._backend.get(f"models/{name}/{version}.json", MAX_DOCUMENT_BYTES)
        return self._check_manifest(raw, name, version)

    def _check_manifest(self, raw: bytes, name: str, version: str) -> dict[str, Any]:
        what = f"manifest of {name}@{version}"
        m = self._verify(raw, MANIFEST_FORMAT, what)
        if m.get("name") != name or m.get("version") != version:
            raise self._reject(what, "misplaced", f"it is signed for {str(m.get('name'))[:200]}@"
                               f"{str(m.get('version'))[:60]} (copied from elsewhere)")
        size = m.get("size")
        if not (isinstance(m.get("sha256"), str) and _SHA256_RE.fullmatch(m["sha256"])
                and isinstance(size, int) and not isinstance(size, bool) and size >= 0):
            raise self._reject(what, "bad_manifest", "no valid sha256/size")
        if size > self.max_payload_bytes:
            raise self._reject(what, "too_large", f"its payload is {size} bytes, above the limit of "
                               f"{self.max_payload_bytes} (TICKCAST_REGISTRY_MAX_PAYLOAD_MB)")
        if not isinstance(m.get("meta", {}), dict):
            raise self._reject(what, "bad_manifest", "meta is not an object")
        return m

    def _read_latest(self, name: str, *, missing_ok: bool, strict: bool = True) -> str | None:
        try:
            raw = self._backend.get(f"models/{name}/latest", MAX_DOCUMENT_BYTES)
        except NotFound:
            if missing_ok:
                return None
            raise
        try:
            doc = self._verify(raw, LATEST_FORMAT, f"latest pointer of {name}")
            if doc.get("name") != name:
                raise self._reject(f"latest pointer of {name}", "misplaced",
                                   f"it is signed for {str(doc.get('name'))[:200]!r}")
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
        # at most size + 1 bytes: a payload grown after signing is detected without reading it all
        payload = self._backend.get(f"models/{name}/{version}.pkl", m["size"] + 1)
        what = f"payload of {name}@{version}"
        if len(payload) != m["size"]:
            shown = f"more than {m['size']}" if len(payload) > m["size"] else str(len(payload))
            raise self._reject(what, "size_mismatch", f"{shown} bytes, the signed manifest says {m['size']} "
                               "(truncated or modified); not unpickled")
        digest = hashlib.sha256(payload).hexdigest()
        if digest != m["sha256"]:
            raise self._reject(what, "checksum", f"sha256 {digest[:16]}... does not match the signed manifest's "
                               f"{m['sha256'][:16]}... (modified or corrupt); not unpickled")
        try:
            obj = pickle.loads(payload)  # noqa: S301 - signed (Ed25519) and checksummed above
        except Exception as e:
            raise RegistryError(f"{name}@{version} is authentic but cannot be unpickled here "
                                f"({type(e).__name__}: {e}); it was written with {m.get('libraries')}, "
                                f"this process has {library_versions()}") from e
        return obj, m

    def get_alias(self, alias: str) -> dict[str, Any] | None:
        """``{alias, name, version, reason, set_at}``, verified; ``None`` if the alias is not set."""
        _check_component("alias", alias)
        try:
            raw = self._backend.get(f"aliases/{alias}.json", MAX_DOCUMENT_BYTES)
        except NotFound:
            return None
        return self._check_alias(raw, alias)

    def _check_alias(self, raw: bytes, alias: str) -> dict[str, Any]:
        a = self._verify(raw, ALIAS_FORMAT, f"alias {alias}")
        if a.get("alias") != alias:
            raise self._reject(f"alias {alias}", "misplaced", f"the pointer is signed for alias "
                               f"{str(a.get('alias'))[:200]!r} (copied from another alias)")
        try:
            _check_component("model name", a.get("name"))
            _check_component("version", a.get("version"))
        except RegistryError as e:
            raise self._reject(f"alias {alias}", "bad_pointer", str(e)) from None
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
        names = sorted(f[:-5] for f in files if f.endswith(".json") and _COMPONENT_RE.fullmatch(f[:-5]))
        out = []
        for alias, raw in self._backend.get_many([f"aliases/{a}.json" for a in names], MAX_DOCUMENT_BYTES).items():
            a_name = alias[len("aliases/"):-5]
            if isinstance(raw, NotFound):
                continue
            if isinstance(raw, RegistryError):
                raise raw
            with contextlib.suppress(SnapshotRejected):  # counted and logged by _reject
                out.append(self._check_alias(raw, a_name))
        return sorted(out, key=lambda a: a["alias"])

    def ping(self) -> None:
        """One cheap call (a listing of the aliases): raises :class:`RegistryUnavailable`
        when the store does not answer; verifies nothing."""
        self._backend.list("aliases")

    def list_models(self) -> list[str]:
        _, dirs = self._backend.list("models")
        return sorted(d for d in dirs if _COMPONENT_RE.fullmatch(d))

    def _versions(self, name: str) -> list[str]:
        """Published versions of ``name`` (those with a manifest), newest first."""
        files, _ = self._backend.list(f"models/{name}")
        vs = (f[:-5] for f in files if f.endswith(".json"))
        return sorted((v for v in vs if _COMPONENT_RE.fullmatch(v) and _TMP_MARK not in v), reverse=True)

    def list_versions(self, name: str) -> list[dict[str, Any]]:
        """Verified manifests of ``name``, newest first (ones failing verification are logged, skipped)."""
        _check_component("model name", name)
        versions = self._versions(name)
        got = self._backend.get_many([f"models/{name}/{v}.json" for v in versions], MAX_DOCUMENT_BYTES)
        out = []
        for v in versions:
            raw = got[f"models/{name}/{v}.json"]
            if isinstance(raw, NotFound):
                continue  # pruned meanwhile
            if isinstance(raw, RegistryError):
                raise raw
            with contextlib.suppress(SnapshotRejected):  # counted and logged by _reject
                out.append(self._check_manifest(raw, name, v))
        return out

    # -- retention --------------------------------------------------------------------
    def _pins(self) -> set[tuple[str, str]]:
        """(name, version) of every alias - read without trusting signatures: keeping more is safe."""
        files, _ = self._backend.list("aliases")
        pins = set()
        keys = [f"aliases/{f}" for f in files if f.endswith(".json")]
        for raw in self._backend.get_many(keys, MAX_DOCUMENT_BYTES).values():
            if isinstance(raw, NotFound):
                continue
            if isinstance(raw, RegistryError):
                raise raw
            with contextlib.suppress(ValueError, AttributeError, RecursionError):
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
def open_registry(url: str, *, signer: SigningKey | None = None, public_keys: list[PublicKey] | None = None,
                  timeout: float = DEFAULT_TIMEOUT_S,
                  max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES) -> ModelRegistry:
    """A registry on ``file:///abs/path`` or ``s3://bucket/prefix`` (S3 settings from the
    ``AWS_ENDPOINT_URL`` / ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` / ``AWS_REGION``
    environment variables), trusting ``public_keys`` (plus the signer's own), signing with
    ``signer`` (None: a read-only handle)."""
    return ModelRegistry(url, Keyring(public_keys or ()), signer=signer, timeout=timeout,
                         max_payload_bytes=max_payload_bytes)


def _create_once(path: Path, text: str) -> None:
    """Create ``path`` (0600) with ``text`` unless it exists; atomic (never replaces)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}{_TMP_MARK}{os.getpid()}-{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)  # atomic, and never replaces a key another process made
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


class _LocalKeys:
    """``<data dir>/registry-keys/``: the laptop's zero-configuration key pair."""

    def __init__(self, data_dir: Path) -> None:
        self.dir = data_dir.resolve() / KEY_DIR
        self.signing = self.dir / SIGNING_KEY_FILE
        self.public = self.dir / PUBLIC_KEYS_FILE
        self._lock = threading.Lock()
        self._mtime = -1

    def signer(self) -> SigningKey:
        if not self.signing.exists():
            _create_once(self.signing, SigningKey.generate().to_text() + "\n")
        mode = self.signing.stat().st_mode & 0o777
        if mode & 0o077:
            log.warning("%s is readable by others (mode %o); it signs the model registry", self.signing, mode)
        try:
            key = SigningKey.parse(self.signing.read_text())
        except KeyError_ as e:
            raise RegistryKeyMissing(f"{self.signing}: {e}; delete it to create a new key pair "
                                     "(snapshots signed with the old key will then be refused)") from None
        if key.public not in self.read():
            with self._lock, open(self.public, "a") as f:  # O_APPEND: one short line, atomic
                f.write(f"{key.public.to_text()}  # {key.key_id}\n")
        return key

    def read(self) -> list[PublicKey]:
        try:
            text = self.public.read_text()
        except FileNotFoundError:
            return []
        try:
            return parse_public_keys(text, str(self.public))
        except KeyError_ as e:
            raise RegistryKeyMissing(str(e)) from None

    def refresh(self) -> list[PublicKey]:
        """New keys since the last look (cheap: one stat unless the file changed)."""
        try:
            mtime = self.public.stat().st_mtime_ns
        except FileNotFoundError:
            return []
        if mtime == self._mtime:
            return []
        self._mtime = mtime
        return self.read()


def _configured_keys(signing: str, public_keys: str) -> tuple[SigningKey | None, list[PublicKey]]:
    def value(name: str, v: str) -> str:
        if v.startswith("/"):  # a file (e.g. a mounted Kubernetes Secret)
            try:
                return Path(v).read_text().strip()
            except OSError as e:
                raise RegistryKeyMissing(f"{name}={v}: cannot read it ({e.strerror})") from None
        return v

    signer = None
    raw = value(SIGNING_KEY_ENV, signing)
    if raw:
        try:
            signer = SigningKey.parse(raw)
        except KeyError_ as e:
            raise type(e)(f"{SIGNING_KEY_ENV}: {e}") from None
    raw = value(PUBLIC_KEYS_ENV, public_keys)
    public = parse_public_keys(raw, PUBLIC_KEYS_ENV) if raw else []
    return signer, public


_warned_legacy = False


def registry_from_settings(settings: Any, *, writer: bool = False, timeout: float = DEFAULT_TIMEOUT_S,
                           env: Any = None) -> ModelRegistry:
    """The registry at ``settings.model_store_url``.

    Readers (``writer=False``, e.g. the API) get public keys only: from
    ``TICKCAST_REGISTRY_PUBLIC_KEYS``, else, for a ``file://`` store, from
    ``<data_dir>/registry-keys/public.keys`` (re-read when an unknown key id shows up).
    Writers (the flows, ``tickcast train``) also get a signing key: from
    ``TICKCAST_REGISTRY_SIGNING_KEY``, else, for a ``file://`` store, the key pair under
    ``<data_dir>/registry-keys/`` (created once). A shared store (s3://) without the
    variables raises :class:`RegistryKeyMissing`; a malformed or weak key raises a
    ConfigError - both one line.

    The variables are those ``Settings.from_env`` read into ``settings`` (its
    ``registry_*`` fields); an ``env`` mapping, when given, is read instead."""
    global _warned_legacy
    keys = registry_keys(env) if env is not None else {
        "registry_signing_key": settings.registry_signing_key,
        "registry_public_keys": settings.registry_public_keys,
        "registry_legacy_key": settings.registry_legacy_key,
    }
    url = settings.model_store_url
    if keys["registry_legacy_key"] and not _warned_legacy:
        _warned_legacy = True
        log.warning("%s (the shared HMAC key) is no longer used: writers sign with %s, readers trust %s",
                    LEGACY_KEY_ENV, SIGNING_KEY_ENV, PUBLIC_KEYS_ENV)
    signer, public = _configured_keys(keys["registry_signing_key"], keys["registry_public_keys"])
    local = _LocalKeys(Path(settings.data_dir)) if url.startswith("file://") else None
    max_payload = int(getattr(settings, "registry_max_payload_mb", DEFAULT_MAX_PAYLOAD_BYTES >> 20) * (1 << 20))
    refresh: Callable[[], list[PublicKey]] | None = None
    if writer and signer is None:
        if local is None:
            raise RegistryKeyMissing(
                f"{SIGNING_KEY_ENV} is not set: writers of the shared model store {url} sign what they publish "
                "(create a key pair with `python -m models.signing`; readers get the public key)")
        signer = local.signer()
    if not public:
        if local is not None:
            public = local.read()
            refresh = local.refresh
        elif signer is None:
            raise RegistryKeyMissing(
                f"{PUBLIC_KEYS_ENV} is not set: readers of the shared model store {url} need the writers' "
                "public keys (see `python -m models.signing`)")
    if signer is not None and not writer:
        # a reader (the API) needs no private key: trust its public half, but say so
        log.warning("%s is set in a process that only reads the registry; readers need only %s "
                    "(remove the private key from this process's environment)", SIGNING_KEY_ENV, PUBLIC_KEYS_ENV)
        public = [*public, signer.public]
    keyring = Keyring(public, refresh=refresh)
    return ModelRegistry(url, keyring, signer=signer if writer else None, timeout=timeout,
                         max_payload_bytes=max_payload)


def resign_legacy(registry: ModelRegistry, hmac_key: bytes) -> dict[str, int]:
    """Re-sign, with ``registry``'s signing key, every manifest and pointer that carries a
    valid HMAC under ``hmac_key`` (the old shared key); others are left alone. Returns
    ``{"resigned": n, "skipped": m}``. For operators migrating a registry once."""
    import hmac as _hmac

    if registry.signer is None:
        raise RegistryKeyMissing(f"resigning needs a signing key ({SIGNING_KEY_ENV})")
    be = registry._backend
    keys: list[str] = []
    files, _ = be.list("aliases")
    keys += [f"aliases/{f}" for f in files if f.endswith(".json")]
    for name in registry.list_models():
        files, _ = be.list(f"models/{name}")
        keys += [f"models/{name}/{f}" for f in files if f.endswith(".json") or f == "latest"]
    done = skipped = 0
    for key, raw in be.get_many(keys, MAX_DOCUMENT_BYTES).items():
        try:
            if isinstance(raw, RegistryError):
                raise ValueError
            doc = json.loads(raw)
            mac = doc.pop("hmac")
            want = _hmac.new(hmac_key, _canonical(doc), hashlib.sha256).hexdigest()
            if not (isinstance(mac, str) and _hmac.compare_digest(mac.encode(), want.encode())):
                raise ValueError
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
            skipped += 1
            continue
        be.put(key, registry._sign(doc))
        done += 1
    return {"resigned": done, "skipped": skipped}


def _main(argv: list[str] | None = None) -> int:
    import argparse
    import sys

    from tickcast.config import Settings

    ap = argparse.ArgumentParser(prog="python -m models.registry",
                                 description="Registry maintenance (configured by TICKCAST_* variables).")
    sub = ap.add_subparsers(dest="cmd", required=True)
    rs = sub.add_parser("resign", help="re-sign documents of the old shared HMAC key with this writer's key")
    rs.add_argument("--hmac-key-file", required=True,
                    help="file holding the old TICKCAST_REGISTRY_KEY (hex of >= 32 digits is decoded, as before)")
    args = ap.parse_args(argv)
    try:
        reg = registry_from_settings(Settings.from_env(), writer=True)
        text = Path(args.hmac_key_file).read_text().strip()
        old = bytes.fromhex(text) if re.fullmatch(r"(?:[0-9a-fA-F]{2}){16,}", text) else text.encode()
        print(json.dumps(resign_legacy(reg, old)))
    except (ConfigError, RegistryError, OSError) as e:
        print(f"tickcast registry: {e}", file=sys.stderr)
        return 2
    return 0


__all__ = [
    "MAX_DOCUMENT_BYTES", "ModelRegistry", "NotFound", "RegistryError", "RegistryKeyMissing",
    "RegistryUnavailable", "SnapshotRejected", "library_versions", "new_version", "open_registry",
    "registry_from_settings", "resign_legacy",
]

if __name__ == "__main__":
    raise SystemExit(_main())
