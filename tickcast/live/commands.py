"""``tickcast record`` and ``tickcast backfill`` (the commands :data:`RECORD` and
:data:`BACKFILL` of ``tickcast.cli``).

* ``record`` saves a live session to a replay file (CONTRACT §4): the WebSocket
  frames in arrival order, one per line. By default the file replays to every trade
  **exactly once**: frames go in verbatim, except that a trade frame holding trades
  already recorded (a snapshot after a reconnect) is written with only its new
  trades, and trades filled from REST after a gap are written as v2 trade messages
  where they belong. ``--verbatim`` writes every frame exactly as received instead
  (a wire capture: replaying one with reconnects in it counts the overlapping
  snapshots twice).
* ``backfill`` pulls history through REST ``/0/public/Trades`` into a replay file of
  v2 trade messages under the data directory and runs the feature flow on it — the
  same code as live data. The candles and features it writes are keyed like live ones
  and the stores keep one row per key, so running it twice changes nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

from tickcast.command import Command, flow_command, parse_time
from tickcast.config import Settings
from tickcast.kraken import KrakenError
from tickcast.learner import MODEL_KINDS
from tickcast.live.kraken_client import (
    ClientConfig,
    KrakenClient,
    NetworkUnavailable,
    RestClient,
    TradePager,
)
from tickcast.replay import write_trades
from tickcast.schema import Trade, us_to_iso

PROGRESS_EVERY_S = 5.0
_MSG_TRADES = 500  # trades per v2 message in backfill files


def _settings(symbols: str | None) -> Settings:
    env = dict(os.environ)
    if symbols:
        env["TICKCAST_SYMBOLS"] = symbols
    return Settings.from_env(env)


def _fail(cmd: str, e: BaseException) -> int:
    print(f"tickcast {cmd}: {e}", file=sys.stderr)
    return 1 if isinstance(e, NetworkUnavailable) else 2


# -- record -----------------------------------------------------------------------------------------


def cmd_record(args: argparse.Namespace) -> int:
    s = _settings(args.symbols)
    cfg = ClientConfig.from_settings(s, verbatim=args.verbatim, others=not args.verbatim)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    client = KrakenClient(cfg)
    counts: Counter[str] = Counter()
    print(f"recording {','.join(s.symbols)} from {cfg.ws_url} to {out}"
          + (f" for {args.duration:g} s" if args.duration else "") + " (Ctrl-C stops)", file=sys.stderr)
    t0 = time.monotonic()
    try:
        asyncio.run(_record(client, out, args.duration, args.verbatim, counts, t0))
    except KeyboardInterrupt:
        pass
    except KrakenError as e:
        return _fail("record", e)
    print(f"recorded {counts['lines']:,} messages ({client.stats.trades:,} trades) in "
          f"{time.monotonic() - t0:.1f} s to {out}; {_stats(client)}", file=sys.stderr)
    return 0


def _stats(client: KrakenClient) -> str:
    st = client.stats
    return (f"reconnects {st.reconnects}, gaps {st.gaps}, filled {st.filled}, unfilled {st.unfilled}, "
            f"duplicates dropped {st.duplicates}, malformed {st.malformed}")


async def _record(client: KrakenClient, out: Path, duration: float | None, verbatim: bool,
                  counts: Counter[str], t0: float) -> None:
    kinds = {"frame"} if verbatim else {"trades", "malformed", "other"}
    with out.open("wb") as f:

        async def consume() -> None:
            async for ev in client.stream():
                if ev.kind in kinds:
                    f.write(ev.raw + b"\n")
                    counts["lines"] += 1

        task = asyncio.create_task(consume())
        try:
            while not task.done():
                left = None if not duration else duration - (time.monotonic() - t0)
                if left is not None and left <= 0:
                    break
                wait = PROGRESS_EVERY_S if left is None else min(PROGRESS_EVERY_S, left)
                await asyncio.wait({task}, timeout=wait)
                f.flush()
                if not task.done():
                    print(f"  {time.monotonic() - t0:6.1f} s  {counts['lines']:,} messages, "
                          f"{client.stats.trades:,} trades; {_stats(client)}", file=sys.stderr, flush=True)
        finally:
            if not task.done():
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


# -- backfill ---------------------------------------------------------------------------------------


def fetch_history(rest: RestClient, symbol: str, since_us: int, until_us: int, *, page_pause_s: float = 1.0,
                  retries: int = 3, progress: bool = True) -> list[Trade]:
    """Every REST trade of ``symbol`` with ``since_us <= time < until_us``, in trade order
    (paged by :class:`~tickcast.live.kraken_client.TradePager`; each trade once, by
    ``trade_id``). Raises KrakenError after ``retries`` failed requests."""
    pair = rest.pair_for(symbol)
    pager = TradePager(since_us * 1000 - 1, since_us=since_us, until_us=until_us)
    out: list[Trade] = []
    failures = 0
    page_no = 0
    shown = time.monotonic()
    while True:
        if page_no and page_pause_s > 0:
            time.sleep(page_pause_s)
        try:
            rows, last = rest.trades_page(pair, symbol, pager.since_ns)
        except KrakenError as e:
            failures += 1
            if failures > retries:
                raise KrakenError(f"{symbol}: REST Trades failed {failures} times; last error: {e}") from None
            time.sleep(min(0.5 * 2 ** failures, 8.0))
            continue
        page_no += 1
        out += pager.take(rows, last)
        done = pager.done or not rows
        if progress and (done or time.monotonic() - shown >= 2.0):
            shown = time.monotonic()
            upto = us_to_iso(out[-1].ts_us) if out else "-"
            print(f"  {symbol} ({pair}): page {page_no}, {len(out):,} trades, up to {upto}",
                  file=sys.stderr, flush=True)
        if done or not pager.moved:
            break  # the end of the range, or of what REST has
    return out


def _valkey_running(data_dir: Path) -> bool:
    url_file = data_dir.resolve() / "valkey" / "url"
    if not url_file.exists():
        return False
    try:
        import redis

        return bool(redis.Redis.from_url(url_file.read_text().strip(), socket_timeout=1).ping())
    except Exception:  # noqa: BLE001 - not answering = not running
        return False


def cmd_backfill(args: argparse.Namespace) -> int:
    s = _settings(args.symbols)
    since = parse_time(args.since)
    until = parse_time(args.until) if args.until else time.time_ns() // 1000
    w = s.window_us
    since_a, until_a = since - since % w, until - until % w  # whole candles only
    if since_a >= until_a:
        print(f"tickcast backfill: --since {args.since} is not at least one {s.window_seconds}-s candle "
              f"before --until", file=sys.stderr)
        return 2
    print(f"backfill {','.join(s.symbols)} from {us_to_iso(since_a)} to {us_to_iso(until_a)} "
          f"(whole {s.window_seconds}-s candles) via {s.kraken_rest_url}", file=sys.stderr)
    rest = RestClient(s.kraken_rest_url, timeout_s=10.0)
    t0 = time.monotonic()
    history: dict[str, list[Trade]] = {}
    try:
        for sym in s.symbols:
            history[sym] = fetch_history(rest, sym, since_a, until_a, page_pause_s=args.page_pause)
    except KrakenError as e:
        print(f"tickcast backfill: {e}", file=sys.stderr)
        return 1
    total = sum(len(v) for v in history.values())
    tag = f"{'_'.join(x.replace('/', '') for x in s.symbols)}_{since_a // 1_000_000}_{until_a // 1_000_000}"
    out = Path(args.out) if args.out else s.data_dir / "backfill" / f"backfill_{tag}.jsonl"
    write_trades(out, itertools.chain.from_iterable(history.values()), per_timestamp=False,
                 max_per_message=_MSG_TRADES)
    print(f"fetched {total:,} trades in {time.monotonic() - t0:.1f} s -> {out}", file=sys.stderr)
    if args.no_flow or total == 0:
        if total == 0:
            print("nothing to process: REST returned no trades in that range", file=sys.stderr)
        return 0
    env = dict(os.environ, TICKCAST_SOURCE=f"replay:{out.resolve()}", TICKCAST_SYMBOLS=",".join(s.symbols),
               TICKCAST_ONLINE_MODEL=args.online_model)
    started_valkey = False
    if not s.redis_url and not _valkey_running(s.data_dir):
        started_valkey = True  # the flow starts the embedded Valkey; stop it afterwards
    print(f"running the feature flow on it (TICKCAST_SOURCE=replay:{out}) ...", file=sys.stderr, flush=True)
    t1 = time.monotonic()
    try:
        rc = subprocess.run(flow_command(), env=env).returncode
    finally:
        if started_valkey:
            from tickcast.embedded import stop_valkey

            stop_valkey(s.data_dir)
    if rc != 0:
        print(f"tickcast backfill: the feature flow exited with {rc}", file=sys.stderr)
        return rc
    print(f"done in {time.monotonic() - t1:.1f} s: candles and features of {total:,} trades are in "
          f"{s.offline_url} (tickcast sql \"SELECT symbol, count(), sum(trades) FROM candles GROUP BY symbol\")",
          file=sys.stderr)
    return 0


# -- the commands -----------------------------------------------------------------------------------


def _wrap(text: str) -> str:
    return textwrap.fill(text, 88)


_EPILOG = ("Configuration comes from TICKCAST_* environment variables (see README): "
           "TICKCAST_KRAKEN_WS_URL, TICKCAST_KRAKEN_REST_URL, TICKCAST_SYMBOLS, TICKCAST_DATA_DIR, ...")


def _record_args(rec: argparse.ArgumentParser) -> None:
    rec.add_argument("--out", required=True, help="replay file to write (JSON Lines)")
    rec.add_argument("--duration", type=float, default=None,
                     help="stop after this many seconds (default: until Ctrl-C)")
    rec.add_argument("--symbols", help="comma-separated Kraken v2 symbols (default: $TICKCAST_SYMBOLS)")
    rec.add_argument("--verbatim", action="store_true",
                     help="every frame exactly as received (overlapping snapshots included, no REST fill)")


def _backfill_args(bf: argparse.ArgumentParser) -> None:
    bf.add_argument("--since", required=True, help="start, inclusive: RFC 3339 (2026-01-01T00:00:00Z), "
                    "a date, or unix seconds")
    bf.add_argument("--until", help="end, exclusive (same forms; default: now)")
    bf.add_argument("--symbols", help="comma-separated Kraken v2 symbols (default: $TICKCAST_SYMBOLS)")
    bf.add_argument("--out", help="replay file to write (default: DATA_DIR/backfill/backfill_<symbols>_<range>.jsonl)")
    bf.add_argument("--no-flow", action="store_true", help="only write the replay file")
    bf.add_argument("--online-model", default="off", choices=["off", *MODEL_KINDS],
                    help="online model in the flow (default: off)")
    bf.add_argument("--page-pause", type=float, default=1.0,
                    help="seconds between REST pages (Kraken's public rate limit; default 1)")


RECORD = Command(
    "record", cmd_record, _record_args,
    help="save a live Kraken session to a replay file (JSON Lines of raw v2 messages)",
    description=_wrap("Connects to Kraken's WebSocket v2 (TICKCAST_KRAKEN_WS_URL), subscribes to the trades of "
    "the symbols, and writes every message in arrival order, one per line - the replay format of "
    "TICKCAST_SOURCE=replay:FILE. Reconnects with backoff; a trade_id gap is filled from REST. By "
    "default the file holds each trade exactly once: snapshot trades already recorded are left out "
    "and REST-filled trades are written as v2 trade messages; --verbatim writes the frames exactly as "
    "received instead. Progress goes to stderr every few seconds."),
    epilog="example: tickcast record --out data/session.jsonl --duration 600 --symbols BTC/USD,ETH/USD\n"
    + _EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)

BACKFILL = Command(
    "backfill", cmd_backfill, _backfill_args,
    help="pull trade history from Kraken REST and run it through the feature flow",
    description=_wrap("Fetches REST /0/public/Trades (TICKCAST_KRAKEN_REST_URL) for [--since, --until), "
    "aligned to whole candles (TICKCAST_WINDOW_SECONDS; both ends round down, so no candle is written "
    "from part of its trades), writes it as a replay file under "
    "DATA_DIR/backfill/, and runs `python -m bytewax.run dataflows.features` on it: the same parsing, "
    "candle and feature code as live data. The stores keep one row per key, so a second run changes "
    "nothing. Features need a warm-up: the first candles after --since have incomplete lookbacks "
    "(NaN until warm), and where the range overlaps rows the live flow wrote, the backfill's rows "
    "replace them. The online model is off by default (history should not register models); "
    "--online-model linear turns it on."),
    epilog="examples:\n  tickcast backfill --since 2026-01-01T00:00:00Z --until 2026-01-02T00:00:00Z\n"
    "  tickcast backfill --since 1767225600 --symbols BTC/USD\n" + _EPILOG,
    formatter_class=argparse.RawDescriptionHelpFormatter)
