"""Offline and online stores on the real engines: chdb (ClickHouse) and Valkey."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pyarrow as pa
import pytest
import redis

from tickcast.schema import Candle, DeadLetter, FeatureRow
from tickcast.stores.offline import ClickHouseStore, LakeStore, open_offline
from tickcast.stores.online import OnlineStore, StoreUnavailable
from tickcast.stores.tables import (
    TABLES,
    candles_to_arrow,
    dead_letters_to_arrow,
    features_to_arrow,
)

REPO = Path(__file__).resolve().parents[1]


def candles(n: int, close: float = 1.0, symbol: str = "BTC/USD") -> list[Candle]:
    w = 10_000_000
    return [Candle(symbol, i * w, (i + 1) * w, close, close, close, close, 1.0, close, 1, 0.5, 0.5, i, i)
            for i in range(n)]


@pytest.fixture(params=["lake", "server"])
def store(request: pytest.FixtureRequest, tmp_path: Path):  # type: ignore[no-untyped-def]
    """Both backends on the real ClickHouse engine. 'server' is the http(s) backend's
    code (ReplacingMergeTree + FINAL views) driven through clickhouse-connect's chdb
    client, which has the same API as a server connection — in a subprocess-free,
    one-process setting, as chdb allows."""
    if request.param == "lake":
        s = LakeStore(tmp_path / "lake")
    else:
        import clickhouse_connect

        s = ClickHouseStore("http://unused", _client=clickhouse_connect.get_client(dsn=f"chdb://{tmp_path / 'ch'}"))
    s.ensure_schema()
    s.ensure_schema()  # idempotent
    yield s
    s.close()


def test_one_row_per_key_newest_wins(store) -> None:  # type: ignore[no-untyped-def]
    store.insert("candles", candles_to_arrow(candles(50, close=1.0)))
    store.insert("candles", candles_to_arrow(candles(50, close=2.0)))  # same keys, newer version
    store.insert("candles", candles_to_arrow(candles(60, close=3.0)[50:]))
    rows = store.query("SELECT count(), countDistinct(window_start), sum(close) FROM candles").result_rows[0]
    assert rows == (60, 60, 50 * 2.0 + 10 * 3.0)
    t = store.query("SELECT toTypeName(window_start), toTypeName(window_end) FROM candles LIMIT 1").result_rows[0]
    assert t == ("DateTime64(6, 'UTC')", "DateTime64(6, 'UTC')")


def test_empty_tables_and_all_names(store) -> None:  # type: ignore[no-untyped-def]
    for name in TABLES:
        assert store.query(f"SELECT count() FROM {name}").result_rows == [(0,)]


def test_features_and_dead_letters_round_trip(store) -> None:  # type: ignore[no-untyped-def]
    row = FeatureRow("ETH/USD", 10_000_000, 3000.5, {"ret_1": 0.001, "rsi_14": float("nan")}, "fs1-w10s")
    store.insert("features", features_to_arrow([row, row]))
    got = store.query("SELECT symbol, ts, close, ret_1, isNaN(rsi_14), feature_set_version FROM features").result_rows
    assert len(got) == 1 and got[0][0] == "ETH/USD" and got[0][2:] == (3000.5, 0.001, 1, "fs1-w10s")
    d = DeadLetter(5, "replay:x", "{bad", "not valid JSON", "17")
    store.insert("dead_letters", dead_letters_to_arrow([d, d]))  # a replay of the same bad line
    store.insert("dead_letters", dead_letters_to_arrow([DeadLetter(6, "replay:x", "{bad", "not valid JSON", "99")]))
    assert store.query("SELECT count() FROM dead_letters").result_rows == [(2,)]
    assert b"not valid JSON" in store.raw("SELECT reason FROM dead_letters LIMIT 1", "CSV")


WRITER = textwrap.dedent("""
    import sys, time
    from tickcast.stores.offline import LakeStore
    from tickcast.stores.tables import candles_to_arrow
    from tickcast.schema import Candle
    lake, close, n = LakeStore(__import__("pathlib").Path(sys.argv[1])), float(sys.argv[2]), int(sys.argv[3])
    w = 10_000_000
    for i in range(n):
        lake.insert("candles", candles_to_arrow([Candle("BTC/USD", i*w, (i+1)*w, close, close, close, close,
                                                        1.0, close, 1, 0.5, 0.5)]))
""")


def test_readers_in_other_processes_while_writers_write(tmp_path: Path) -> None:
    """The point of the lake: chdb locks a directory to one process, yet here two
    writer processes and a reader process work on one store at the same time."""
    lake = tmp_path / "lake"
    LakeStore(lake).ensure_schema()
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(lake), str(c), "150"], cwd=REPO)
               for c in (1.0, 2.0)]
    reader = textwrap.dedent("""
        import sys, time
        from tickcast.stores.offline import open_offline
        s = open_offline("chdb://" + sys.argv[1], read_only=True)
        seen = 0
        for _ in range(40):
            n = s.query("SELECT count(), countDistinct(window_start) FROM candles").result_rows[0]
            assert n[0] == n[1], n  # one row per key at every moment
            seen = max(seen, n[0])
            time.sleep(0.02)
        print(seen)
    """)
    r = subprocess.run([sys.executable, "-c", reader, str(lake)], cwd=REPO, capture_output=True, text=True,
                       timeout=120)
    for w in writers:
        assert w.wait(120) == 0
    assert r.returncode == 0, r.stderr
    final = LakeStore(lake).query("SELECT count(), countDistinct(window_start) FROM candles").result_rows[0]
    assert final == (150, 150)


def test_compaction_keeps_data_and_readers_never_fail(tmp_path: Path) -> None:
    lake = LakeStore(tmp_path / "lake", max_parts=8)
    lake.ensure_schema()
    errors: list[Exception] = []
    stop = threading.Event()

    def read() -> None:
        r = LakeStore(tmp_path / "lake")
        while not stop.is_set():
            try:
                n = r.query("SELECT count(), countDistinct(window_start) FROM candles").result_rows[0]
                assert n[0] == n[1]
            except Exception as e:  # noqa: BLE001
                errors.append(e)
    t = threading.Thread(target=read)
    t.start()
    try:
        for k in range(60):
            lake.insert("candles", candles_to_arrow(candles(k + 1, close=float(k))))
    finally:
        stop.set()
        t.join()
    assert errors == []
    parts = list((tmp_path / "lake" / "candles").glob("*.parquet"))
    assert len(parts) <= 9
    rows = lake.query("SELECT count(), sum(close) FROM candles").result_rows[0]
    assert rows == (60, 60 * 59.0)  # every candle was last written with close = 59


def test_open_offline_rejects_bad_urls(tmp_path: Path) -> None:
    assert isinstance(open_offline(f"chdb://{tmp_path}"), LakeStore)
    with pytest.raises(Exception, match="absolute"):
        open_offline("chdb://relative/path")
    with pytest.raises(Exception, match="chdb:///abs/path or http"):
        open_offline("mysql://x")
    with pytest.raises(Exception, match="unknown table"):
        LakeStore(tmp_path).insert("nope", pa.table({"a": [1]}))


def test_online_store_cas_ttl_and_reads(redis_db_url: str) -> None:
    s = OnlineStore(redis_db_url, ttl_seconds=100)
    new = FeatureRow("BTC/USD", 2_000, 101.0, {"ret_1": 0.5, "rsi_14": float("nan")}, "fs1-w10s")
    old = FeatureRow("BTC/USD", 1_000, 99.0, {"ret_1": -0.5, "rsi_14": 40.0}, "fs1-w10s")
    s.put_features([new])
    s.put_features([old])  # a replayed older row never overwrites a newer one
    got = s.get_features("BTC/USD")
    assert got is not None and got["ts_us"] == 2_000 and got["close"] == 101.0 and got["ret_1"] == 0.5
    assert got["rsi_14"] != got["rsi_14"] and got["feature_set_version"] == "fs1-w10s"
    assert 0 < redis.Redis.from_url(redis_db_url).ttl("tickcast:features:BTC/USD") <= 100
    s.put_predictions([{"symbol": "BTC/USD", "ts_us": 2_000, "predicted_price": 101.5}])
    assert s.get_prediction("BTC/USD")["predicted_price"] == "101.5"  # type: ignore[index]
    assert s.symbols() == ["BTC/USD"] and s.ping()
    assert s.get_features("ETH/USD") is None


def test_online_store_writes_are_atomic(redis_db_url: str) -> None:
    s = OnlineStore(redis_db_url)
    names = [f"f{i}" for i in range(40)]
    stop = threading.Event()
    torn: list[dict] = []  # type: ignore[type-arg]

    def read() -> None:
        r = OnlineStore(redis_db_url)
        while not stop.is_set():
            h = r.get_features("X/USD")
            if h and len({h[n] for n in names}) != 1:
                torn.append(h)
    t = threading.Thread(target=read)
    t.start()
    for k in range(300):
        s.put_features([FeatureRow("X/USD", k, 1.0, {n: float(k) for n in names}, "v")])
    stop.set()
    t.join()
    assert torn == []


def test_online_store_down_fails_fast() -> None:
    from tests.conftest import free_port

    s = OnlineStore(f"redis://127.0.0.1:{free_port()}", timeout_s=0.3)
    t0 = time.monotonic()
    with pytest.raises(StoreUnavailable):
        s.get_features("BTC/USD")
    assert time.monotonic() - t0 < 2
    assert s.ping() is False


def test_embedded_valkey_start_reuse_stop(tmp_path: Path) -> None:
    from tickcast.embedded import ensure_valkey, stop_valkey

    url = ensure_valkey(tmp_path)
    assert url.startswith("unix://")
    assert ensure_valkey(tmp_path) == url  # reused, not restarted
    assert redis.Redis.from_url(url).ping()
    pid = int((tmp_path / "valkey" / "valkey.pid").read_text())
    stop_valkey(tmp_path)
    with pytest.raises(ProcessLookupError):
        import os

        os.kill(pid, 0)
