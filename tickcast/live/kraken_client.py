"""Kraken WebSocket v2 trade client with reconnect and REST gap fill (framework-free).

One connection carries every configured symbol. The client:

* subscribes with an explicit ``snapshot`` and checks every ack: a rejected symbol
  raises :class:`~tickcast.kraken.KrakenError` naming it;
* treats a connection on which nothing arrived (heartbeats included) for
  ``silence_timeout_s`` as dead, after an application-level ``ping`` half-way;
* reconnects with exponential backoff and full jitter, and resubscribes;
* keeps, per symbol, the newest accepted ``trade_id`` (and its time): a trade at or
  below it is a duplicate (snapshots overlap what was already delivered) and is
  dropped; a trade above it + 1 reveals a gap — after a reconnect, or while
  connected — which is filled from REST ``GET /0/public/Trades?pair=…&since=…``
  (paging on ``last``) up to the trade that revealed it, before that trade is
  delivered;
* counts what happened (:class:`ClientStats`): connects, reconnects, gaps, filled
  trades, unfilled trade ids, duplicates dropped, malformed frames.

Output (:class:`Event`, in delivery order): ``trades`` events carry accepted trades
as a raw v2 trade message (the frame itself when every trade in it was accepted as
is, otherwise :func:`~tickcast.kraken.trades_to_message` of the accepted ones);
``malformed`` events carry frames (or the bad entries of a frame) that are not
valid trade messages, verbatim, so they become dead letters downstream. On request
``other`` events carry the non-trade frames (status, heartbeats, acks, …) and
``frame`` events every frame exactly as received (for ``tickcast record``).

**Delivery guarantee.** Within one client lifetime every trade of the subscribed
symbols is delivered **exactly once**, in ``trade_id`` order per symbol, provided
REST serves a gap within the retry budget; ids REST cannot provide are counted in
``stats.unfilled`` and logged (never silently skipped), and accepted if they show
up later. Across restarts, pass the last delivered ``(trade_id, time)`` per symbol
as ``resume``: the client fills what was missed from REST and drops what was
already delivered, so a source that re-delivers from its last checkpoint is
at-least-once, and with idempotent stores the stores end exactly-once.

Without network the first connection fails fast with :class:`NetworkUnavailable`,
whose one-line message suggests the offline sources; once connected, the client
keeps retrying with backoff.

>>> rest_pair_name("BTC/USD", {"XXBTZUSD": {"altname": "XBTUSD", "wsname": "XBT/USD"}})
'XBTUSD'
>>> rest_pair_name("DOGE/USD", None)
'XDGUSD'
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import random
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any, NamedTuple

import orjson

from tickcast.config import Settings
from tickcast.kraken import (
    KrakenError,
    is_error_ack,
    parse_message,
    parse_rest_trades,
    subscribe_message,
    trades_to_message,
)
from tickcast.schema import MAX_TRADE_ID_JUMP, Trade

log = logging.getLogger("tickcast.live")

OFFLINE_HINT = "run offline with --source sim or --source replay:FILE (TICKCAST_SOURCE=sim | replay:FILE)"
# Kraken v2 (and its "wsname"s of new pairs) say BTC, DOGE; REST pair names say XBT, XDG
_V2_TO_REST_ASSET = {"BTC": "XBT", "DOGE": "XDG"}
_REST_TO_V2_ASSET = {v: k for k, v in _V2_TO_REST_ASSET.items()}
_MAX_MISSING = 100_000  # ids remembered per symbol as "not filled; accept if they show up"
_FILL_PAGE = 1000  # Kraken's REST Trades page size

Resume = Mapping[str, tuple[int, int]]  # symbol -> (last delivered trade_id, its time in µs)


class NetworkUnavailable(KrakenError):
    """The first connection failed for lack of network (DNS, refused, timeout, TLS).

    The message is one line for the user and suggests the offline sources."""


def _now_us() -> int:
    return time.time_ns() // 1000


# -- configuration ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClientConfig:
    """How the client connects; the defaults suit the real Kraken."""

    ws_url: str = "wss://ws.kraken.com/v2"
    rest_url: str = "https://api.kraken.com"
    symbols: tuple[str, ...] = ("BTC/USD", "ETH/USD")
    open_timeout_s: float = 10.0  # TCP + TLS + WebSocket handshake
    ack_timeout_s: float = 10.0  # every symbol's subscribe ack must arrive within this
    # Kraken sends a heartbeat about once a second on a subscribed connection, so 10 s
    # of nothing means the connection is dead (a ping is sent half-way).
    silence_timeout_s: float = 10.0
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0
    rest_timeout_s: float = 10.0  # per REST request
    rest_page_pause_s: float = 1.0  # between pages of one fill: Kraken's public rate limit
    rest_retries: int = 3  # per fill: failed requests / empty answers before giving up
    verbatim: bool = False  # also yield every frame as received ("frame" events)
    others: bool = False  # also yield non-trade frames ("other" events)

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> ClientConfig:
        """From :class:`~tickcast.config.Settings`: URLs, symbols and the two tuning
        settings ``TICKCAST_KRAKEN_SILENCE_SECONDS`` and ``TICKCAST_KRAKEN_BACKOFF_SECONDS``."""
        return replace(cls(
            ws_url=settings.kraken_ws_url,
            rest_url=settings.kraken_rest_url,
            symbols=tuple(settings.symbols),
            silence_timeout_s=settings.kraken_silence_seconds,
            backoff_initial_s=settings.kraken_backoff_seconds,
        ), **overrides)


_MAX_FRAMES_QUEUED = 10_000  # frames read but not yet handled, per connection
_MAX_EVENTS_QUEUED = 50_000  # events handed to the flow but not yet taken


@dataclass
class ClientStats:
    """Counters of one client (they become metrics)."""

    connects: int = 0  # successful connections (first + reconnects)
    reconnects: int = 0  # successful connections after a lost one
    disconnects: int = 0  # connections lost (closed, dropped, silent)
    pings: int = 0  # application-level pings sent on quiet connections
    frames: int = 0  # frames received
    trades: int = 0  # trades delivered (from the socket and from REST)
    gaps: int = 0  # trade_id gaps detected (after reconnects and while connected)
    filled: int = 0  # trades delivered from REST to fill gaps
    unfilled: int = 0  # trade ids in gaps that REST could not provide
    recovered: int = 0  # unfilled trade ids that arrived later after all
    duplicates: int = 0  # trades dropped as already delivered
    malformed: int = 0  # frames that were not valid messages (or held invalid trades)
    backpressure: int = 0  # times a bounded queue was full and reading paused (not in ingest_stats)

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


class Event(NamedTuple):
    """One output of the client.

    ``kind``: ``"trades"`` (``raw`` is a v2 trade message of accepted trades, which are
    also in ``trades``), ``"malformed"`` (``raw`` is what could not be parsed),
    ``"other"`` (a non-trade frame) or ``"frame"`` (any frame, verbatim).
    ``position`` identifies it: ``"BTC/USD#<first trade_id>"`` for trades, else
    ``"<session>.<connection>:<frame number>"``."""

    kind: str
    position: str
    raw: bytes
    trades: tuple[Trade, ...] = ()


# -- REST -----------------------------------------------------------------------------------------


def _norm_symbol(s: str) -> str:
    base, _, quote = s.upper().partition("/")
    return f"{_REST_TO_V2_ASSET.get(base, base)}/{_REST_TO_V2_ASSET.get(quote, quote)}"


def rest_pair_name(symbol: str, asset_pairs: Mapping[str, Any] | None) -> str:
    """The REST ``pair`` for a v2 symbol: the ``altname`` of the AssetPairs entry whose
    ``wsname`` is the symbol (Kraken's wsnames say XBT where v2 says BTC); without
    AssetPairs, BASE+QUOTE with Kraken's REST asset names."""
    want = _norm_symbol(symbol)
    for key, info in (asset_pairs or {}).items():
        if isinstance(info, dict) and isinstance(info.get("wsname"), str) and _norm_symbol(info["wsname"]) == want:
            return str(info.get("altname") or key)
    base, _, quote = symbol.partition("/")
    return _V2_TO_REST_ASSET.get(base, base) + _V2_TO_REST_ASSET.get(quote, quote)


class RestClient:
    """Kraken's public REST API over urllib: bounded timeouts, errors as KrakenError."""

    def __init__(self, base_url: str, timeout_s: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self._pairs: dict[str, str] = {}
        self._asset_pairs: Mapping[str, Any] | None = None
        self._asset_pairs_tried = False

    def get_json(self, path: str, params: Mapping[str, Any] | None = None) -> Any:
        url = self.base_url + path + ("?" + urllib.parse.urlencode(params) if params else "")
        req = urllib.request.Request(url, headers={"User-Agent": "tickcast", "Accept": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as r:
                body = r.read()
        except urllib.error.HTTPError as e:
            raise KrakenError(f"GET {url}: HTTP {e.code} {e.reason}") from None
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise KrakenError(f"GET {url}: {reason}") from None
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError:
            raise KrakenError(f"GET {url}: the answer is not JSON: {body[:120]!r}") from None

    def pair_for(self, symbol: str) -> str:
        """REST pair name of a v2 symbol (AssetPairs fetched once; heuristic without it)."""
        pair = self._pairs.get(symbol)
        if pair is None:
            if not self._asset_pairs_tried:
                self._asset_pairs_tried = True
                try:
                    payload = self.get_json("/0/public/AssetPairs")
                    if isinstance(payload, dict) and not payload.get("error") and isinstance(payload.get("result"), dict):
                        self._asset_pairs = payload["result"]
                except KrakenError as e:
                    log.warning("AssetPairs unavailable (%s); deriving REST pair names from symbols", e)
            pair = self._pairs[symbol] = rest_pair_name(symbol, self._asset_pairs)
        return pair

    def trades_page(self, pair: str, symbol: str, since_ns: int) -> tuple[list[Trade], int | None]:
        """One ``/0/public/Trades`` page after ``since_ns`` -> (trades, ``last`` cursor in ns)."""
        return parse_rest_trades(self.get_json("/0/public/Trades", {"pair": pair, "since": since_ns}), symbol)


class TradePager:
    """Paging REST ``/0/public/Trades`` on its ``last`` cursor, without I/O: the one
    pager, driven by the client's gap fill (async) and by ``tickcast backfill``
    (:func:`tickcast.live.commands.fetch_history`, sync).

    Ask for each page with ``since=pager.since_ns`` and hand it to :meth:`take`, which
    returns the page's trades with ids above the newest taken (from ``after_id``; REST
    pages are in trade order and the cursor re-reads ties, so each trade is taken once)
    and at or after ``since_us``; sets ``done`` at the first trade at or beyond a bound
    (``before_id``, ``until_us``), and moves the cursor to ``last - 1`` — ``moved`` is
    False when it cannot advance (no ``last``, or no newer one: REST has nothing more,
    for now).

    >>> p = TradePager(999, after_id=1, before_id=4)
    >>> t = [Trade("BTC/USD", i, 1, 1.0, 1.0, "buy", "") for i in (1, 2, 3, 4)]
    >>> [x.trade_id for x in p.take(t[:3], 5000)], p.done, p.moved, p.since_ns
    ([2, 3], False, True, 4999)
    >>> [x.trade_id for x in p.take(t[2:], 5000)], p.done, p.moved
    ([], True, False)
    """

    def __init__(self, since_ns: int, *, after_id: int = -1, before_id: int | None = None,
                 since_us: int | None = None, until_us: int | None = None) -> None:
        self.since_ns = since_ns
        self.last_id = after_id  # the newest trade_id taken
        self.before_id, self.since_us, self.until_us = before_id, since_us, until_us
        self.done = False
        self.moved = False

    def take(self, rows: list[Trade], last: int | None) -> list[Trade]:
        page: list[Trade] = []
        self.done = False
        for t in rows:
            if ((self.before_id is not None and t.trade_id >= self.before_id)
                    or (self.until_us is not None and t.ts_us >= self.until_us)):
                self.done = True
                break
            if t.trade_id > self.last_id and (self.since_us is None or t.ts_us >= self.since_us):
                page.append(t)
                self.last_id = t.trade_id
        nxt = None if last is None else last - 1  # re-read ties at the cursor; trade ids dedupe
        self.moved = nxt is not None and nxt > self.since_ns
        if nxt is not None and self.moved:
            self.since_ns = nxt
        return page


def _json_or_text(text: str) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return text


# -- the WebSocket client -------------------------------------------------------------------------


class _ConnectionDead(Exception):
    """The connection closed, dropped or went silent: reconnect."""


def _network_reason(e: BaseException, cfg: ClientConfig) -> str:
    from websockets.exceptions import InvalidStatus

    if isinstance(e, socket.gaierror):
        host = urllib.parse.urlsplit(cfg.ws_url).hostname
        return f"cannot resolve host {host!r} ({e.strerror or e})"
    if isinstance(e, ConnectionRefusedError) or "Connect call failed" in str(e):
        return "connection refused"
    if isinstance(e, TimeoutError):
        return f"no answer within {cfg.open_timeout_s:g} s"
    if isinstance(e, InvalidStatus):
        return f"WebSocket handshake rejected with HTTP {e.response.status_code}"
    text = (str(e).strip().splitlines() or [type(e).__name__])[0]
    return text[:200]


class KrakenClient:
    """Async Kraken v2 trade client; iterate :meth:`stream` for :class:`Event` s.

    ``resume``: the last delivered ``(trade_id, time_us)`` per symbol of a previous run.
    ``on_ready`` is called once, when the first subscription is fully acknowledged."""

    def __init__(self, config: ClientConfig, resume: Resume | None = None,
                 on_ready: Callable[[], None] | None = None) -> None:
        self.cfg = config
        self.stats = ClientStats()
        self.rest = RestClient(config.rest_url, config.rest_timeout_s)
        self._hwm: dict[str, tuple[int, int]] = {s: (int(v[0]), int(v[1])) for s, v in (resume or {}).items()}
        self._missing: dict[str, set[int]] = {}
        self._on_ready = on_ready
        self._subscribed_once = False
        self._session = _now_us()
        self._conn = 0
        self._frame = 0
        self._req = 0
        self._pending: set[str] = set()
        # wall µs since when every trade received so far has been delivered (connected,
        # subscribed, each symbol's snapshot handled, no gap being filled); None otherwise.
        # Read from other threads (a source partition's heartbeat): one attribute, atomic.
        self.complete_since_us: int | None = None
        # receive time (wall µs) of the newest frame fully handled: the heartbeat's value
        self.handled_rx_us = 0
        self._snapped: set[str] = set()
        self._acked_at = 0.0

    @property
    def last_delivered(self) -> dict[str, tuple[int, int]]:
        """Newest delivered ``(trade_id, time_us)`` per symbol."""
        return dict(self._hwm)

    # -- connection loop ----------------------------------------------------------------------
    def _backoff(self, attempt: int) -> float:
        cap = min(self.cfg.backoff_max_s, self.cfg.backoff_initial_s * (2 ** min(attempt, 30)))
        return float(random.uniform(0.5, 1.0) * cap)  # jitter: reconnecting clients do not stampede

    async def _connect(self) -> Any:
        from websockets.asyncio.client import connect

        return await connect(
            self.cfg.ws_url, open_timeout=self.cfg.open_timeout_s, close_timeout=1.0,
            max_size=1 << 20, ping_interval=20, ping_timeout=20, user_agent_header="tickcast",
        )

    async def stream(self) -> AsyncIterator[Event]:
        """Connect, subscribe and yield events until cancelled (or a fatal KrakenError)."""
        from websockets.exceptions import InvalidHandshake, InvalidURI

        attempt = 0
        while True:
            try:
                ws = await self._connect()
            except InvalidURI as e:
                raise KrakenError(f"TICKCAST_KRAKEN_WS_URL={self.cfg.ws_url!r} is not a WebSocket URL: {e}") from None
            except (OSError, TimeoutError, InvalidHandshake) as e:
                reason = _network_reason(e, self.cfg)
                if not self._subscribed_once and self.stats.connects == 0:
                    raise NetworkUnavailable(
                        f"cannot reach Kraken at {self.cfg.ws_url}: {reason}; no network? {OFFLINE_HINT}"
                    ) from None
                delay = self._backoff(attempt)
                attempt += 1
                log.warning("Kraken WebSocket: %s; retrying in %.1f s", reason, delay)
                await asyncio.sleep(delay)
                continue
            self.stats.connects += 1
            if self.stats.connects > 1:
                self.stats.reconnects += 1
            self._conn += 1
            try:
                async for ev in self._run_session(ws):
                    if attempt and not self._pending:
                        attempt = 0  # a subscribed connection resets the backoff
                    yield ev
            except _ConnectionDead as e:
                self.stats.disconnects += 1
                delay = self._backoff(attempt)
                attempt += 1
                log.warning("Kraken WebSocket: %s; reconnecting in %.2f s (%s)", e, delay, self._stats_line())
                await asyncio.sleep(delay)
            finally:
                await self._close(ws)

    def _stats_line(self) -> str:
        s = self.stats
        return (f"reconnects {s.reconnects}, gaps {s.gaps}, filled {s.filled}, unfilled {s.unfilled}, "
                f"duplicates {s.duplicates}, malformed {s.malformed}")

    @staticmethod
    async def _close(ws: Any) -> None:
        try:
            await asyncio.wait_for(ws.close(), 2.0)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                ws.transport.abort()
            raise
        except Exception:  # noqa: BLE001 - closing a dead socket; abort it instead
            with contextlib.suppress(Exception):
                ws.transport.abort()

    async def _reader(self, ws: Any, q: asyncio.Queue[tuple[bytes, int] | _ConnectionDead]) -> None:
        """Reads frames into ``q`` and watches for silence (runs while fills are awaited)."""
        from websockets.exceptions import ConnectionClosed

        loop = asyncio.get_running_loop()
        silence = self.cfg.silence_timeout_s
        last = loop.time()
        pinged = False
        try:
            while True:
                deadline = last + (silence if pinged else silence / 2)
                try:
                    frame = await asyncio.wait_for(ws.recv(decode=False), max(0.0, deadline - loop.time()))
                except TimeoutError:
                    if pinged:
                        await q.put(_ConnectionDead(f"no message for {silence:g} s (heartbeats included)"))
                        return
                    pinged = True
                    self._req += 1
                    self.stats.pings += 1
                    await ws.send(orjson.dumps({"method": "ping", "req_id": self._req}).decode())
                    continue
                last = loop.time()
                pinged = False
                item = (frame if isinstance(frame, bytes) else frame.encode(), _now_us())
                if q.full():
                    self.stats.backpressure += 1
                await q.put(item)
        except ConnectionClosed as e:
            rcvd = e.rcvd
            code = rcvd.code if rcvd is not None else 1006
            await q.put(_ConnectionDead(f"connection closed (code {code})"))
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - any socket failure means: reconnect
            q.put_nowait(_ConnectionDead(f"connection failed ({type(e).__name__}: {e})"))

    def _check_complete(self, now: float) -> None:
        """Complete once subscribed and every symbol's snapshot is handled (or, for a symbol
        whose snapshot never comes, 5 s after the acks)."""
        if self.complete_since_us is None and not self._pending and self._acked_at and (
                self._snapped.issuperset(self.cfg.symbols) or now - self._acked_at >= 5.0):
            self.complete_since_us = _now_us()

    async def _run_session(self, ws: Any) -> AsyncIterator[Event]:
        loop = asyncio.get_running_loop()
        # bounded: a consumer that cannot keep up pauses the reader (the socket backs up;
        # Kraken may drop us, and the reconnect fills the gap from REST), never memory
        q: asyncio.Queue[tuple[bytes, int] | _ConnectionDead] = asyncio.Queue(maxsize=_MAX_FRAMES_QUEUED)
        reader = loop.create_task(self._reader(ws, q))
        self._frame = 0
        self.complete_since_us = None
        self._snapped = set()
        self._acked_at = 0.0
        try:
            self._req += 1
            self._pending = set(self.cfg.symbols)
            await ws.send(orjson.dumps(subscribe_message(self.cfg.symbols, snapshot=True, req_id=self._req)).decode())
            ack_deadline = loop.time() + self.cfg.ack_timeout_s
            while True:
                if self._pending:
                    try:
                        item = await asyncio.wait_for(q.get(), max(0.0, ack_deadline - loop.time()))
                    except TimeoutError:
                        missing = ", ".join(sorted(self._pending))
                        msg = f"no subscribe ack from Kraken for {missing} within {self.cfg.ack_timeout_s:g} s"
                        if not self._subscribed_once:
                            raise KrakenError(msg) from None
                        raise _ConnectionDead(msg) from None
                else:
                    item = await q.get()
                if isinstance(item, _ConnectionDead):
                    raise item
                frame, rx_us = item
                was_pending = bool(self._pending)
                async for ev in self._handle(frame):
                    yield ev
                # every event of every frame received until rx_us is now queued (a yield
                # returns once the consumer has taken the event)
                self.handled_rx_us = rx_us
                if was_pending and not self._pending:
                    self._acked_at = loop.time()
                self._check_complete(loop.time())
                if was_pending and not self._pending:
                    log.info("subscribed to trades of %s at %s", ",".join(self.cfg.symbols), self.cfg.ws_url)
                    if not self._subscribed_once:
                        self._subscribed_once = True
                        if self._on_ready is not None:
                            self._on_ready()
        finally:
            self.complete_since_us = None  # until the next session has caught up again
            reader.cancel()  # not awaited: awaiting could swallow our own cancellation

    # -- frames ---------------------------------------------------------------------------------
    async def _handle(self, frame: bytes) -> AsyncIterator[Event]:
        self.stats.frames += 1
        self._frame += 1
        pos = f"{self._session}.{self._conn}:{self._frame}"
        if self.cfg.verbatim:
            yield Event("frame", pos, frame)
        try:
            msg = orjson.loads(frame)
        except orjson.JSONDecodeError:
            msg = None
        if type(msg) is not dict:
            self.stats.malformed += 1
            yield Event("malformed", pos, frame)
            return
        if "method" in msg:
            self._check_ack(msg)
            if self.cfg.others:
                yield Event("other", pos, frame)
            return
        if msg.get("channel") != "trade":
            if self.cfg.others:
                yield Event("other", pos, frame)
            return
        trades, dead = parse_message(frame, "kraken", _now_us(), pos)
        if dead:
            self.stats.malformed += 1
            if not trades:
                yield Event("malformed", pos, frame)
                return
            # some entries are trades, some are not: deliver the bad entries as a message
            # of their own (verbatim JSON values), so they become dead letters downstream
            bad = [_json_or_text(d.raw) for d in dead]
            yield Event("malformed", pos, orjson.dumps({"channel": "trade", "type": msg.get("type"), "data": bad}))
        by_symbol: dict[str, list[Trade]] = {}
        for t in trades:
            by_symbol.setdefault(t.symbol, []).append(t)
        intact = frame if (not dead and len(by_symbol) == 1) else None
        kind = "snapshot" if msg.get("type") == "snapshot" else "update"
        for symbol, group in by_symbol.items():
            async for ev in self._accept(symbol, group, intact, kind):
                yield ev
        if kind == "snapshot":
            self._snapped.update(by_symbol)

    def _check_ack(self, msg: dict[str, Any]) -> None:
        err = is_error_ack(msg)
        if msg.get("method") == "subscribe":
            if err is not None:
                sym = msg.get("symbol")
                if not isinstance(sym, str):
                    named = [s for s in self.cfg.symbols if s in err]
                    sym = ",".join(named or sorted(self._pending) or self.cfg.symbols)
                raise KrakenError(f"Kraken rejected the trade subscription for {sym}: {err} "
                                  "(check TICKCAST_SYMBOLS / --symbols: Kraken v2 symbols like BTC/USD)")
            result = msg.get("result")
            if isinstance(result, dict) and isinstance(result.get("symbol"), str):
                self._pending.discard(result["symbol"])
        elif err is not None:
            log.warning("Kraken answered %s with an error: %s", msg.get("method"), err)

    def _trades_event(self, symbol: str, trades: list[Trade], kind: str = "update") -> Event:
        self.stats.trades += len(trades)
        return Event("trades", f"{symbol}#{trades[0].trade_id}",
                     orjson.dumps(trades_to_message(trades, kind)), tuple(trades))

    async def _accept(self, symbol: str, trades: list[Trade], frame: bytes | None,
                      kind: str) -> AsyncIterator[Event]:
        """Dedupe against the newest delivered id; fill a gap from REST before the trade
        that revealed it."""
        hw = self._hwm.get(symbol)
        miss = self._missing.get(symbol)
        out: list[Trade] = []
        intact = frame is not None
        for t in trades:
            tid = t.trade_id
            if hw is not None and tid <= hw[0]:
                if miss and tid in miss:
                    miss.discard(tid)
                    self.stats.recovered += 1
                    out.append(t)
                else:
                    self.stats.duplicates += 1
                    intact = False
                continue
            if hw is not None and tid > hw[0] + MAX_TRADE_ID_JUMP:
                # not believed: no fill of millions of ids, no new high-water mark; delivered
                # as it is, the pipeline makes it a dead letter
                intact = False
                out.append(t)
                continue
            if hw is not None and tid > hw[0] + 1:
                intact = False
                if out:
                    yield self._trades_event(symbol, out, kind)
                    out = []
                async for ev in self._fill(symbol, hw, tid):
                    yield ev
            out.append(t)
            hw = (tid, t.ts_us)
            self._hwm[symbol] = hw
        if out:
            if intact and frame is not None:
                self.stats.trades += len(out)
                yield Event("trades", f"{symbol}#{out[0].trade_id}", frame, tuple(out))
            else:
                yield self._trades_event(symbol, out, kind)

    async def _fill(self, symbol: str, after: tuple[int, int], before: int) -> AsyncIterator[Event]:
        """Trades with ids in ``(after[0], before)`` from REST, page by page (meanwhile the
        client is not complete: older trades are still to come)."""
        was = self.complete_since_us
        self.complete_since_us = None
        try:
            async for ev in self._fill_pages(symbol, after, before):
                yield ev
        finally:
            if was is not None:
                self.complete_since_us = _now_us()

    async def _fill_pages(self, symbol: str, after: tuple[int, int], before: int) -> AsyncIterator[Event]:
        self.stats.gaps += 1
        after_id, after_ts = after
        want = before - after_id - 1
        log.info("%s: trade_ids %d..%d missing; filling from REST", symbol, after_id + 1, before - 1)
        got = after_id
        holes: list[int] = []  # the first _MAX_MISSING ids REST skipped
        n_holes = 0
        # 1 ms before the last delivered trade: REST and WS round times differently
        since = after_ts * 1000 - 1_000_000
        failures = 0
        requests = 0
        try:
            pair: str | None = await asyncio.to_thread(self.rest.pair_for, symbol)
        except KrakenError as e:  # pair_for only fails on a bug; keep streaming
            log.warning("%s: no REST pair name (%s)", symbol, e)
            pair = None
        pager = TradePager(since, after_id=after_id, before_id=before)
        while pair is not None and got < before - 1:
            if requests and self.cfg.rest_page_pause_s > 0:
                await asyncio.sleep(self.cfg.rest_page_pause_s)
            requests += 1
            try:
                rows, last = await asyncio.to_thread(self.rest.trades_page, pair, symbol, pager.since_ns)
            except KrakenError as e:
                failures += 1
                log.warning("%s: REST Trades failed (%s)%s", symbol, e,
                            "; giving up this gap" if failures > self.cfg.rest_retries else "; retrying")
                if failures > self.cfg.rest_retries:
                    break
                await asyncio.sleep(min(0.25 * 2 ** failures, 5.0))
                continue
            page = pager.take(rows, last)
            for t in page:
                if t.trade_id > got + 1:
                    n_holes += t.trade_id - got - 1
                    room = _MAX_MISSING - len(holes)
                    if room > 0:  # capped before it is built
                        holes.extend(range(got + 1, min(t.trade_id, got + 1 + room)))
                got = t.trade_id
            if page:
                self.stats.filled += len(page)
                self._hwm[symbol] = (got, page[-1].ts_us)
                for i in range(0, len(page), _FILL_PAGE):
                    yield self._trades_event(symbol, page[i : i + _FILL_PAGE])
            if pager.done or got >= before - 1:
                break
            if not page and not pager.moved:
                # REST has nothing newer yet (it can lag the socket by a moment)
                failures += 1
                if failures > self.cfg.rest_retries:
                    break
                await asyncio.sleep(0.2 * failures)
                continue
        n_unfilled = n_holes + max(0, before - got - 1)
        if n_unfilled:
            # lists capped before they are built: a gap of billions costs what a small one does
            unfilled = holes + list(range(got + 1, min(before, got + 1 + max(0, _MAX_MISSING - len(holes)))))
            self.stats.unfilled += n_unfilled
            m = self._missing.setdefault(symbol, set())
            if len(m) < _MAX_MISSING:
                m.update(unfilled[: _MAX_MISSING - len(m)])
            first = holes[0] if holes else got + 1
            log.warning("%s: REST could not provide %d of %d missing trades (ids %d..%d)",
                        symbol, n_unfilled, want, first, before - 1)
        else:
            log.info("%s: filled %d trades from REST", symbol, want)


# -- running a client beside synchronous code ------------------------------------------------------


class ClientThread:
    """Runs a :class:`KrakenClient` on its own event loop in a daemon thread and hands
    its events over a queue, so synchronous callers (a Bytewax source partition) never
    block on the network. Events keep the client's delivery order."""

    def __init__(self, config: ClientConfig, resume: Resume | None = None) -> None:
        self.ready = threading.Event()
        self.client = KrakenClient(config, resume, on_ready=self.ready.set)
        self._q: queue.Queue[Event] = queue.Queue(maxsize=_MAX_EVENTS_QUEUED)  # bounded: see _pump
        self._error: BaseException | None = None
        self._done = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._thread = threading.Thread(target=self._main, name="kraken-client", daemon=True)

    def start(self) -> ClientThread:
        self._thread.start()
        return self

    def _main(self) -> None:
        loop = self._loop = asyncio.new_event_loop()
        try:
            self._task = loop.create_task(self._pump())
            loop.run_until_complete(self._task)
        except asyncio.CancelledError:
            pass
        except BaseException as e:  # noqa: BLE001 - handed to the caller by drain()/wait_ready()
            self._error = e
        finally:
            self._done.set()
            self.ready.set()
            with contextlib.suppress(Exception):
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.run_until_complete(loop.shutdown_default_executor())
            loop.close()

    async def _pump(self) -> None:
        agen = self.client.stream()
        try:
            async for ev in agen:
                while True:  # a full queue (the flow is behind) pauses the client, not its timers
                    try:
                        self._q.put_nowait(ev)
                        break
                    except queue.Full:
                        self.client.stats.backpressure += 1
                        await asyncio.sleep(0.005)
        finally:
            await agen.aclose()  # type: ignore[attr-defined]

    @property
    def error(self) -> BaseException | None:
        return self._error

    def wait_ready(self, timeout: float) -> bool:
        """Wait until the first subscription is acknowledged; raise the client's error if
        it failed first. Returns False on timeout."""
        ok = self.ready.wait(timeout)
        if self._error is not None:
            raise self._error
        return ok and not self._done.is_set()

    def drain(self, max_events: int = 10_000) -> list[Event]:
        """The events queued so far (never blocks). Raises the client's fatal error once
        the events before it are drained."""
        out: list[Event] = []
        get = self._q.get_nowait
        try:
            while len(out) < max_events:
                out.append(get())
        except queue.Empty:
            if not out and self._error is not None:
                raise self._error from None
        return out

    def get(self, timeout: float) -> Event | None:
        """The next event, waiting at most ``timeout`` seconds."""
        try:
            return self._q.get(timeout=timeout)
        except queue.Empty:
            if self._error is not None:
                raise self._error from None
            return None

    @property
    def running(self) -> bool:
        return not self._done.is_set()

    def stop(self, timeout: float = 5.0) -> None:
        loop, task = self._loop, self._task
        if loop is not None and task is not None and not self._done.is_set():
            with contextlib.suppress(RuntimeError):  # loop already closed
                loop.call_soon_threadsafe(task.cancel)
        self._thread.join(timeout)


def trades_of(events: Iterable[Event]) -> list[Trade]:
    """All trades carried by ``trades`` events, in delivery order."""
    return [t for ev in events if ev.kind == "trades" for t in ev.trades]
