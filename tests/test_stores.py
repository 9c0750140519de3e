"""Offline and online stores on the real engines: chdb (the ClickHouse engine) and Valkey.

No mocks. The offline tests run every backend-independent check on both backends:
the embedded Parquet lake, and the server backend (ReplacingMergeTree + FINAL views)
driven through clickhouse-connect's chdb client, which has the same API as a server
connection. The lake's reason to exist — several processes reading and writing one
store although chdb locks a data directory to one process — is tested with real
processes.
"""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import redis

from tests.helpers import free_port
from tickcast.features import FEATURE_NAMES
from tickcast.schema import Candle, DeadLetter, FeatureRow
from tickcast.stores.errors import StoreError, StoreUnavailable
from tickcast.stores.offline import ClickHouseStore, LakeStore, OfflineStore, open_offline
from tickcast.stores.online import OnlineStore, open_online
from tickcast.stores.tables import (
    TABLES,
    TS,
    candles_to_arrow,
    conform,
    dead_letters_to_arrow,
    features_to_arrow,
    rows_to_arrow,
)

REPO = Path(__file__).resolve().parents[1]
W = 10_000_000  # 10-s windows, in µs
T0 = 1_700_000_000_000_000  # 2023-11-14T22:13:20Z


def candles(n: int, close: float = 1.0, symbol: str = "BTC/USD", start: int = 0) -> list[Candle]:
    return [Candle(symbol, T0 + i * W, T0 + (i + 1) * W, close, close, close, close, 1.0, close, 1, 0.5, 0.5, i, i)
            for i in range(start, start + n)]


def run_py(code: str, *args: str, timeout: float = 60) -> str:
    """Run ``code`` in a fresh interpreter (its own chdb engine); returns stdout."""
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args], cwd=REPO, capture_output=True,
                       text=True, timeout=timeout)
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout


# -- both offline backends ------------------------------------------------------------

def server_store() -> ClickHouseStore:
    """The http(s) backend's code on the ClickHouse engine, in a fresh database of this
    process's in-memory chdb engine (a process can open one engine path only, and the
    lake's readers use the in-memory one)."""
    import clickhouse_connect

    db = f"t_{uuid.uuid4().hex[:12]}"
    boot = clickhouse_connect.get_client(dsn="chdb://memory")
    boot.command(f"CREATE DATABASE {db}")
    s = ClickHouseStore("http://unused.invalid", _client=clickhouse_connect.get_client(
        dsn=f"chdb://memory/{db}", tz_mode="aware"))
    boot.close()  # after: the in-memory engine lives while one of its clients is open
    return s


@pytest.fixture(params=["lake", "server"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[OfflineStore]:
    """Each backend-independent test runs on the embedded lake and the server backend."""
    s = LakeStore(tmp_path / "lake", max_parts=16) if request.param == "lake" else server_store()
    s.ensure_schema()
    s.ensure_schema()  # idempotent
    yield s
    s.close()


def test_schema_empty_tables_and_types(store: OfflineStore) -> None:
    """Every name exists, is empty, and has exactly the declared columns and types
    (timestamps DateTime64(6, 'UTC'); no _v)."""
    for name, t in TABLES.items():
        assert store.query(f"SELECT count() FROM {name}").result_rows == [(0,)]
        desc = [(r[0], r[1]) for r in store.query(f"DESCRIBE TABLE {name}").result_rows]
        assert desc == [(c.name, c.ch_type) for c in t.columns], name
    ts_cols = [(t.name, c.name) for t in TABLES.values() for c in t.columns if c.ch_type == TS]
    assert ("candles", "window_start") in ts_cols and TS == "DateTime64(6, 'UTC')"
    feature_cols = [c.name for c in TABLES["features"].columns]
    assert feature_cols[3:-1] == list(FEATURE_NAMES) and feature_cols[-1] == "feature_set_version"


def test_newest_row_of_a_symbol(store: OfflineStore, tmp_path: Path) -> None:
    """newest(): the row with the greatest time of one symbol, newest version, across
    monthly partitions (the lake reads the newest partitions only); same on both backends."""
    month = 31 * 86_400_000_000 // W  # windows per 31 days
    for k in range(4):  # 4 months of BTC, oldest first, 3 windows each
        store.insert("candles", candles_to_arrow(candles(3, close=float(k), start=k * month)))
    store.insert("candles", candles_to_arrow(candles(2, close=7.0, symbol="ETH/USD")))  # ETH: only the oldest month
    newest = 3 * month + 2
    store.insert("candles", candles_to_arrow(candles(1, close=9.0, start=newest)))  # a newer version of it
    row = store.newest("candles", "BTC/USD")
    assert row is not None and (row["close"], row["trades"]) == (9.0, 1)
    assert row["window_start"] == datetime.fromtimestamp((T0 + newest * W) / 1e6, tz=UTC)
    eth = store.newest("candles", "ETH/USD")
    assert eth is not None and eth["close"] == 7.0 and eth["window_start"] == datetime.fromtimestamp((T0 + W) / 1e6, UTC)
    assert store.newest("candles", "SOL/USD") is None and store.newest("features", "BTC/USD") is None
    want = store.query("SELECT * FROM candles WHERE symbol = 'BTC/USD' ORDER BY window_start DESC LIMIT 1")
    assert [row[c] for c in want.column_names] == list(want.result_rows[0])
    with pytest.raises(StoreError, match="no symbol column"):
        store.newest("dead_letters", "BTC/USD")
    if isinstance(store, LakeStore):  # one partition (UTC month) per part name
        months = {p.name[:8] for p in (store.root / "candles").glob("*.parquet")}
        assert len(months) >= 4 and all(m.startswith("p") and m[1:7].isdigit() for m in months), months


def test_retention_drops_old_rows_and_keeps_recent_ones(store: OfflineStore) -> None:
    """Per-table retention on both backends (a TTL on the server; expired partitions
    dropped and the straddling one rewritten in the lake): old rows leave, recent ones
    stay, and tables kept forever lose nothing."""
    from tickcast.stores.retention import retention_days

    store.retention = retention_days({"TICKCAST_RETENTION_DAYS_DEAD_LETTERS": "30"})  # type: ignore[attr-defined]
    assert store.retention["candles"] == 0 and store.retention["dead_letters"] == 30  # type: ignore[attr-defined]
    store.ensure_schema()  # the server backend puts the TTL on its table here
    day = 86_400_000_000
    now = time.time_ns() // 1000
    ages = [400, 100, 45, 31, 29, 10, 0]  # days since written (rows written back then: their _v)

    def written(t: pa.Table, age_days: int) -> pa.Table:
        return t.set_column(t.schema.get_field_index("_v"), "_v",
                            pa.array([(now - age_days * day) * 1000] * t.num_rows, pa.int64()))

    for a in ages:  # one insert per age, as writes over time would be (event times all recent)
        store.insert("dead_letters", written(dead_letters_to_arrow(
            [DeadLetter(now - a * day, "test", f"raw {a}", "bad", str(a))]), a))
        store.insert("candles", written(candles_to_arrow([Candle(
            "BTC/USD", T0 + a * W, T0 + (a + 1) * W, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1, 0.5, 0.5)]), a))
    mixed = dead_letters_to_arrow([DeadLetter(now, "test", f"mixed {a}", "bad", str(100 + a)) for a in (40, 5)])
    store.insert("dead_letters", mixed.set_column(mixed.schema.get_field_index("_v"), "_v", pa.array(
        [(now - 40 * day) * 1000, (now - 5 * day) * 1000], pa.int64())))  # one part, one expired row
    store.expire(now_us=now + 60_000_000)
    kept = [int(p) for (p,) in store.query("SELECT position FROM dead_letters ORDER BY received_at").result_rows]
    assert sorted(kept) == [0, 10, 29, 105]
    assert store.query("SELECT count() FROM candles").result_rows == [(len(ages),)]
    if isinstance(store, LakeStore):
        store.close()  # deletions deferred while a query held the lake
        assert len(list((store.root / "dead_letters").glob("*.parquet"))) == 4  # expired parts gone, not hidden
    with pytest.raises(StoreError, match="TICKCAST_RETENTION_DAYS_DEAD_LETTERS"):
        retention_days({"TICKCAST_RETENTION_DAYS_DEAD_LETTERS": "-1"})
    with pytest.raises(StoreError, match="unknown table"):
        retention_days({"TICKCAST_RETENTION_DAYS_CANDLE": "3"})


def test_one_row_per_key_newest_wins(store: OfflineStore) -> None:
    store.insert("candles", candles_to_arrow(candles(50, close=1.0)))
    store.insert("candles", candles_to_arrow(candles(50, close=2.0)))  # same keys, newer version
    store.insert("candles", candles_to_arrow(candles(10, close=3.0, start=50)))
    rows = store.query("SELECT count(), countDistinct(window_start), sum(close) FROM candles").result_rows[0]
    assert rows == (60, 60, 50 * 2.0 + 10 * 3.0)
    # a filter on a non-key column sees only the newest version, never an older one
    assert store.query("SELECT count() FROM candles WHERE close = 1").result_rows == [(0,)]
    first = store.query("SELECT window_start, window_end FROM candles ORDER BY window_start LIMIT 1").result_rows[0]
    assert first == (datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC), datetime(2023, 11, 14, 22, 13, 30, tzinfo=UTC))
    assert store.query("SELECT toTypeName(window_start) FROM candles LIMIT 1").result_rows == [(TS,)]


def test_features_and_dead_letters_round_trip(store: OfflineStore) -> None:
    row = FeatureRow("ETH/USD", T0, 3000.5, {"ret_1": 0.001, "rsi_14": float("nan")}, "fs1-w10s")
    store.insert("features", features_to_arrow([row, row]))
    got = store.query("SELECT symbol, toUnixTimestamp64Micro(ts), close, ret_1, rsi_14, ema_12, "
                      "feature_set_version FROM features").result_rows
    assert len(got) == 1
    sym, ts, close, ret_1, rsi, ema, version = got[0]
    assert (sym, ts, close, ret_1, version) == ("ETH/USD", T0, 3000.5, 0.001, "fs1-w10s")
    assert math.isnan(rsi) and math.isnan(ema)  # NaN stays NaN; a missing feature is NaN
    d = DeadLetter(5, "replay:x", "{bad", "not valid JSON", "17")
    store.insert("dead_letters", dead_letters_to_arrow([d]))
    store.insert("dead_letters", dead_letters_to_arrow([d]))  # a replay of the same bad line
    store.insert("dead_letters", dead_letters_to_arrow([DeadLetter(6, "replay:x", "{bad", "not valid JSON", "99")]))
    assert store.query("SELECT count() FROM dead_letters").result_rows == [(2,)]
    assert store.query("SELECT raw, reason FROM dead_letters WHERE position = '17'").result_rows == [
        ("{bad", "not valid JSON")]


def _one_row(table: str, bump: float) -> dict[str, Any]:
    """A row for any table: key columns fixed, every other column derived from ``bump``."""
    row: dict[str, Any] = {}
    for c in TABLES[table].columns:
        if c.name in TABLES[table].key:
            row[c.name] = T0 if c.ch_type == TS else (60 if c.ch_type == "UInt32" else f"k-{c.name}")
        elif c.ch_type == TS:
            row[c.name + "_us"] = T0 + int(bump)
        elif c.ch_type == "Float64":
            row[c.name] = bump
        elif c.ch_type == "String":
            row[c.name] = f"v{bump}"
        else:
            row[c.name] = int(bump)
    return row


def test_every_table_takes_generic_rows(store: OfflineStore) -> None:
    for table in TABLES:
        store.insert(table, rows_to_arrow(table, [_one_row(table, 1.0)]))
        store.insert(table, rows_to_arrow(table, [_one_row(table, 2.0)]))
        t = store.query_arrow(f"SELECT * FROM {table}")
        assert t.num_rows == 1, table
        floats = [c.name for c in TABLES[table].columns if c.ch_type == "Float64" and c.name not in TABLES[table].key]
        for f in floats:
            assert t.column(f).to_pylist() == [2.0], (table, f)
    # missing non-key values get defaults; missing keys are an error that names the column
    store.insert("model_metrics", rows_to_arrow("model_metrics", [
        {"symbol": "X/USD", "ts_us": T0, "model_name": "m", "horizon_seconds": 60, "n": 3}]))
    mae, n = store.query("SELECT mae, n FROM model_metrics WHERE symbol = 'X/USD'").result_rows[0]
    assert math.isnan(mae) and n == 3
    with pytest.raises(StoreError, match="model_name"):
        rows_to_arrow("model_metrics", [{"symbol": "X/USD", "ts_us": T0, "horizon_seconds": 60}])


def test_output_formats(store: OfflineStore) -> None:
    store.insert("candles", candles_to_arrow(candles(2, close=1.5)))
    sql = "SELECT symbol, close FROM candles ORDER BY window_start"
    assert store.raw(sql, "CSV") == b'"BTC/USD",1.5\n"BTC/USD",1.5\n'
    assert store.raw(sql, "TSV") == b"BTC/USD\t1.5\nBTC/USD\t1.5\n"
    lines = store.raw(sql, "JSONEachRow").decode().splitlines()
    assert [json.loads(x) for x in lines] == [{"symbol": "BTC/USD", "close": 1.5}] * 2
    assert b"BTC/USD" in store.raw(sql, "Pretty")
    t = store.query_arrow("SELECT symbol, window_start FROM candles")
    assert t.schema.field("symbol").type == pa.string() and t.num_rows == 2
    df = store.query_df("SELECT symbol, close FROM candles WHERE close > {c:Float64}", parameters={"c": 1.0})
    assert list(df["close"]) == [1.5, 1.5]
    r = store.query("SELECT count() AS n FROM candles WHERE symbol = {s:String}", parameters={"s": "BTC/USD"})
    assert r.column_names == ("n",) and r.result_rows == [(2,)]


def test_inserts_are_validated(store: OfflineStore) -> None:
    with pytest.raises(StoreError, match="unknown table 'nope'"):
        store.insert("nope", pa.table({"a": [1]}))
    with pytest.raises(StoreError, match="unknown column.*colour"):
        store.insert("candles", candles_to_arrow(candles(1)).append_column("colour", pa.array(["red"])))
    with pytest.raises(StoreError, match="'window_start'"):
        store.insert("candles", candles_to_arrow(candles(1)).drop_columns(["window_start"]))
    # plain int µs for times and no _v: conformed (the version is added)
    store.insert("drift_events", pa.table({"symbol": ["A/B"], "ts": [T0], "model_version": ["m"],
                                           "detector": ["d"]}))
    assert store.query("SELECT detail, toUnixTimestamp64Micro(ts) FROM drift_events").result_rows == [("", T0)]


def test_inserts_from_many_threads(store: OfflineStore) -> None:
    """Bytewax workers insert from several threads; the newest version of every key wins."""
    written: dict[int, tuple[int, float]] = {}  # window index -> (version, close) of the newest write
    lock = threading.Lock()

    def work(w: int) -> None:
        for b in range(12):
            close = w * 100.0 + b
            t = candles_to_arrow(candles(5, close=close, start=(w + b) % 10))
            store.insert("candles", t)
            v = t.column("_v")[0].as_py()
            with lock:
                for i in range((w + b) % 10, (w + b) % 10 + 5):
                    if i not in written or written[i][0] < v:
                        written[i] = (v, close)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    got = store.query("SELECT toUnixTimestamp64Micro(window_start), close FROM candles").result_rows
    assert {(ws - T0) // W: close for ws, close in got} == {i: c for i, (_, c) in written.items()}


# -- the lake: several processes, compaction --------------------------------------------

WRITER = """
    import sys
    from pathlib import Path
    from tickcast.schema import Candle
    from tickcast.stores.offline import LakeStore
    from tickcast.stores.tables import candles_to_arrow
    lake = LakeStore(Path(sys.argv[1]), max_parts=int(sys.argv[4]))
    close, n, T0, W = float(sys.argv[2]), int(sys.argv[3]), 1_700_000_000_000_000, 10_000_000
    for i in range(n):
        c = Candle("BTC/USD", T0 + i * W, T0 + (i + 1) * W, close, close, close, close, 1.0, close, 1, 0.5, 0.5)
        lake.insert("candles", candles_to_arrow([c]))
    assert "chdb" not in sys.modules, "writers must not need chdb"
"""

READER = """
    import sys, time
    from tickcast.stores.offline import open_offline
    s = open_offline("chdb://" + sys.argv[1], read_only=True)
    best = 0
    for _ in range(int(sys.argv[2])):
        n, distinct = s.query("SELECT count(), countDistinct(window_start) FROM candles").result_rows[0]
        assert n == distinct, (n, distinct)  # one row per key at every moment
        best = max(best, n)
        time.sleep(0.01)
    print(best, s.read_retries)
"""


def test_processes_write_and_read_one_lake_at_once(lake_dir: Path) -> None:
    """The point of the lake: chdb locks a data directory to one process, yet two
    writer processes (compacting as they go) and a reader process use one store at
    the same time, with this process reading too."""
    LakeStore(lake_dir).ensure_schema()
    procs = [subprocess.Popen([sys.executable, "-c", textwrap.dedent(WRITER), str(lake_dir), str(c), "80", "8"],
                              cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for c in (1.0, 2.0)]
    procs.append(subprocess.Popen([sys.executable, "-c", textwrap.dedent(READER), str(lake_dir), "40"], cwd=REPO,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    mine = LakeStore(lake_dir, read_only=True)
    try:
        while any(p.poll() is None for p in procs):
            n, distinct = mine.query("SELECT count(), countDistinct(window_start) FROM candles").result_rows[0]
            assert n == distinct
            time.sleep(0.01)
        outs = [p.communicate(timeout=60) for p in procs]
        assert [p.returncode for p in procs] == [0, 0, 0], [err[-3000:] for _, err in outs]
        best, retries = map(int, outs[2][0].split())
        assert best > 0 and retries == 0 and mine.read_retries == 0  # no part vanished under a query
        n, distinct, bad = mine.query("SELECT count(), countDistinct(window_start), countIf(close NOT IN (1, 2)) "
                                      "FROM candles").result_rows[0]
        assert (n, distinct, bad) == (80, 80, 0)
        assert mine.part_count("candles") <= 12  # compacted (a compaction may be skipped while another runs)
    finally:
        mine.close()
        for p in procs:
            if p.poll() is None:
                p.kill()


def test_a_later_process_overwrites_an_earlier_one(lake_dir: Path) -> None:
    run_py(WRITER, str(lake_dir), "1.0", "20", "64")
    run_py(WRITER, str(lake_dir), "2.0", "10", "64")  # a replay of the first 10 windows, later
    with LakeStore(lake_dir) as s:
        got = s.query("SELECT close, count() FROM candles GROUP BY close ORDER BY close").result_rows
    assert got == [(1.0, 10), (2.0, 10)]


def test_compaction_keeps_data_dedups_and_readers_never_fail(lake_dir: Path) -> None:
    lake = LakeStore(lake_dir, max_parts=6)
    lake.ensure_schema()
    (lake_dir / "candles" / ".tmp-crashed.parquet.partial").write_bytes(b"half a part")  # a writer died
    errors: list[Exception] = []
    stop = threading.Event()
    reader = LakeStore(lake_dir, read_only=True)

    def read() -> None:
        while not stop.is_set():
            try:
                n, distinct = reader.query("SELECT count(), countDistinct(window_start) FROM candles").result_rows[0]
                assert n == distinct
            except Exception as e:  # noqa: BLE001 - collected and asserted below
                errors.append(e)

    t = threading.Thread(target=read)
    t.start()
    try:
        for k in range(40):
            lake.insert("candles", candles_to_arrow(candles(k + 1, close=float(k))))
    finally:
        stop.set()
        t.join()
        reader.close()
    assert errors == [] and reader.read_retries == 0
    lake.close()  # waits for deletions deferred while the reader was reading
    assert lake.part_count("candles") <= 7
    assert lake.query("SELECT count(), sum(close) FROM candles").result_rows[0] == (40, 40 * 39.0)
    # a full compaction leaves one part with one physical row per key
    os.utime(lake_dir / "candles" / ".tmp-crashed.parquet.partial", (0, 0))  # now an hour+ old
    lake.compact("candles")
    parts = list((lake_dir / "candles").glob("*.parquet"))
    assert len(parts) == 1 and pq.read_table(parts[0]).num_rows == 40
    assert not list((lake_dir / "candles").glob(".tmp-*"))  # the stale temp file is gone
    assert lake.query("SELECT count(), sum(close) FROM candles").result_rows[0] == (40, 40 * 39.0)
    lake.close()


def test_compaction_never_deletes_a_part_under_a_running_query(lake_dir: Path) -> None:
    """While a query holds the lake, the parts a compaction replaced stay on disk
    (duplicates the view drops); they go once the query is done."""
    lake = LakeStore(lake_dir, max_parts=4)
    lake.ensure_schema()
    for k in range(4):
        lake.insert("candles", candles_to_arrow(candles(3, close=float(k))))
    before = set((lake_dir / "candles").glob("*.parquet"))
    with lake._reading():  # a long query of another reader is running
        lake.insert("candles", candles_to_arrow(candles(3, close=9.0)))  # 5 parts > 4: compacts
        after = set((lake_dir / "candles").glob("*.parquet"))
        assert before <= after and len(after) == 6  # merged part added, nothing deleted yet
    lake.close()  # waits for the deferred deletion
    assert len(list((lake_dir / "candles").glob("*.parquet"))) == 1
    assert lake.query("SELECT count(), sum(close) FROM candles").result_rows[0] == (3, 27.0)
    lake.close()


def test_lake_reads_parts_written_before_a_column_existed(lake_dir: Path) -> None:
    lake = LakeStore(lake_dir)
    old = features_to_arrow([FeatureRow("A/B", T0, 1.0, {n: 1.0 for n in FEATURE_NAMES}, "v")]).drop_columns(["ofi_30"])
    (lake_dir / "features").mkdir(parents=True)
    pq.write_table(old, lake_dir / "features" / "0-old.parquet")
    lake.insert("features", features_to_arrow([FeatureRow("A/B", T0 + W, 2.0, {"ofi_30": 5.0}, "v")]))
    got = lake.query("SELECT close, ofi_30 FROM features ORDER BY ts").result_rows
    assert math.isnan(got[0][1]) and got[1] == (2.0, 5.0)
    assert lake.compact("features") == 2
    got2 = lake.query("SELECT close, ofi_30 FROM features ORDER BY ts").result_rows
    assert math.isnan(got2[0][1]) and got2[1] == (2.0, 5.0)
    lake.close()


def test_read_only_lake_on_a_missing_directory(tmp_path: Path) -> None:
    with open_offline(f"chdb://{tmp_path}/nothing-here", read_only=True) as s:
        s.ensure_schema()
        assert s.query("SELECT count() FROM candles").result_rows == [(0,)]
    assert not (tmp_path / "nothing-here").exists()


# -- the server backend: on disk, across processes, schema evolution, outage --------------

SERVER = """
    import sys
    import clickhouse_connect
    from tickcast.stores.offline import ClickHouseStore
    from tickcast.stores.tables import rows_to_arrow
    s = ClickHouseStore("http://unused.invalid", _client=clickhouse_connect.get_client(dsn="chdb://" + sys.argv[1]))
    s.ensure_schema()
    close = float(sys.argv[2])
    s.insert("candles", rows_to_arrow("candles", [
        {"symbol": "BTC/USD", "window_start_us": i * 10_000_000, "window_end_us": (i + 1) * 10_000_000,
         "close": close} for i in range(int(sys.argv[3]))]))
    print(s.query("SELECT close, count() FROM candles GROUP BY close ORDER BY close").result_rows)
    s.close()
"""


def test_server_backend_on_disk_across_restarts(tmp_path: Path) -> None:
    """ReplacingMergeTree tables and FINAL views on a real on-disk ClickHouse engine
    (chdb:///path), written by one process, then restarted and replayed by another."""
    run_py(SERVER, str(tmp_path / "ch"), "1.0", "20")
    out = run_py(SERVER, str(tmp_path / "ch"), "2.0", "5")
    assert out.strip() == "[(1.0, 15), (2.0, 5)]"


def test_server_backend_adds_missing_columns() -> None:
    store = server_store()
    store.ensure_schema()
    store._run(lambda c: c.command("DROP VIEW candles"))
    store._run(lambda c: c.command("ALTER TABLE candles_data DROP COLUMN vwap"))
    store._run(lambda c: c.command("CREATE VIEW candles AS SELECT * EXCEPT _v FROM candles_data FINAL"))
    store._run(lambda c: c.command(
        "INSERT INTO candles_data (symbol, window_start, window_end, close, _v) VALUES ('A/B', 0, 10, 1.5, 1)"))
    store.ensure_schema()
    assert [r[0] for r in store.query("DESCRIBE TABLE candles").result_rows] == list(TABLES["candles"].names)
    close, vwap = store.query("SELECT close, vwap FROM candles").result_rows[0]
    assert close == 1.5 and math.isnan(vwap)
    store.close()


def test_unreachable_server_is_store_unavailable() -> None:
    t0 = time.monotonic()
    with pytest.raises(StoreUnavailable, match="unavailable"):
        open_offline(f"http://default:secret@127.0.0.1:{free_port()}/db")
    assert time.monotonic() - t0 < 3


def test_open_offline_urls(tmp_path: Path) -> None:
    assert isinstance(open_offline(f"chdb://{tmp_path}"), LakeStore)
    with pytest.raises(StoreError, match="absolute"):
        open_offline("chdb://relative/path")
    with pytest.raises(StoreError, match=r"chdb:///abs/path or http"):
        open_offline("mysql://x")


def test_conform_reorders_and_casts() -> None:
    t = candles_to_arrow(candles(1))
    shuffled = t.select(list(reversed(t.column_names)))
    assert conform("candles", shuffled).equals(t)
    with pytest.raises(StoreError, match="trades"):
        conform("candles", t.set_column(9, "trades", pa.array(["many"])))


# -- the online store ---------------------------------------------------------------------

def test_online_cas_ttl_and_reads(redis_db_url: str) -> None:
    s = OnlineStore(redis_db_url, ttl_seconds=100)
    new = FeatureRow("BTC/USD", 2_000, 101.0, {"ret_1": 0.5, "rsi_14": float("nan")}, "fs1-w10s")
    old = FeatureRow("BTC/USD", 1_000, 99.0, {"ret_1": -0.5, "rsi_14": 40.0, "gone": 1.0}, "fs1-w10s")
    assert s.put_features([new]) == 1
    assert s.put_features([old]) == 0  # a replayed older row never overwrites a newer one
    got = s.get_features("BTC/USD")
    assert got is not None and got["ts_us"] == 2_000 and got["close"] == 101.0 and got["ret_1"] == 0.5
    assert math.isnan(got["rsi_14"]) and got["feature_set_version"] == "fs1-w10s" and "gone" not in got
    with redis.Redis.from_url(redis_db_url) as r:
        assert 0 < r.ttl("tickcast:features:BTC/USD") <= 100
        # one batch with several rows of a symbol: the newest is stored
        s.put_features([FeatureRow("ETH/USD", 7, 3.0), FeatureRow("ETH/USD", 9, 4.0), FeatureRow("ETH/USD", 8, 5.0)])
        assert s.get_features("ETH/USD") == {"ts_us": 9, "close": 4.0, "feature_set_version": ""}
        assert s.put_prediction("BTC/USD", {"ts_us": 2_000, "predicted_price": 101.5, "model_name": "m"})
        assert not s.put_prediction("BTC/USD", {"ts_us": 1_000, "predicted_price": 1.0})
        assert s.get_prediction("BTC/USD") == {"ts_us": "2000", "predicted_price": "101.5", "model_name": "m",
                                               "symbol": "BTC/USD"}
        assert 0 < r.ttl("tickcast:prediction:BTC/USD") <= 100
    assert s.symbols() == ["BTC/USD", "ETH/USD"] and s.ping()
    assert s.get_features("SOL/USD") is None and s.get_prediction("SOL/USD") is None
    s.close()


def test_online_writes_are_atomic(redis_db_url: str) -> None:
    """A reader never sees half a row: every field of a row is from the same write."""
    s = OnlineStore(redis_db_url)
    names = [f"f{i}" for i in range(40)]
    stop = threading.Event()
    torn: list[dict[str, Any]] = []
    reads = [0]

    def read() -> None:
        r = OnlineStore(redis_db_url)
        while not stop.is_set():
            h = r.get_features("X/USD")
            reads[0] += 1
            if h and len({h[n] for n in names} | {float(h["ts_us"])}) != 1:
                torn.append(h)
        r.close()

    t = threading.Thread(target=read)
    t.start()
    for k in range(300):
        s.put_features([FeatureRow("X/USD", k, 1.0, {n: float(k) for n in names}, "v")])
    stop.set()
    t.join()
    assert torn == [] and reads[0] > 10
    s.close()


def test_online_store_down_fails_fast() -> None:
    refused = OnlineStore(f"redis://127.0.0.1:{free_port()}")
    t0 = time.monotonic()
    with pytest.raises(StoreUnavailable, match="unavailable"):
        refused.get_features("BTC/USD")
    assert refused.ping() is False and time.monotonic() - t0 < 1.5
    # a server that accepts connections but never answers: bounded by the read timeout
    with socket.socket() as mute:
        mute.bind(("127.0.0.1", 0))
        mute.listen(8)
        silent = OnlineStore(f"redis://127.0.0.1:{mute.getsockname()[1]}")
        t0 = time.monotonic()
        with pytest.raises(StoreUnavailable):
            silent.put_features([FeatureRow("BTC/USD", 1, 1.0)])
        assert time.monotonic() - t0 < 1.5


# -- the embedded Valkey ------------------------------------------------------------------

ENSURE = """
    import sys
    from pathlib import Path
    from tickcast.embedded import ensure_valkey
    print(ensure_valkey(Path(sys.argv[1])))
"""


def test_embedded_valkey_start_reuse_stop(tmp_path: Path) -> None:
    from tickcast.config import Settings
    from tickcast.embedded import _is_valkey, ensure_valkey, stop_valkey

    procs = [subprocess.Popen([sys.executable, "-c", textwrap.dedent(ENSURE), str(tmp_path)], cwd=REPO,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(3)]
    try:
        urls = {p.communicate(timeout=30)[0].strip() for p in procs}  # concurrent callers: one server
        assert all(p.returncode == 0 for p in procs)
        url = ensure_valkey(tmp_path)
        assert urls == {url} and url == f"unix://{(tmp_path / 'valkey' / 'valkey.sock').resolve()}"
        pid = int((tmp_path / "valkey" / "valkey.pid").read_text())
        online = open_online(Settings(data_dir=tmp_path, online_ttl_seconds=5))  # no URL: the embedded one
        assert online.ping() and online.url == url
        online.close()
        with redis.Redis.from_url(url) as r:
            assert r.config_get("port") == {"port": "0"} and r.config_get("save") == {"save": "86400 1"}  # saved at shutdown only
        os.kill(pid, signal.SIGKILL)  # a crashed server is replaced
        url2 = ensure_valkey(tmp_path)
        pid2 = int((tmp_path / "valkey" / "valkey.pid").read_text())
        assert url2 == url and pid2 != pid and redis.Redis.from_url(url2).ping()
        assert stop_valkey(tmp_path) is True
        assert not (tmp_path / "valkey" / "valkey.sock").exists() and not _is_valkey(pid2)
        assert stop_valkey(tmp_path) is False
    finally:
        stop_valkey(tmp_path)


def test_embedded_valkey_long_path_uses_loopback_tcp(tmp_path: Path) -> None:
    from tickcast.embedded import ensure_valkey, stop_valkey

    deep = tmp_path / ("d" * 60) / ("e" * 60)
    try:
        url = ensure_valkey(deep)
        assert url.startswith("redis://127.0.0.1:") and redis.Redis.from_url(url).ping()
        assert (deep / "valkey" / "url").read_text() == url
    finally:
        stop_valkey(deep)
