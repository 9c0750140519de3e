"""The online store: newest feature row and newest prediction per symbol, in Redis.

Layout: hash ``tickcast:features:<symbol>`` (fields ``ts_us``, ``close``,
``feature_set_version`` and one per feature) and hash ``tickcast:prediction:<symbol>``.
Writes go through a Lua compare-and-set: a row replaces the stored one only if its
event time is not older, so a replay or a recovered flow never overwrites newer data,
and a reader never sees half a row (one script = one atomic step). Every key gets a
TTL. Sockets have short timeouts, so a dead server is an error, never a hang.
"""

from __future__ import annotations

import math
from typing import Any

import redis

from tickcast.schema import FeatureRow

FEATURES_KEY = "tickcast:features:"
PREDICTION_KEY = "tickcast:prediction:"

# KEYS[1] = hash; ARGV[1] = ttl seconds, ARGV[2] = ts_us, ARGV[3..] = field, value, ...
_CAS = """
local cur = redis.call('HGET', KEYS[1], 'ts_us')
if cur and tonumber(cur) > tonumber(ARGV[2]) then return 0 end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'ts_us', ARGV[2], unpack(ARGV, 3))
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[1]))
return 1
"""


class StoreUnavailable(RuntimeError):
    """The online store did not answer (down, unreachable, or too slow)."""


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return repr(v) if math.isfinite(v) else "nan"
    return str(v)


class OnlineStore:
    def __init__(self, url: str, ttl_seconds: int = 86_400, timeout_s: float = 0.5) -> None:
        self.url = url
        self.ttl = ttl_seconds
        self._r = redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s,
                                       retry_on_timeout=False)
        self._cas = self._r.register_script(_CAS)

    def _call(self, fn: Any) -> Any:
        try:
            return fn()
        except (redis.ConnectionError, redis.TimeoutError, OSError) as e:
            raise StoreUnavailable(f"online store {self.url} unavailable: {e}") from e

    def put_features(self, rows: list[FeatureRow]) -> None:
        def go() -> None:
            pipe = self._r.pipeline(transaction=False)
            for r in rows:
                args: list[Any] = [self.ttl, r.ts_us, "close", _fmt(r.close), "feature_set_version",
                                   r.feature_set_version]
                for k, v in r.values.items():
                    args += [k, _fmt(v)]
                self._cas(keys=[FEATURES_KEY + r.symbol], args=args, client=pipe)
            pipe.execute()
        self._call(go)

    def get_features(self, symbol: str) -> dict[str, Any] | None:
        h = self._call(lambda: self._r.hgetall(FEATURES_KEY + symbol))
        if not h:
            return None
        out: dict[str, Any] = {}
        for k, v in h.items():
            key, val = k.decode(), v.decode()
            if key == "feature_set_version":
                out[key] = val
            elif key == "ts_us":
                out[key] = int(val)
            else:
                out[key] = float(val)
        return out

    def put_predictions(self, preds: list[dict[str, Any]]) -> None:
        def go() -> None:
            pipe = self._r.pipeline(transaction=False)
            for p in preds:
                args: list[Any] = [self.ttl, p["ts_us"]]
                for k, v in p.items():
                    if k not in ("ts_us",):
                        args += [k, _fmt(v)]
                self._cas(keys=[PREDICTION_KEY + p["symbol"]], args=args, client=pipe)
            pipe.execute()
        self._call(go)

    def get_prediction(self, symbol: str) -> dict[str, str] | None:
        h = self._call(lambda: self._r.hgetall(PREDICTION_KEY + symbol))
        return {k.decode(): v.decode() for k, v in h.items()} or None

    def symbols(self) -> list[str]:
        keys = self._call(lambda: list(self._r.scan_iter(match=FEATURES_KEY + "*", count=100)))
        return sorted(k.decode()[len(FEATURES_KEY):] for k in keys)

    def ping(self) -> bool:
        try:
            return bool(self._r.ping())
        except (redis.ConnectionError, redis.TimeoutError, OSError):
            return False

    def close(self) -> None:
        self._r.close()


def open_online(settings: Any) -> OnlineStore:
    """The configured online store; starts the embedded Valkey when no URL is set."""
    url = settings.redis_url
    if not url:
        from tickcast.embedded import ensure_valkey

        url = ensure_valkey(settings.data_dir)
    return OnlineStore(url, ttl_seconds=settings.online_ttl_seconds)
