"""The online store: the newest feature row and prediction per symbol, in Redis/Valkey.

Generic over feature groups (:mod:`tickcast.groups`): :meth:`OnlineStore.write`
``(group, rows)`` and :meth:`OnlineStore.read` ``(group, symbol)``, in the group's
layout:

* ``"latest"`` (``price``): hash ``tickcast:features:<symbol>`` (``tickcast:group:<name>:<symbol>``
  for other groups) with fields ``ts_us`` and the group's fields (``close``,
  ``feature_set_version``, one per feature for ``price``); compare-and-set below.
* ``"recent"`` (``news``): hash ``tickcast:group:<name>:<symbol>`` of members
  ``id -> "<ts_us> <value>"``; a write adds members (a repeated id replaces itself:
  idempotent) and deletes those older than the group's ``keep_us`` before the newest
  member, in one script; the key's TTL is at least ``keep_us``.

Hash ``tickcast:prediction:<symbol>`` holds ``ts_us`` and the newest prediction's fields.

Contracts:

* **Compare-and-set on event time.** Every write is one Lua script that replaces the
  hash only if the new ``ts_us`` is not older than the stored one, so a replay or a
  recovered flow never overwrites newer data (at-least-once delivery becomes
  "newest wins").
* **Atomic.** The script deletes and rewrites the whole hash in one step: a reader
  sees the old row or the new row, never half of each.
* **Expiring.** Every written key gets a TTL (``online_ttl_seconds``): if the pipeline
  stops, the store empties instead of serving stale rows forever.
* **Never hangs.** Connect and read timeouts are short (0.5 s) and a failed call is
  retried once at most; a dead or unreachable server raises :class:`StoreUnavailable`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from tickcast.groups import PRICE
from tickcast.groups import fmt_value as _fmt
from tickcast.schema import FeatureRow, Prediction
from tickcast.stores.errors import StoreUnavailable

if TYPE_CHECKING:
    from tickcast.config import Settings
    from tickcast.groups import FeatureGroup

__all__ = ["FEATURES_KEY", "PREDICTION_KEY", "SELECTION_KEY", "OnlineStore", "StoreUnavailable", "open_online"]

FEATURES_KEY = "tickcast:features:"
PREDICTION_KEY = "tickcast:prediction:"
SELECTION_KEY = "tickcast:selection:"  # the live scoreboard (tickcast.scoreboard), field "json"

# KEYS[1] = hash; ARGV[1] = ttl seconds, ARGV[2] = ts_us, ARGV[3..] = field, value, ...
_CAS = """
local cur = redis.call('HGET', KEYS[1], 'ts_us')
if cur and tonumber(cur) > tonumber(ARGV[2]) then return 0 end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'ts_us', ARGV[2], unpack(ARGV, 3))
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[1]))
return 1
"""

# KEYS[1] = hash; ARGV[1] = ttl seconds, ARGV[2] = keep_us, ARGV[3..] = id, ts_us, value, ...
_RECENT = """
for i = 3, #ARGV, 3 do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1] .. ' ' .. ARGV[i + 2])
end
local all = redis.call('HGETALL', KEYS[1])
local newest = nil
for i = 2, #all, 2 do
  local t = tonumber(string.match(all[i], '^(%S+)'))
  if newest == nil or t > newest then newest = t end
end
local gone = 0
for i = 2, #all, 2 do
  local t = tonumber(string.match(all[i], '^(%S+)'))
  if t <= newest - tonumber(ARGV[2]) then
    redis.call('HDEL', KEYS[1], all[i - 1])
    gone = gone + 1
  end
end
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[1]))
return gone
"""

_UNAVAILABLE = (redis.ConnectionError, redis.TimeoutError, OSError)


class OnlineStore:
    """Newest rows per symbol in Redis/Valkey (``redis://``, ``rediss://``, ``unix://``)."""

    def __init__(self, url: str, ttl_seconds: int = 86_400, timeout_s: float = 0.5) -> None:
        self.url = url
        self.ttl = int(ttl_seconds)
        self._r = redis.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s,
            retry=Retry(NoBackoff(), 1),  # one immediate retry: survives a server restart, bounded
        )
        self._cas = self._r.register_script(_CAS)
        self._recent = self._r.register_script(_RECENT)
        self._on_close: Callable[[], None] | None = None

    def __repr__(self) -> str:
        return f"OnlineStore({self.url!r})"

    def _call(self, fn: Any) -> Any:
        try:
            return fn()
        except _UNAVAILABLE as e:
            raise StoreUnavailable(f"online store {self.url} unavailable: {e}") from e

    def _put(self, prefix: str, items: Iterable[tuple[str, int, list[Any]]]) -> int:
        """CAS-write ``(symbol, ts_us, [field, value, …])`` items in one round trip;
        returns how many were newer than what was stored."""
        def go() -> int:
            pipe = self._r.pipeline(transaction=False)
            n = 0
            for symbol, ts_us, fields in items:
                self._cas(keys=[prefix + symbol], args=[self.ttl, int(ts_us), *fields], client=pipe)
                n += 1
            return sum(int(x) for x in pipe.execute()) if n else 0
        return int(self._call(go))

    @staticmethod
    def _key(group: FeatureGroup) -> str:
        return FEATURES_KEY if group.name == "price" else f"tickcast:group:{group.name}:"

    def write(self, group: FeatureGroup, rows: Iterable[Any]) -> int:
        """Store ``rows`` of ``group`` in its layout (module docstring). Returns the number
        of symbols written ("latest": newer than what was stored; "recent": touched)."""
        entries = group.online_entries(rows)
        prefix = self._key(group)
        if group.online_layout == "latest":
            return self._put(prefix, ((sym, ts, fields) for sym, ts, _, fields in entries))
        if group.online_layout != "recent":
            raise ValueError(f"group {group.name}: unknown online layout {group.online_layout!r}")
        per_symbol: dict[str, list[Any]] = {}
        for sym, ts, member, fields in entries:
            per_symbol.setdefault(sym, []).extend([member, int(ts), *fields[:1]])
        ttl = max(self.ttl, -(-int(group.keep_us) // 1_000_000))

        def go() -> int:
            pipe = self._r.pipeline(transaction=False)
            for sym, args in per_symbol.items():
                self._recent(keys=[prefix + sym], args=[ttl, int(group.keep_us), *args], client=pipe)
            pipe.execute()
            return len(per_symbol)
        return int(self._call(go)) if per_symbol else 0

    def read(self, group: FeatureGroup, symbol: str) -> Any:
        """The group's online state of ``symbol`` (:meth:`FeatureGroup.parse_online`);
        None if nothing is stored (or it expired)."""
        h = self._call(lambda: self._r.hgetall(self._key(group) + symbol))
        if not h:
            return None
        return group.parse_online({k.decode(): v.decode() for k, v in h.items()})

    def put_features(self, rows: Iterable[FeatureRow]) -> int:
        """``write(price, rows)``: the newest of ``rows`` per symbol, unless the store holds
        a newer row. Returns the number of symbols written."""
        return self.write(PRICE, rows)

    def get_features(self, symbol: str) -> dict[str, Any] | None:
        """``read(price, symbol)``: ``{"ts_us": int, "close": float, "feature_set_version": str,
        <feature>: float, …}`` or None if the symbol has no (unexpired) row."""
        return self.read(PRICE, symbol)  # type: ignore[no-any-return]

    def put_prediction(self, symbol: str, prediction: Mapping[str, Any]) -> bool:
        """Store a prediction (must hold ``ts_us``, the event time of its features)
        unless a newer one is stored. Returns whether it was written."""
        return self.put_predictions([{**prediction, "symbol": symbol}]) == 1

    def put_predictions(self, preds: Iterable[Prediction | Mapping[str, Any]]) -> int:
        """Several predictions (:class:`~tickcast.schema.Prediction` records, or mappings
        with ``symbol`` and ``ts_us``); the newest per symbol."""
        newest: dict[str, Mapping[str, Any]] = {}
        for rec in preds:
            p = rec if isinstance(rec, Mapping) else rec._asdict()
            cur = newest.get(p["symbol"])
            if cur is None or int(p["ts_us"]) >= int(cur["ts_us"]):
                newest[p["symbol"]] = p

        def fields(p: Mapping[str, Any]) -> list[Any]:
            out: list[Any] = []
            for k, v in p.items():
                if k != "ts_us":
                    out += [k, _fmt(v)]
            return out

        return self._put(PREDICTION_KEY, ((s, int(p["ts_us"]), fields(p)) for s, p in newest.items()))

    def get_prediction(self, symbol: str) -> dict[str, str] | None:
        """The stored prediction's fields as strings (as written), or None."""
        h = self._call(lambda: self._r.hgetall(PREDICTION_KEY + symbol))
        return {k.decode(): v.decode() for k, v in h.items()} or None

    def put_selections(self, states: Iterable[Mapping[str, Any]]) -> int:
        """Live scoreboards (each with ``symbol`` and ``ts_us``), newest per symbol, as
        one JSON field (compare-and-set on ``ts_us`` like every write here)."""
        import orjson

        newest: dict[str, Mapping[str, Any]] = {}
        for st in states:
            cur = newest.get(st["symbol"])
            if cur is None or int(st["ts_us"]) >= int(cur["ts_us"]):
                newest[st["symbol"]] = st
        return self._put(SELECTION_KEY, ((s, int(st["ts_us"]), ["json", orjson.dumps(st).decode()])
                                         for s, st in newest.items()))

    def get_selection(self, symbol: str) -> dict[str, Any] | None:
        """The newest scoreboard of ``symbol`` (a dict), or None."""
        import orjson

        raw = self._call(lambda: self._r.hget(SELECTION_KEY + symbol, "json"))
        if not raw:
            return None
        try:
            out = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return None
        return out if isinstance(out, dict) else None

    def symbols(self) -> list[str]:
        """Symbols that currently have features."""
        keys = self._call(lambda: list(self._r.scan_iter(match=FEATURES_KEY + "*", count=1000)))
        return sorted(k.decode()[len(FEATURES_KEY):] for k in keys)

    def ping(self) -> bool:
        """True if the server answers (within the timeout); never raises."""
        try:
            return bool(self._r.ping())
        except (*_UNAVAILABLE, redis.RedisError):
            return False

    def close(self) -> None:
        self._r.close()
        on_close, self._on_close = self._on_close, None
        if on_close is not None:
            on_close()


def open_online(settings: Settings, *, lease: bool = False) -> OnlineStore:
    """The configured online store; starts (or reuses) the embedded Valkey under the
    data directory when ``TICKCAST_REDIS_URL`` is not set. With ``lease`` (the flows),
    a server this process started is stopped when the last such store is closed
    (:func:`tickcast.embedded.lease_valkey`): a flow run on its own leaves nothing behind."""
    url = settings.redis_url
    if not url:
        from tickcast import embedded

        if lease:
            url = embedded.lease_valkey(settings.data_dir)
            store = OnlineStore(url, ttl_seconds=settings.online_ttl_seconds)
            store._on_close = lambda: embedded.release_valkey(settings.data_dir)
            return store
        url = embedded.ensure_valkey(settings.data_dir)
    return OnlineStore(url, ttl_seconds=settings.online_ttl_seconds)
