"""``tickcast convert``: trade CSVs and Kraken REST pages -> replay files that parse back
to exactly the same trades; synthesised ids and sides; precise errors; and a converted
REST page through the real feature flow equals Kraken's own 1-minute candles."""

from __future__ import annotations

import csv
import json
import math
from datetime import datetime
from pathlib import Path

import orjson
import pytest

from tickcast.cli import main
from tickcast.convert import ConvertError, convert, normalise_symbol
from tickcast.kraken import parse_message, parse_rest_trades
from tickcast.schema import Trade, dt_to_us

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
CSVS = sorted((SHARED / "trades").glob("*.csv")) if (SHARED / "trades").exists() else []
HEADER = "ts_iso,ts_unix,symbol,price,qty,side,ord_type,trade_id,source\n"


def read_replay(path: Path) -> tuple[list[Trade], list[list[Trade]]]:
    trades: list[Trade] = []
    messages: list[list[Trade]] = []
    for line in path.read_bytes().splitlines():
        got, dead = parse_message(line, "test", 0)
        assert dead == [] and got, line[:200]
        assert orjson.loads(line)["type"] == "update"
        trades += got
        messages.append(got)
    return trades, messages


def assert_grouped(messages: list[list[Trade]]) -> None:
    """One message per run of trades with the same symbol and timestamp."""
    for m in messages:
        assert len({(t.symbol, t.ts_us) for t in m}) == 1
    for a, b in zip(messages, messages[1:], strict=False):
        assert (a[-1].symbol, a[-1].ts_us) != (b[0].symbol, b[0].ts_us)


@pytest.mark.skipif(not CSVS, reason="../shared/data/trades is absent")
@pytest.mark.parametrize("src", CSVS, ids=[p.name for p in CSVS])
def test_shared_csv_converts_to_the_same_trades(src: Path, tmp_path: Path) -> None:
    out = tmp_path / "replay.jsonl"
    assert main(["convert", str(src), "--out", str(out)]) == 0
    trades, messages = read_replay(out)
    with src.open() as f:
        rows = list(csv.DictReader(f))
    assert len(trades) == len(rows) > 0
    assert_grouped(messages)
    # rows are in time order in these files, so the replay keeps their order
    for t, r in zip(trades, rows, strict=True):
        assert t.symbol == r["symbol"].replace("-", "/")
        assert t.ts_us == dt_to_us(datetime.fromisoformat(r["ts_iso"].replace("Z", "+00:00")))
        assert t.price == float(r["price"]) and t.qty == float(r["qty"])
        assert t.side == r["side"] and t.ord_type == r["ord_type"]
        if r["trade_id"]:
            assert t.trade_id == int(r["trade_id"])
    # synthesised ids: unique and increasing per symbol, the same in a second conversion
    for sym in {t.symbol for t in trades}:
        ids = [t.trade_id for t in trades if t.symbol == sym]
        assert ids == sorted(ids) and len(set(ids)) == len(ids)
    again = tmp_path / "again.jsonl"
    convert([src], again)
    assert again.read_bytes() == out.read_bytes()


def test_rest_page_converts_to_the_same_trades(tmp_path: Path) -> None:
    page = SHARED / "kraken_rest" / "trades_XBTUSDT_2025-11-10.json"
    if not page.exists():
        pytest.skip(f"{page} is absent")
    out = tmp_path / "rest.jsonl"
    r = convert([page], out)  # BTC/USDT derived from the pair name XBTUSDT
    expected, _ = parse_rest_trades(json.loads(page.read_text()), "BTC/USDT")
    trades, messages = read_replay(out)
    assert trades == expected and r.trades == 1000 and r.symbols == {"BTC/USDT": 1000}
    assert r.synthesised_ids == r.synthesised_sides == 0 and r.messages == len(messages)
    assert_grouped(messages)
    assert convert([page], tmp_path / "x.jsonl", symbol="XBT/USDT").symbols == {"XBT/USDT": 1000}


def write_csv(path: Path, rows: list[str]) -> Path:
    path.write_text(HEADER + "".join(r + "\n" for r in rows))
    return path


def test_missing_ids_and_sides_are_synthesised_stably(tmp_path: Path) -> None:
    rows = [
        "2024-01-01T00:00:02.000000Z,,XBT-USD,100,1,,,,t",      # first trade of the symbol: buy
        "2024-01-01T00:00:01.000000Z,,ETH-USD,10,1,sell,l,,t",  # out of order: sorted first
        "2024-01-01T00:00:03.000000Z,,XBT-USD,99,2,,,,t",       # downtick: sell
        "2024-01-01T00:00:03.000000Z,,XBT-USD,99,3,,,,t",       # same price: previous side; same µs: one message
        ",1704067204.5,XBT-USD,101,1,,m,,t",                    # uptick: buy; time from ts_unix
        "2024-01-01T00:00:05.000000Z,,XBT-USD,101,1,sell,market,,t",  # a given side is kept
    ]
    out = tmp_path / "r.jsonl"
    r = convert([write_csv(tmp_path / "a.csv", rows)], out)
    trades, messages = read_replay(out)
    assert r.synthesised_sides == 4 and r.synthesised_ids == 6
    assert [(t.symbol, t.side, t.ord_type) for t in trades] == [
        ("ETH/USD", "sell", "limit"), ("BTC/USD", "buy", ""), ("BTC/USD", "sell", ""), ("BTC/USD", "sell", ""),
        ("BTC/USD", "buy", "market"), ("BTC/USD", "sell", "market")]
    assert [len(m) for m in messages] == [1, 1, 2, 1, 1]
    base = 1_704_067_200_000_000
    assert [t.trade_id for t in trades] == [
        (base + 1_000_000) * 1000, (base + 2_000_000) * 1000, (base + 3_000_000) * 1000,
        (base + 3_000_000) * 1000 + 1, (base + 4_500_000) * 1000, (base + 5_000_000) * 1000]
    # an overlapping extract gives the same trades the same ids (sides depend on the previous
    # price, which the extract lacks for its first trade)
    out2 = tmp_path / "r2.jsonl"
    convert([write_csv(tmp_path / "b.csv", rows[2:])], out2)
    tail, _ = read_replay(out2)
    assert [t._replace(side="") for t in tail] == [
        t._replace(side="") for t in trades if t.ts_us >= base + 3_000_000]


@pytest.mark.parametrize(("row", "message"), [
    ("2024-01-01T00:00:00Z,,BTC/USD,abc,1,buy,,,t", "a.csv:2: price 'abc' is not a number"),
    ("2024-01-01T00:00:00Z,,BTC/USD,-1,1,buy,,,t", "a.csv:2: price '-1' must be a number > 0"),
    ("2024-01-01T00:00:00Z,,BTC/USD,1,0,buy,,,t", "a.csv:2: qty '0' must be a number > 0"),
    ("2024-01-01T00:00:00Z,,BTC/USD,1,1,up,,,t", 'a.csv:2: side must be "buy", "sell" or empty'),
    ("2024-01-01T00:00:00Z,,BTC/USD,1,1,buy,,x1,t", "a.csv:2: trade_id 'x1' is not an integer"),
    ("yesterday,,BTC/USD,1,1,buy,,,t", "a.csv:2: ts_iso: timestamp 'yesterday' is not RFC 3339"),
    (",,BTC/USD,1,1,buy,,,t", "a.csv:2: needs ts_iso (RFC 3339) or ts_unix (seconds)"),
    ("2024-01-01T00:00:00Z,,bitcoin,1,1,buy,,,t", "a.csv:2: cannot tell the Kraken v2 symbol of 'bitcoin'"),
])
def test_bad_rows_fail_with_file_line_and_reason(tmp_path: Path, row: str, message: str) -> None:
    src = write_csv(tmp_path / "a.csv", [row])
    with pytest.raises(ConvertError) as e:
        convert([src], tmp_path / "o.jsonl")
    assert message in str(e.value)
    assert not (tmp_path / "o.jsonl").exists()


def test_cli_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "x.csv").write_text("a,b\n1,2\n")
    assert main(["convert", str(tmp_path / "x.csv"), "--out", str(tmp_path / "o.jsonl")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("tickcast convert: ") and "not a trades CSV" in err and "\n" not in err
    assert main(["convert", str(tmp_path / "nope.csv"), "--out", str(tmp_path / "o.jsonl")]) == 1
    assert "cannot read" in capsys.readouterr().err
    (tmp_path / "p.json").write_text('{"error": ["EGeneral:Invalid arguments"], "result": {}}')
    assert main(["convert", str(tmp_path / "p.json"), "--out", str(tmp_path / "o.jsonl")]) == 1
    assert "0 pairs" in capsys.readouterr().err
    assert main(["convert", str(tmp_path / "p.json"), "--symbol", "BTC/USD", "--out", str(tmp_path / "o")]) == 1
    assert "Kraken REST error: EGeneral:Invalid arguments" in capsys.readouterr().err
    two = write_csv(tmp_path / "two.csv", ["2024-01-01T00:00:00Z,,BTC/USD,1,1,buy,,1,t",
                                           "2024-01-01T00:00:00Z,,ETH/USD,1,1,buy,,1,t"])
    assert main(["convert", str(two), "--symbol", "BTC/USD", "--out", str(tmp_path / "o")]) == 1
    assert "holds 2 symbols" in capsys.readouterr().err


def test_symbol_names() -> None:
    assert [normalise_symbol(s) for s in ("XBT/USD", "eth-usd", "XXBTZUSD", "XETHZEUR", "XBTUSDT", "SOLUSD",
                                          "XDG/USD", "BTC_USDC")] == [
        "BTC/USD", "ETH/USD", "BTC/USD", "ETH/EUR", "BTC/USDT", "SOL/USD", "DOGE/USD", "BTC/USDC"]
    for bad in ("", "BTC", "USD", "B-"):
        with pytest.raises(ConvertError):
            normalise_symbol(bad)


def test_converted_rest_page_through_the_flow_equals_krakens_candles(tmp_path: Path, redis_db_url: str) -> None:
    """Real data end to end: REST page -> replay -> `python -m bytewax.run dataflows.features`
    with 60-s candles -> the offline store holds Kraken's own 1-minute OHLC."""
    from tests.helpers import flow_env, run_flow
    from tickcast.stores.offline import open_offline

    rest = SHARED / "kraken_rest"
    if not (rest / "ohlc_1m_XBTUSDT_2025-11-10.json").exists():
        pytest.skip(f"{rest} is absent")
    replay = tmp_path / "rest.jsonl"
    convert([rest / "trades_XBTUSDT_2025-11-10.json"], replay)
    lake = tmp_path / "offline"
    r = run_flow(flow_env(replay, lake, redis_db_url, TICKCAST_SYMBOLS="BTC/USDT", TICKCAST_WINDOW_SECONDS="60",
                          TICKCAST_ONLINE_MODEL="off"))
    assert r.returncode == 0, r.stderr[-3000:]
    ohlc = json.loads((rest / "ohlc_1m_XBTUSDT_2025-11-10.json").read_text())["result"]["XBTUSDT"]
    kraken = {int(row[0]) * 1_000_000: row for row in ohlc}
    store = open_offline(f"chdb://{lake}", read_only=True)
    rows = store.query("SELECT toUnixTimestamp64Micro(window_start), open, high, low, close, volume, trades "
                       "FROM candles WHERE symbol = 'BTC/USDT' ORDER BY window_start").result_rows
    store.close()
    complete = rows[1:]  # the first minute is partial
    assert sum(1 for c in complete if c[6]) == 273
    for start, o, h, lo, c, v, n in complete:
        k = kraken[start]
        assert (o, h, lo, c) == tuple(float(x) for x in k[1:5]) and n == int(k[7]), (start, k)
        assert math.isclose(v, float(k[6]), rel_tol=1e-9, abs_tol=1e-12)
