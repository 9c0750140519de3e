"""``tickcast convert``: trade history files -> replay files (CONTRACT §4), so real
data can drive demos, tests and ``TICKCAST_SOURCE=replay:FILE``.

Inputs (the format is detected from the content):

* **Trade CSVs** with the columns ``ts_iso,ts_unix,symbol,price,qty,side,ord_type,
  trade_id,source`` (the schema of ``../shared/data/trades/``). Symbols are
  normalised to Kraken v2 (``ETH-USD`` and ``XBT/USD`` become ``ETH/USD`` and
  ``BTC/USD``). Time comes from ``ts_iso`` (exact µs), else from ``ts_unix``.
* **Kraken REST** ``GET /0/public/Trades`` pages (JSON, e.g.
  ``../shared/data/kraken_rest/trades_XBTUSDT_2025-11-10.json``); the v2 symbol is
  derived from the pair name (``XBTUSDT`` -> ``BTC/USDT``) or given with ``--symbol``.

Output: JSON Lines of Kraken WS v2 trade ``update`` messages, built by
:func:`tickcast.replay.write_trades`, in event-time order (a stable sort, so
rows with equal times keep their file order); consecutive trades of one symbol with
the same timestamp share one message, as Kraken sends them.
``--symbol`` renames every trade (for files of one pair).

**Synthesised values** (only where a row lacks them; the summary line counts them):

* ``trade_id``: ``ts_us * 1000 + n``, where ``n`` numbers the id-less trades of the
  same symbol and microsecond in file order. Stable — the same trade gets the same id
  in every conversion, also of an overlapping extract — and increasing with time,
  but far above Kraken's own ids, so do not mix id-less and real rows of one symbol.
* ``side`` (the taker's side): the tick rule — ``buy`` on an uptick, ``sell`` on a
  downtick, the previous side on an unchanged price, ``buy`` for a symbol's first trade.

>>> normalise_symbol("XBT-USDT"), normalise_symbol("XXBTZUSD"), normalise_symbol("ETH/USD")
('BTC/USDT', 'BTC/USD', 'ETH/USD')
"""

from __future__ import annotations

import argparse
import csv
import math
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import orjson

from tickcast.command import Command
from tickcast.kraken import KrakenError, parse_rest_trades, parse_rfc3339_us
from tickcast.replay import write_trades
from tickcast.schema import Trade, is_symbol

CSV_COLUMNS = ("ts_iso", "ts_unix", "symbol", "price", "qty", "side", "ord_type", "trade_id", "source")
# Kraken's legacy asset codes -> the v2 names
_ASSETS = {"XBT": "BTC", "XXBT": "BTC", "XDG": "DOGE", "XXDG": "DOGE", "XETH": "ETH", "XLTC": "LTC",
           "XXRP": "XRP", "XXLM": "XLM", "XETC": "ETC", "XZEC": "ZEC", "XXMR": "XMR", "XREP": "REP",
           "XMLN": "MLN", "ZUSD": "USD", "ZEUR": "EUR", "ZGBP": "GBP", "ZJPY": "JPY", "ZCAD": "CAD",
           "ZAUD": "AUD", "ZCHF": "CHF"}
_QUOTES = ("USDT", "USDC", "ZUSD", "ZEUR", "ZGBP", "ZJPY", "ZCAD", "USD", "EUR", "GBP", "JPY", "CAD",
           "AUD", "CHF", "BTC", "XBT", "ETH", "DAI", "PYUSD")
_MAX_PER_US = 1000


class ConvertError(ValueError):
    """An input cannot be converted; the message names the file, the line and the problem."""


@dataclass
class ConvertResult:
    trades: int = 0
    messages: int = 0
    symbols: dict[str, int] = field(default_factory=dict)
    synthesised_ids: int = 0
    synthesised_sides: int = 0


def normalise_symbol(raw: str) -> str:
    """An exchange pair name -> the Kraken v2 symbol ``BASE/QUOTE``; raises ConvertError."""
    s = raw.strip().upper()
    for sep in ("/", "-", "_"):
        if sep in s:
            base, _, quote = s.partition(sep)
            break
    else:
        m = re.match(r"^(X[A-Z]{3})(Z[A-Z]{3})$", s)  # legacy REST names: XXBTZUSD
        if m:
            base, quote = m.group(1), m.group(2)
        else:
            quote = next((q for q in _QUOTES if s.endswith(q) and len(s) > len(q)), "")
            base = s[: len(s) - len(quote)]
    base, quote = _ASSETS.get(base, base), _ASSETS.get(quote, quote)
    sym = f"{base}/{quote}"
    if not quote or not is_symbol(sym):
        raise ConvertError(f"cannot tell the Kraken v2 symbol of {raw!r}; pass --symbol BASE/QUOTE")
    return sym


def _number(text: str, what: str, where: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise ConvertError(f"{where}: {what} {text!r} is not a number") from None
    if not math.isfinite(v) or v <= 0:
        raise ConvertError(f"{where}: {what} {text!r} must be a number > 0")
    return v


def _time_us(row: dict[str, str], where: str) -> int:
    iso = (row.get("ts_iso") or "").strip()
    if iso:
        try:
            return parse_rfc3339_us(iso)
        except ValueError as e:
            raise ConvertError(f"{where}: ts_iso: {e}") from None
    unix = (row.get("ts_unix") or "").strip()
    try:
        return int((Decimal(unix) * 1_000_000).to_integral_value(rounding=ROUND_HALF_UP))
    except InvalidOperation:
        raise ConvertError(f"{where}: needs ts_iso (RFC 3339) or ts_unix (seconds); got {unix!r}") from None


@dataclass
class _Row:
    symbol: str
    ts_us: int
    price: float
    qty: float
    side: str  # "" = unknown
    ord_type: str
    trade_id: int | None


def read_trades_csv(path: Path) -> list[_Row]:
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in ("symbol", "price", "qty") if c not in (reader.fieldnames or [])]
        if missing or not {"ts_iso", "ts_unix"} & set(reader.fieldnames or []):
            raise ConvertError(f"{path}: not a trades CSV: expected the columns {','.join(CSV_COLUMNS)}; "
                               f"got {','.join(reader.fieldnames or [])}")
        symbols: dict[str, str] = {}
        rows: list[_Row] = []
        for row in reader:
            where = f"{path}:{reader.line_num}"
            raw_sym = (row.get("symbol") or "").strip()
            sym = symbols.get(raw_sym)
            if sym is None:
                try:
                    sym = symbols[raw_sym] = normalise_symbol(raw_sym)
                except ConvertError as e:
                    raise ConvertError(f"{where}: {e}") from None
            side = (row.get("side") or "").strip().lower()
            side = {"b": "buy", "s": "sell"}.get(side, side)
            if side not in ("", "buy", "sell"):
                raise ConvertError(f'{where}: side must be "buy", "sell" or empty; got {side!r}')
            ot = (row.get("ord_type") or "").strip().lower()
            ot = {"m": "market", "l": "limit"}.get(ot, ot)
            tid_text = (row.get("trade_id") or "").strip()
            tid: int | None = None
            if tid_text:
                try:
                    tid = int(tid_text)
                except ValueError:
                    raise ConvertError(f"{where}: trade_id {tid_text!r} is not an integer") from None
                if tid < 0:
                    raise ConvertError(f"{where}: trade_id {tid} is negative")
            rows.append(_Row(sym, _time_us(row, where), _number(row.get("price") or "", "price", where),
                             _number(row.get("qty") or "", "qty", where), side, ot, tid))
    return rows


def read_rest_page(path: Path, payload: Any, symbol: str | None) -> list[_Row]:
    if not isinstance(payload, dict) or not isinstance(payload.get("result"), dict):
        raise ConvertError(f"{path}: not a Kraken REST Trades page (no result object)")
    if symbol is None:
        pairs = [k for k in payload["result"] if k != "last"]
        if len(pairs) != 1:
            raise ConvertError(f"{path}: the page holds {len(pairs)} pairs; expected one")
        try:
            symbol = normalise_symbol(pairs[0])
        except ConvertError as e:
            raise ConvertError(f"{path}: {e}") from None
    try:
        trades, _ = parse_rest_trades(payload, symbol)
    except KrakenError as e:
        raise ConvertError(f"{path}: {e}") from None
    return [_Row(t.symbol, t.ts_us, t.price, t.qty, t.side, t.ord_type, t.trade_id) for t in trades]


def read_input(path: Path, symbol: str | None = None) -> list[_Row]:
    """One input file (CSV or REST page, detected from its first byte) -> rows."""
    try:
        head = path.open("rb").read(64).lstrip()
    except OSError as e:
        raise ConvertError(f"cannot read {path}: {e.strerror or e}") from None
    if head.startswith(b"{"):
        try:
            payload = orjson.loads(path.read_bytes())
        except orjson.JSONDecodeError as e:
            raise ConvertError(f"{path}: not valid JSON: {e}") from None
        return read_rest_page(path, payload, symbol)
    return read_trades_csv(path)


def to_trades(rows: Sequence[_Row], result: ConvertResult) -> list[Trade]:
    """Sort by time (stably) and fill in missing ids and sides (see the module docstring)."""
    order = sorted(range(len(rows)), key=lambda i: rows[i].ts_us)
    per_us: dict[tuple[str, int], int] = {}
    last_price: dict[str, float] = {}
    last_side: dict[str, str] = {}
    out: list[Trade] = []
    for i in order:
        r = rows[i]
        tid = r.trade_id
        if tid is None:
            k = (r.symbol, r.ts_us)
            n = per_us.get(k, 0)
            if n >= _MAX_PER_US:
                raise ConvertError(f"more than {_MAX_PER_US} trades of {r.symbol} without trade_id in one "
                                   f"microsecond ({r.ts_us}): cannot give them stable ids")
            per_us[k] = n + 1
            tid = r.ts_us * _MAX_PER_US + n
            result.synthesised_ids += 1
        side = r.side
        if not side:
            prev = last_price.get(r.symbol)
            if prev is None or r.price > prev:
                side = "buy"
            elif r.price < prev:
                side = "sell"
            else:
                side = last_side.get(r.symbol, "buy")
            result.synthesised_sides += 1
        last_price[r.symbol] = r.price
        last_side[r.symbol] = side
        out.append(Trade(r.symbol, tid, r.ts_us, r.price, r.qty, side, r.ord_type))
    return out


def convert(inputs: Sequence[Path], out: Path, symbol: str | None = None) -> ConvertResult:
    """Convert ``inputs`` (merged in time order) into the replay file ``out``."""
    if symbol is not None and not is_symbol(symbol):
        raise ConvertError(f"--symbol {symbol!r} is not a Kraken v2 symbol like BTC/USD")
    rows: list[_Row] = []
    for path in inputs:
        got = read_input(path, symbol)
        if symbol is not None:
            names = {r.symbol for r in got}
            if len(names) > 1:
                raise ConvertError(f"{path} holds {len(names)} symbols ({', '.join(sorted(names))}); "
                                   "--symbol would merge them: leave it out")
            for r in got:
                r.symbol = symbol
        rows.extend(got)
    result = ConvertResult()
    trades = to_trades(rows, result)
    result.messages = write_trades(out, trades)
    result.trades = len(trades)
    for t in trades:
        result.symbols[t.symbol] = result.symbols.get(t.symbol, 0) + 1
    return result


def cmd_convert(args: argparse.Namespace) -> int:
    try:
        r = convert([Path(p) for p in args.inputs], Path(args.out), args.symbol)
    except ConvertError as e:
        print(f"tickcast convert: {e}", file=sys.stderr)
        return 1
    per = ", ".join(f"{s} {n:,}" for s, n in sorted(r.symbols.items()))
    print(f"wrote {r.trades:,} trades ({per}) in {r.messages:,} messages to {args.out}; synthesised "
          f"{r.synthesised_ids:,} trade ids and {r.synthesised_sides:,} sides", file=sys.stderr)
    return 0


def _convert_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="trade CSV or Kraken REST Trades page (JSON)")
    p.add_argument("--out", required=True, help="replay file to write (JSON Lines of v2 trade messages)")
    p.add_argument("--symbol", help="Kraken v2 symbol for every trade (e.g. BTC/USDT for an XBTUSDT page)")


CONVERT = Command(
    "convert", cmd_convert, _convert_args, help="turn trade CSVs and Kraken REST Trades pages into a replay file",
    description=(__doc__ or "").split("\n\n>>>")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
    epilog="examples:\n  tickcast convert ../shared/data/trades/kraken_BTCUSD_2019-07-01_0000-0100_trades.csv "
    "--out data/btc_2019.jsonl\n  tickcast convert ../shared/data/kraken_rest/trades_XBTUSDT_2025-11-10.json "
    "--out data/xbtusdt.jsonl --symbol BTC/USDT\n  TICKCAST_SOURCE=replay:data/btc_2019.jsonl "
    "python -m bytewax.run dataflows.features")
