"""Ed25519 keys for the model registry: writers sign, readers hold only public keys.

Why asymmetric: registry payloads are pickles, and whoever can sign a manifest can make
every reader execute code. With one shared HMAC key every reader (each API pod) could
also sign; with Ed25519 only the writers (the feature flow, ``tickcast train``) hold a
private key, and readers hold a *keyring* of public keys.

Text forms (one line each, so they fit environment variables and Kubernetes Secrets):

* a signing (private) key: 64 hex digits, the 32-byte Ed25519 seed
  (``TICKCAST_REGISTRY_SIGNING_KEY``); ``python -m models.signing`` prints a new pair;
* public keys: 64 hex digits each, comma-separated (``TICKCAST_REGISTRY_PUBLIC_KEYS``).

A key's id is derived, never chosen: ``ed25519-`` + the first 16 hex digits of the
sha256 of the public key, so a label can never point at the wrong key. Every signed
document names the id of the key that signed it; a reader looks the id up in its
keyring, so several public keys can be trusted at once and a writer key can be
rotated (new key signs, readers trust old and new) without refusing a production
model signed by the old one.

Weak or malformed keys are refused with one line (:class:`KeyError_`): wrong length,
not hex, a seed with few distinct bytes (all zeros, a repeated pattern: never the
output of a random generator), a public key of small order (the identity and the
other torsion points, which verify forged signatures for some messages).

>>> k = SigningKey.generate()
>>> pub = k.public
>>> sig = k.sign(b"hello")
>>> pub.verify(sig, b"hello"), pub.verify(sig, b"hellO")
(True, False)
>>> SigningKey.parse("00" * 32)
Traceback (most recent call last):
...
models.signing.WeakKey: signing key: 1 distinct byte value in 32: not a random key (generate one with `python -m models.signing`)
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Callable, Iterable

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from tickcast.config import ConfigError

_HEX32_RE = re.compile(r"[0-9a-fA-F]{64}")
SIGNATURE_RE = re.compile(r"[0-9a-f]{128}")  # 64-byte Ed25519 signature, lower-case hex
KEY_ID_RE = re.compile(r"ed25519-[0-9a-f]{16}")
MIN_DISTINCT_BYTES = 12  # 32 random bytes have ~30 distinct values; < 12 happens with p < 1e-20

# Ed25519 points of small order (and their non-canonical encodings), as libsodium's
# blocklist: a "public key" among them lets forged signatures verify.
_SMALL_ORDER = {bytes.fromhex(h) for h in (
    "0000000000000000000000000000000000000000000000000000000000000000",
    "0100000000000000000000000000000000000000000000000000000000000000",
    "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
    "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
    "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    "0000000000000000000000000000000000000000000000000000000000000080",
    "0100000000000000000000000000000000000000000000000000000000000080",
    "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85",
    "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa",
    "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
    "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
    "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
)}


class KeyError_(ConfigError):  # noqa: N801 - not the builtin KeyError
    """A key is malformed (one line for the user; also a ConfigError)."""


class WeakKey(KeyError_):
    """A key is well-formed but must not be used."""


def key_id(public_raw: bytes) -> str:
    return "ed25519-" + hashlib.sha256(public_raw).hexdigest()[:16]


def _hex32(text: str, what: str) -> bytes:
    s = text.strip()
    if not _HEX32_RE.fullmatch(s):
        shown = f"{len(s)} characters" if s else "empty"
        raise KeyError_(f"{what}: expected 64 hex digits (32 bytes), got {shown}")
    return bytes.fromhex(s)


class PublicKey:
    """An Ed25519 public key a reader trusts."""

    def __init__(self, raw: bytes) -> None:
        if len(raw) != 32:
            raise KeyError_(f"public key: expected 32 bytes, got {len(raw)}")
        if raw in _SMALL_ORDER:
            raise WeakKey(f"public key {raw.hex()[:16]}…: a point of small order, not a real key")
        self.raw = bytes(raw)
        self.key_id = key_id(self.raw)
        self._key = Ed25519PublicKey.from_public_bytes(self.raw)

    @classmethod
    def parse(cls, text: str) -> PublicKey:
        return cls(_hex32(text, "public key"))

    def to_text(self) -> str:
        return self.raw.hex()

    def verify(self, signature_hex: str, data: bytes) -> bool:
        """True if ``signature_hex`` (128 lower-case hex digits) signs ``data``; False for
        anything else, malformed included (never raises)."""
        if not isinstance(signature_hex, str) or not SIGNATURE_RE.fullmatch(signature_hex):
            return False
        try:
            self._key.verify(bytes.fromhex(signature_hex), data)
            return True
        except InvalidSignature:
            return False

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PublicKey) and other.raw == self.raw

    def __hash__(self) -> int:
        return hash(self.raw)

    def __repr__(self) -> str:
        return f"PublicKey({self.key_id})"


class SigningKey:
    """An Ed25519 private key a writer signs with (its repr never shows the secret)."""

    def __init__(self, seed: bytes) -> None:
        if len(seed) != 32:
            raise KeyError_(f"signing key: expected 32 bytes, got {len(seed)}")
        distinct = len(set(seed))
        if distinct < MIN_DISTINCT_BYTES:
            raise WeakKey(f"signing key: {distinct} distinct byte value{'s' if distinct != 1 else ''} in 32: "
                          "not a random key (generate one with `python -m models.signing`)")
        self._key = Ed25519PrivateKey.from_private_bytes(seed)
        self._seed = bytes(seed)
        self.public = PublicKey(self._key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))
        self.key_id = self.public.key_id

    @classmethod
    def generate(cls) -> SigningKey:
        return cls(secrets.token_bytes(32))

    @classmethod
    def parse(cls, text: str) -> SigningKey:
        return cls(_hex32(text, "signing key"))

    def to_text(self) -> str:
        return self._seed.hex()

    def sign(self, data: bytes) -> str:
        return self._key.sign(data).hex()

    def __repr__(self) -> str:
        return f"SigningKey({self.key_id})"


class Keyring:
    """Public keys by key id. ``refresh`` (optional) is called when an unknown id is met
    and may return more keys (e.g. re-read a key file a writer just extended)."""

    def __init__(self, keys: Iterable[PublicKey] = (),
                 refresh: Callable[[], Iterable[PublicKey]] | None = None) -> None:
        self._keys: dict[str, PublicKey] = {}
        self._refresh = refresh
        for k in keys:
            self.add(k)

    def add(self, key: PublicKey) -> None:
        self._keys[key.key_id] = key

    def get(self, kid: str) -> PublicKey | None:
        got = self._keys.get(kid)
        if got is None and self._refresh is not None:
            for k in self._refresh():
                self.add(k)
            got = self._keys.get(kid)
        return got

    def ids(self) -> list[str]:
        return sorted(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def __repr__(self) -> str:
        return f"Keyring({self.ids()})"


def parse_public_keys(text: str, what: str = "public keys") -> list[PublicKey]:
    """Comma/whitespace-separated 64-hex public keys (``#`` starts a comment line)."""
    out: list[PublicKey] = []
    for line in text.splitlines():
        line = line.split("#", 1)[0]
        for part in re.split(r"[,\s]+", line):
            if part:
                try:
                    out.append(PublicKey.parse(part))
                except KeyError_ as e:
                    raise type(e)(f"{what}: {e}") from None
    return out


def main() -> None:
    """Print a new key pair (for TICKCAST_REGISTRY_SIGNING_KEY / _PUBLIC_KEYS)."""
    k = SigningKey.generate()
    print(f"# key id {k.key_id}")
    print(f"TICKCAST_REGISTRY_SIGNING_KEY={k.to_text()}   # writers only (flows, trainer)")
    print(f"TICKCAST_REGISTRY_PUBLIC_KEYS={k.public.to_text()}   # everyone; add old keys while rotating")


if __name__ == "__main__":
    main()
