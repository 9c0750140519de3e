"""A fake Kraken for tests and benchmarks: a WebSocket v2 server and a REST server on free loopback
ports, each in a background thread, sharing one market — the **truth** the tests
compare against (``FakeKraken.log``: every trade that happened, per symbol).

WebSocket (``ws_url``): a ``status`` message on connect (the one recorded from the
real Kraken when ``../shared/data`` is present), subscribe acks shaped like Kraken's
(an error ack for a symbol the fake does not list), a snapshot of the last 50 trades
on ``snapshot: true``, heartbeats, pong to ``ping``, and trade updates as the test
publishes them. REST (``rest_url``): ``/0/public/Trades`` pages shaped like
``kraken_rest/trades_XBTUSDT_2025-11-10.json`` (rows ``[price, volume, time, b/s,
m/l, misc, trade_id]``, at most 1000 per page, ``since``/``last`` ns cursor) and
``/0/public/AssetPairs`` (Kraken's own entries, whose wsnames say XBT/USD).

Scenario controls (call them from the test thread): :meth:`publish` (optionally
dropping every connection after the k-th message, i.e. during a burst),
:meth:`withhold` (trades that happen but are not sent: a gap while connected),
:meth:`drop`, :meth:`go_silent`, :meth:`send_raw` (malformed or recorded frames),
:meth:`send_snapshot` (an overlapping snapshot), :meth:`fail_rest`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
import urllib.parse
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from tickcast.kraken import parse_message, trades_to_message
from tickcast.schema import Trade, us_to_iso

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"  # <repo>/../shared/data
RECORDED_WS = SHARED / "kraken_ws" / "v2_trade_session_2026-07-07.jsonl"
ASSET_PAIRS = SHARED / "kraken_rest" / "asset_pairs_btc_eth.json"
_ID_BASE = {"BTC/USD": 103_436_000, "ETH/USD": 64_175_000}
_STATUS = ('{"channel":"status","type":"update","data":[{"version":"2.0.10","system":"online",'
           '"api_version":"v2","connection_id":4421894013101914413}]}')


def now_us() -> int:
    return time.time_ns() // 1000


def _num(v: float, decimals: int) -> str:
    s = f"{v:.{decimals}f}"
    return s if float(s) == v else repr(v)


def rest_row(t: Trade) -> list[Any]:
    return [_num(t.price, 5), _num(t.qty, 8), round(t.ts_us / 1e6, 6), t.side[0],
            {"market": "m", "limit": "l"}.get(t.ord_type, "l"), "", t.trade_id]


def _pair_entries(symbols: Iterable[str]) -> dict[str, dict[str, Any]]:
    """AssetPairs entries: the real ones where the shared data has them, else synthesised
    the way Kraken names pairs (XBT for BTC, X/Z prefixes on legacy assets)."""
    real: dict[str, dict[str, Any]] = {}
    if ASSET_PAIRS.exists():
        real = json.loads(ASSET_PAIRS.read_text())["result"]
    out: dict[str, dict[str, Any]] = {}
    for sym in symbols:
        base, quote = sym.split("/")
        rbase = {"BTC": "XBT", "DOGE": "XDG"}.get(base, base)
        ws = f"{rbase}/{quote}"
        hit = next(((k, v) for k, v in real.items() if v.get("wsname") == ws), None)
        if hit is None:
            hit = (f"X{rbase}Z{quote}", {"altname": rbase + quote, "wsname": ws, "base": "X" + rbase,
                                         "quote": "Z" + quote, "pair_decimals": 5, "lot_decimals": 8})
        out[hit[0]] = hit[1]
    return out


@dataclass(eq=False)
class _Conn:
    ws: ServerConnection
    symbols: set[str] = field(default_factory=set)
    silent: bool = False


class FakeKraken:
    """Start with :meth:`start` (or as a context manager); see the module docstring."""

    def __init__(self, symbols: Sequence[str] = ("BTC/USD", "ETH/USD"), *, seed: int = 7, initial: int = 5,
                 heartbeat_s: float = 0.5, snapshot_size: int = 50, asset_pairs: bool = True) -> None:
        from tickcast.sim import MarketSimulator

        self.symbols = list(symbols)
        self.heartbeat_s = heartbeat_s
        self.snapshot_size = snapshot_size
        self.serve_asset_pairs = asset_pairs
        self.pairs = _pair_entries(self.symbols)  # key -> entry
        self._pair_symbol = {}
        for key, e in self.pairs.items():
            sym = next(s for s in self.symbols if _same(s, e["wsname"]))
            self._pair_symbol[key] = self._pair_symbol[e["altname"]] = (sym, key)
        self.log: dict[str, list[Trade]] = {s: [] for s in self.symbols}
        self._lock = threading.Lock()
        self._sim = MarketSimulator(self.symbols, seed, now_us())
        self._next_id = {s: _ID_BASE.get(s, 1_000_000 * (i + 1)) for i, s in enumerate(self.symbols)}
        self._conns: set[_Conn] = set()
        self.connections = 0  # WebSocket connections accepted so far
        self.subscriptions = 0  # subscribe requests that were fully acknowledged
        self.rest_requests: list[str] = []
        self._rest_failures = 0
        self.status_frame = _STATUS
        if RECORDED_WS.exists():
            self.status_frame = RECORDED_WS.read_text().splitlines()[0]
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._http: ThreadingHTTPServer | None = None
        self.ws_port = 0
        if initial:
            self.withhold(self.make_trades(initial * len(self.symbols)))

    # -- lifecycle ---------------------------------------------------------------------------
    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.ws_port}/v2"

    @property
    def rest_url(self) -> str:
        assert self._http is not None
        return f"http://127.0.0.1:{self._http.server_address[1]}"

    def start(self) -> FakeKraken:
        ready = threading.Event()

        def run() -> None:
            loop = self._loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)

            async def main() -> None:
                self._stop = asyncio.Event()
                async with serve(self._handler, "127.0.0.1", 0, ping_interval=None) as server:
                    self.ws_port = next(iter(server.sockets)).getsockname()[1]
                    hb = asyncio.create_task(self._heartbeats())
                    ready.set()
                    await self._stop.wait()
                    hb.cancel()
                    for c in list(self._conns):
                        c.ws.transport.abort()

            loop.run_until_complete(main())
            loop.close()

        self._thread = threading.Thread(target=run, name="fake-kraken-ws", daemon=True)
        self._thread.start()
        ready.wait(10)
        self._http = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        self._http.daemon_threads = True
        threading.Thread(target=self._http.serve_forever, name="fake-kraken-rest", daemon=True).start()
        return self

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(10)
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()

    def __enter__(self) -> FakeKraken:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _call(self, coro: Any, timeout: float = 10.0) -> Any:
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    # -- the market -----------------------------------------------------------------------------
    def make_trades(self, n: int, symbols: Sequence[str] | None = None) -> list[Trade]:
        """``n`` new simulated trades (prices and sizes from tickcast.sim), stamped with the
        wall clock, ids continuing each symbol's sequence. Not yet in the log."""
        want = set(symbols or self.symbols)
        out: list[Trade] = []
        while len(out) < n:
            for t in self._sim.next_trades(2 * n):
                if t.symbol in want and len(out) < n:
                    out.append(t)
        stamped = []
        with self._lock:
            for t in out:
                tid = self._next_id[t.symbol] = self._next_id[t.symbol] + 1
                last = self.log[t.symbol][-1].ts_us if self.log[t.symbol] else 0
                stamped.append(t._replace(trade_id=tid, ts_us=max(now_us(), last)))
        return stamped

    def history(self, symbol: str, n: int, start_us: int, step_us: int) -> list[Trade]:
        """``n`` past trades of ``symbol``, ``step_us`` apart from ``start_us``, added to the log
        (call before any other trade of the symbol)."""
        trades = [t._replace(ts_us=start_us + i * step_us) for i, t in enumerate(self.make_trades(n, [symbol]))]
        self.withhold(trades)
        return trades

    def withhold(self, trades: Iterable[Trade]) -> None:
        """Trades that happen (REST has them) but are not sent on any socket."""
        with self._lock:
            for t in trades:
                self._append(t)

    def _append(self, t: Trade) -> None:
        lst = self.log[t.symbol]
        assert not lst or t.trade_id > lst[-1].trade_id, "the fake's trade ids must increase"
        lst.append(t)

    def all_trades(self) -> list[Trade]:
        with self._lock:
            return [t for s in self.symbols for t in self.log[s]]

    # -- scenario controls -------------------------------------------------------------------------
    def publish(self, trades: Sequence[Trade], per_msg: int = 1, drop_after: int | None = None) -> int:
        """Send ``trades`` as update messages of up to ``per_msg`` same-symbol trades. With
        ``drop_after=k`` every connection is dropped (TCP reset, close code 1006) after the
        k-th message; the rest of the burst still happens (REST has it). Returns the
        number of messages sent."""
        msgs: list[list[Trade]] = []
        for t in trades:
            if msgs and msgs[-1][0].symbol == t.symbol and len(msgs[-1]) < per_msg:
                msgs[-1].append(t)
            else:
                msgs.append([t])
        return int(self._call(self._publish(msgs, drop_after)))

    async def _publish(self, msgs: list[list[Trade]], drop_after: int | None) -> int:
        sent = 0
        for i, group in enumerate(msgs):
            if drop_after is not None and i == drop_after:
                self._drop_all()
            with self._lock:
                for t in group:
                    self._append(t)
            if drop_after is None or i < drop_after:
                frame = orjson.dumps(trades_to_message(group)).decode()
                await self._broadcast(frame, group[0].symbol)
                sent += 1
            if i % 50 == 49:
                await asyncio.sleep(0)  # let the connections' writers run within a burst
        return sent

    def send_raw(self, frame: str | bytes, symbol: str | None = None, record_trades: bool = True) -> None:
        """Send a frame verbatim to every subscribed connection (to those subscribed to
        ``symbol`` if given). Valid trades in it join the log unless ``record_trades=False``."""
        text = frame.decode() if isinstance(frame, bytes) else frame
        if record_trades:
            self.withhold(parse_message(text, "fake", 0)[0])
        self._call(self._broadcast(text, symbol))

    def send_snapshot(self, symbol: str) -> None:
        """An unsolicited snapshot (last ``snapshot_size`` trades) on the open connections."""
        self._call(self._broadcast(self._snapshot_frame(symbol), symbol))

    def drop(self) -> None:
        """Drop every connection abruptly (the client sees close code 1006)."""
        self._call(self._drop_async())

    async def _drop_async(self) -> None:
        self._drop_all()

    def _drop_all(self) -> None:
        for c in list(self._conns):
            c.ws.transport.abort()
            self._conns.discard(c)

    def go_silent(self) -> None:
        """The open connections stay open but send nothing more (no heartbeat, no pong)."""
        self._call(self._silence())

    async def _silence(self) -> None:
        for c in self._conns:
            c.silent = True

    def fail_rest(self, n: int) -> None:
        """The next ``n`` REST requests answer HTTP 503."""
        with self._lock:
            self._rest_failures = n

    def wait_subscribed(self, count: int = 1, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while self.subscriptions < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no client subscribed {count} time(s) within {timeout} s "
                                   f"({self.subscriptions} so far)")
            time.sleep(0.01)

    # -- WebSocket side ---------------------------------------------------------------------------
    def _snapshot_frame(self, symbol: str) -> str:
        with self._lock:
            last = self.log[symbol][-self.snapshot_size :]
        return orjson.dumps(trades_to_message(last, "snapshot")).decode()

    async def _broadcast(self, frame: str, symbol: str | None) -> None:
        for c in list(self._conns):
            if not c.silent and (symbol is None or symbol in c.symbols):
                with contextlib.suppress(ConnectionClosed):
                    await c.ws.send(frame)

    async def _heartbeats(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_s)
            await self._broadcast('{"channel":"heartbeat"}', None)

    async def _handler(self, ws: ServerConnection) -> None:
        conn = _Conn(ws)
        self.connections += 1
        self._conns.add(conn)
        try:
            await ws.send(self.status_frame)
            async for raw in ws:
                try:
                    msg = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    continue
                if conn.silent or not isinstance(msg, dict):
                    continue
                t_in = us_to_iso(now_us())
                if msg.get("method") == "ping":
                    await ws.send(orjson.dumps({"method": "pong", "req_id": msg.get("req_id"),
                                                "time_in": t_in, "time_out": us_to_iso(now_us())}).decode())
                elif msg.get("method") == "subscribe":
                    await self._subscribe(conn, msg, t_in)
        except ConnectionClosed:
            pass
        finally:
            self._conns.discard(conn)

    async def _subscribe(self, conn: _Conn, msg: dict[str, Any], t_in: str) -> None:
        params = msg.get("params") or {}
        ok = True
        for sym in params.get("symbol") or []:
            if sym not in self.log:
                ok = False
                # shaped like Kraken's v2 error ack
                await conn.ws.send(orjson.dumps({
                    "error": f"Currency pair not supported {sym}", "method": "subscribe",
                    "req_id": msg.get("req_id"), "success": False, "symbol": sym,
                    "time_in": t_in, "time_out": us_to_iso(now_us())}).decode())
                continue
            await conn.ws.send(orjson.dumps({
                "method": "subscribe",
                "result": {"channel": params.get("channel"), "snapshot": bool(params.get("snapshot")),
                           "symbol": sym},
                "success": True, "time_in": t_in, "time_out": us_to_iso(now_us()),
                "req_id": msg.get("req_id")}).decode())
            if params.get("snapshot"):
                await conn.ws.send(self._snapshot_frame(sym))
            conn.symbols.add(sym)
        if ok:
            self.subscriptions += 1

    # -- REST side ----------------------------------------------------------------------------------
    def rest(self, path: str, query: dict[str, list[str]]) -> tuple[int, Any]:
        with self._lock:
            self.rest_requests.append(path + "?" + urllib.parse.urlencode(query, doseq=True))
            if self._rest_failures:
                self._rest_failures -= 1
                return 503, {"error": ["EService:Unavailable"]}
        if path == "/0/public/AssetPairs" and self.serve_asset_pairs:
            return 200, {"error": [], "result": self.pairs}
        if path != "/0/public/Trades":
            return 404, {"error": ["EGeneral:Unknown method"]}
        pair = (query.get("pair") or [""])[0]
        hit = self._pair_symbol.get(pair)
        if hit is None:
            return 200, {"error": ["EQuery:Unknown asset pair"]}
        sym, key = hit
        count = min(int((query.get("count") or ["1000"])[0]), 1000)
        raw_since = (query.get("since") or [""])[0]
        with self._lock:
            trades = list(self.log[sym])
        if raw_since:
            # ns (an integer cursor) or seconds, like Kraken; exact integers, no float rounding
            since_ns = int(raw_since) if raw_since.isdigit() else int(float(raw_since) * 1e9)
            if since_ns < 10**14:
                since_ns *= 10**9
            page = [t for t in trades if t.ts_us * 1000 > since_ns][:count]
        else:
            since_ns = 0
            page = trades[-count:]
        last = page[-1].ts_us * 1000 if page else since_ns
        return 200, {"error": [], "result": {key: [rest_row(t) for t in page], "last": str(last)}}


def _same(symbol: str, wsname: str) -> bool:
    alias = {"XBT": "BTC", "XDG": "DOGE"}
    b, q = wsname.split("/")
    return f"{alias.get(b, b)}/{alias.get(q, q)}" == symbol


def _make_handler(fake: FakeKraken) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
            u = urllib.parse.urlsplit(self.path)
            status, payload = fake.rest(u.path, urllib.parse.parse_qs(u.query))
            body = orjson.dumps(payload)
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
            pass

    return Handler


def recorded_frames(path: Path = RECORDED_WS) -> list[str]:
    """The heartbeat and trade frames of a recorded real session (its status and acks are
    the fake's own)."""
    out = []
    for line in path.read_text().splitlines():
        msg = orjson.loads(line)
        if msg.get("channel") in ("heartbeat", "trade"):
            out.append(line)
    return out
