"""Configuration errors and the command line, as a user meets them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tickcast.config import ConfigError, Settings

REPO = Path(__file__).resolve().parents[1]
TICKCAST = [sys.executable, "-m", "tickcast.cli"]


@pytest.mark.parametrize(("var", "value", "accepted"), [
    ("SOURCE", "carrier-pigeon", "kraken, kafka, sim or replay:<path"),
    ("SYMBOLS", "XBT-USD", "Kraken v2 symbols"),
    ("WINDOW_SECONDS", "0", "whole number of seconds >= 1"),
    ("HORIZON_SECONDS", "65", "multiple of TICKCAST_WINDOW_SECONDS=10"),
    ("CLICKHOUSE_URL", "chdb://relative", "chdb:///absolute/path"),
    ("REDIS_URL", "localhost:6379", "redis://host:port"),
    ("MODEL_STORE", "gs://bucket", "file:///absolute/path or s3://"),
    ("KAFKA_BROKERS", "localhost", "host:port"),
    ("MAX_FEATURE_AGE_SECONDS", "-1", "number >= 0"),
    ("ALLOWED_LATENESS_SECONDS", "nan", "number >= 0"),
    ("API_PORT", "70000", "TCP port"),
    ("ONLINE_MODEL", "deep", "linear, sgd, arf, knn or off"),
])
def test_bad_values_name_variable_value_and_accepted(var: str, value: str, accepted: str) -> None:
    with pytest.raises(ConfigError) as e:
        Settings.from_env({f"TICKCAST_{var}": value})
    msg = str(e.value)
    assert "\n" not in msg and f"TICKCAST_{var}={value!r}" in msg and accepted in msg


def test_defaults_are_the_embedded_ones(tmp_path: Path) -> None:
    s = Settings.from_env({"TICKCAST_DATA_DIR": str(tmp_path)})
    assert s.source == "kraken" and s.symbols == ("BTC/USD", "ETH/USD") and s.horizon_seconds == 60
    assert s.offline_url == f"chdb://{tmp_path.resolve()}/offline"
    assert s.model_store_url == f"file://{tmp_path.resolve()}/models"
    assert s.redis_url == ""  # -> embedded Valkey


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TICKCAST_")}
    env.update(extra)
    return env


def test_flow_with_bad_config_fails_with_one_line() -> None:
    r = subprocess.run([sys.executable, "-m", "bytewax.run", "dataflows.features"], cwd=REPO,
                       env=clean_env(TICKCAST_WINDOW_SECONDS="-5"), capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        "tickcast: TICKCAST_WINDOW_SECONDS='-5' is not valid: expected a whole number of seconds >= 1"]


def test_sim_then_flow_then_sql(tmp_path: Path, redis_db_url: str) -> None:
    replay = tmp_path / "s.jsonl"
    r = subprocess.run([*TICKCAST, "sim", "--trades", "3000", "--out", str(replay), "--rate", "5"],
                       cwd=REPO, env=clean_env(), capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "wrote 3000 trades" in r.stderr
    env = clean_env(TICKCAST_SOURCE=f"replay:{replay}", TICKCAST_DATA_DIR=str(tmp_path),
                    TICKCAST_REDIS_URL=redis_db_url)
    r = subprocess.run([sys.executable, "-m", "bytewax.run", "dataflows.features"], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([*TICKCAST, "sql", "SELECT sum(trades) AS n FROM candles", "--format", "CSV"],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "3000"
    r = subprocess.run([*TICKCAST, "sql", "SELECT symbol, count() AS n FROM features GROUP BY symbol "
                        "ORDER BY symbol", "--format", "JSONEachRow"], cwd=REPO, env=env, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.count("\n") == 2 and '"symbol":"BTC/USD"' in r.stdout
    r = subprocess.run([*TICKCAST, "sql", "SELECT nonsense FROM nowhere"], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "Traceback" not in r.stderr and "tickcast sql:" in r.stderr


def test_help_lists_commands() -> None:
    r = subprocess.run([*TICKCAST, "--help"], cwd=REPO, capture_output=True, text=True, timeout=30)
    for cmd in ("up", "sql", "sim", "train", "load-candles"):
        assert cmd in r.stdout


def test_sql_is_read_only_unless_write(tmp_path: Path) -> None:
    """`tickcast sql` runs with ClickHouse's readonly = 1: no writes, no schema changes, no
    table functions (a local file cannot be read or written); --write allows them."""
    from tickcast.schema import Candle
    from tickcast.stores.offline import LakeStore
    from tickcast.stores.tables import candles_to_arrow

    lake = tmp_path / "offline"
    store = LakeStore(lake)
    store.ensure_schema()
    store.insert("candles", candles_to_arrow([Candle("BTC/USD", 0, 10_000_000, 1.0, 2.0, 0.5, 1.5, 3.0, 1.2, 4,
                                                     2.0, 1.0)]))
    store.close()
    before = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    secret = tmp_path / "secret.txt"
    secret.write_text("s3cr3t\n")
    out = tmp_path / "written.csv"
    env = clean_env(TICKCAST_DATA_DIR=str(tmp_path))

    def sql(query: str, *extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*TICKCAST, "sql", query, "--format", "CSV", *extra], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=60)

    r = sql("SELECT symbol, trades FROM candles")
    assert r.returncode == 0 and r.stdout.strip() == '"BTC/USD",4', r.stderr
    refused = {
        "read a file": f"SELECT * FROM file('{secret}', 'LineAsString')",
        "write a file": f"INSERT INTO FUNCTION file('{out}', 'CSV', 'a String') SELECT 'x'",
        "url": "SELECT * FROM url('http://127.0.0.1:9/x', 'CSV', 'a String')",
        "create": "CREATE TABLE t (a Int64) ENGINE = Memory",
        "drop": "DROP VIEW candles",
        "setting": "SELECT 1 SETTINGS readonly = 0",
    }
    for what, query in refused.items():
        r = sql(query)
        assert r.returncode == 1 and "read-only" in r.stderr and "--write" in r.stderr, (what, r.stderr)
        assert "s3cr3t" not in r.stdout + r.stderr and "Traceback" not in r.stderr, what
    assert not out.exists()
    after = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p != secret)
    assert after == before  # nothing created or removed by a read
    assert sql("SELECT count() FROM candles").stdout.strip() == "1"  # the view survived
    # with --write the same file functions work (the user asked for it)
    r = sql(f"SELECT * FROM file('{secret}', 'LineAsString')", "--write")
    assert r.returncode == 0 and r.stdout.strip() == '"s3cr3t"', r.stderr
    r = sql(f"INSERT INTO FUNCTION file('{out}', 'CSV', 'a String') SELECT 'x'", "--write")
    assert r.returncode == 0 and out.read_text().strip() == '"x"', r.stderr


def test_server_backend_read_only_query() -> None:
    """The ClickHouse-server backend sends readonly = 1 with the query (tested on the
    ClickHouse engine through clickhouse-connect's chdb client, as tests/test_stores.py
    does): writes, schema changes and table functions are refused by the engine."""
    import uuid

    import clickhouse_connect

    from tickcast.stores.offline import ClickHouseStore

    db = f"t_{uuid.uuid4().hex[:12]}"
    boot = clickhouse_connect.get_client(dsn="chdb://memory")
    boot.command(f"CREATE DATABASE {db}")
    writer = ClickHouseStore("http://u:pw@unused.invalid", _client=clickhouse_connect.get_client(
        dsn=f"chdb://memory/{db}", tz_mode="aware"))
    boot.close()
    writer.ensure_schema()
    reader = ClickHouseStore("http://u:pw@unused.invalid", _client=clickhouse_connect.get_client(
        dsn=f"chdb://memory/{db}", tz_mode="aware"))
    try:
        assert reader.raw("SELECT count() FROM candles", "CSV", readonly=True).strip() == b"0"
        for query in ("DROP TABLE candles_data", "CREATE TABLE x (a Int64) ENGINE = Memory",
                      "SELECT * FROM file('/etc/hostname', 'LineAsString')",
                      "INSERT INTO candles_data (symbol) SELECT 'X'"):
            with pytest.raises(Exception, match="readonly|READONLY"):
                reader.raw(query, "CSV", readonly=True)
        assert writer.raw("SELECT count() FROM candles_data", "CSV").strip() == b"0"  # still there, empty
        assert "pw" not in repr(reader)
    finally:
        reader.close()
        writer.close()
