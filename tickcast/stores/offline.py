"""The offline store: ClickHouse SQL over candles, features, predictions, ...

Two implementations of one small interface (:class:`OfflineStore`):

* :class:`LakeStore` — embedded, ``chdb:///abs/dir``. chdb locks a data directory to
  one process, yet training, ``tickcast sql`` and dashboards must read while the
  pipeline writes. So the data is an **append-only Parquet lake**: writers (any
  process, any thread) add immutable parts ``dir/<table>/<part>.parquet`` — written
  to a temporary name, fsynced, then renamed, so a reader never sees half a part —
  with pyarrow alone. Readers open an in-memory chdb session and query views named
  after the tables, which read every part and keep the newest ``_v`` of each key, so
  each name returns one row per key (ReplacingMergeTree semantics). When a table has
  more than ``max_parts`` small parts, the writer merges them into one (deduplicated)
  under an ``fcntl`` lock, writing the merged part before deleting its inputs;
  readers retry a query whose part vanished mid-read.
* :class:`ClickHouseStore` — ``http(s)://user:pass@host:port/db``: ReplacingMergeTree
  tables ``<name>_data`` ordered by the key, and views ``<name>`` that read them
  ``FINAL``. Created idempotently.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import threading
import time
import uuid
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from tickcast.stores.tables import TABLES

RAW_SETTINGS = {"output_format_json_escape_forward_slashes": 0}  # "BTC/USD", not "BTC\\/USD"


class StoreError(RuntimeError):
    """The offline store cannot do what was asked; the message says why."""


class OfflineStore(ABC):
    """What every offline backend offers (queries are ClickHouse SQL)."""

    @abstractmethod
    def ensure_schema(self) -> None:
        """Create every table/view if missing (idempotent)."""

    @abstractmethod
    def insert(self, table: str, data: pa.Table) -> None:
        """Append rows (with their ``_v`` version column); newest version of a key wins."""

    @abstractmethod
    def query(self, sql: str, parameters: dict[str, Any] | None = None) -> Any:
        """Run SQL; the result has ``.result_rows`` and ``.column_names``."""

    @abstractmethod
    def close(self) -> None: ...

    # conveniences built on the client
    def query_df(self, sql: str, parameters: dict[str, Any] | None = None) -> Any:
        return self._retry(lambda: self._client().query_df(sql, parameters=parameters))

    def raw(self, sql: str, fmt: str = "Pretty") -> bytes:
        """The result in a ClickHouse output format (CSV, JSONEachRow, Pretty, TSV, …)."""
        return bytes(self._retry(lambda: self._client().raw_query(sql, fmt=fmt, settings=RAW_SETTINGS)))

    def _client(self) -> Any:
        raise NotImplementedError

    def _retry(self, fn: Any) -> Any:
        return fn()


def newest_per_key(t: pa.Table, key: list[str]) -> pa.Table:
    """Keep the row with the highest ``_v`` of every key (ReplacingMergeTree's rule)."""
    import pyarrow.compute as pc

    if t.num_rows < 2:
        return t
    t = t.sort_by([(k, "ascending") for k in key] + [("_v", "descending")])
    first = None
    for k in key:
        col = t.column(k).combine_chunks()
        neq = pc.not_equal(col.slice(1), col.slice(0, len(col) - 1))  # type: ignore[attr-defined]
        first = neq if first is None else pc.or_(first, neq)  # type: ignore[attr-defined]
    keep = pa.concat_arrays([pa.array([True]), first])
    return t.filter(keep)


def _size(p: Path) -> int:
    try:
        return p.stat().st_size
    except FileNotFoundError:
        return 1 << 62  # gone: never merge it


def _is_vanished_part(err: Exception) -> bool:
    text = str(err)
    return any(s in text for s in ("FILE_DOESNT_EXIST", "CANNOT_OPEN_FILE", "No such file", "CANNOT_STAT"))


class LakeStore(OfflineStore):
    """Embedded offline store: a Parquet lake queried with chdb (see module docstring)."""

    _compact_lock = threading.Lock()

    def __init__(self, root: Path, max_parts: int = 64, small_part_bytes: int = 32 << 20) -> None:
        self.root = root
        self.max_parts = max_parts
        self.small_part_bytes = small_part_bytes
        self._reader: Any = None
        self._db = "lake_" + hashlib.sha1(str(root.resolve()).encode()).hexdigest()[:12]

    # -- writing (pyarrow only; no chdb in writers) --------------------------------
    def ensure_schema(self) -> None:
        for name in TABLES:
            (self.root / name).mkdir(parents=True, exist_ok=True)

    def insert(self, table: str, data: pa.Table) -> None:
        if table not in TABLES:
            raise StoreError(f"unknown table {table!r}; known: {', '.join(TABLES)}")
        if data.num_rows == 0:
            return
        d = self.root / table
        d.mkdir(parents=True, exist_ok=True)
        self._write_part(d, data)
        parts = list(d.glob("*.parquet"))
        if len(parts) > self.max_parts:
            self.compact(table)

    @staticmethod
    def _write_part(d: Path, data: pa.Table) -> Path:
        name = f"{time.time_ns():020d}-{os.getpid()}-{uuid.uuid4().hex[:8]}.parquet"
        tmp = d / f".tmp-{name}.partial"  # not *.parquet: invisible to readers and compaction
        pq.write_table(data, tmp, compression="zstd")  # type: ignore[no-untyped-call]
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        final = d / name
        os.rename(tmp, final)
        return final

    def compact(self, table: str) -> int:
        """Merge the small parts of a table into one deduplicated part. Returns parts merged."""
        d = self.root / table
        key = list(TABLES[table].key)
        with self._compact_lock, open(d / ".compact.lock", "a+") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return 0  # another process is compacting this table
            try:
                small = sorted(p for p in d.glob("*.parquet") if _size(p) < self.small_part_bytes)
                if len(small) < 2:
                    return 0
                parts = [pq.read_table(p) for p in small]  # type: ignore[no-untyped-call]
                merged = pa.concat_tables(parts, promote_options="default")
                self._write_part(d, newest_per_key(merged, key))
                for p in small:
                    with contextlib.suppress(FileNotFoundError):
                        p.unlink()
                return len(small)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    # -- reading (in-memory chdb session, views over the parts) ---------------------
    def _client(self) -> Any:
        if self._reader is None:
            import clickhouse_connect

            boot = clickhouse_connect.get_client(dsn="chdb://memory")
            boot.command(f"CREATE DATABASE IF NOT EXISTS {self._db}")
            root = str(self.root.resolve()).replace("'", "\\'")
            for name, t in TABLES.items():
                key = ", ".join(f"`{k}`" for k in t.key)
                structure = t.structure().replace("'", "\\'")
                boot.command(
                    f"CREATE OR REPLACE VIEW {self._db}.`{name}` AS SELECT * EXCEPT _v FROM "
                    f"(SELECT * FROM file('{root}/{name}/*.parquet', Parquet, '{structure}') "
                    f"ORDER BY _v DESC LIMIT 1 BY {key})"
                )
            self._reader = clickhouse_connect.get_client(dsn="chdb://memory", database=self._db)
        return self._reader

    def _retry(self, fn: Any) -> Any:
        for attempt in range(4):
            try:
                return fn()
            except Exception as e:
                if attempt == 3 or not _is_vanished_part(e):
                    raise
                time.sleep(0.05 * (attempt + 1))  # a compaction replaced parts mid-read
        raise AssertionError("unreachable")

    def query(self, sql: str, parameters: dict[str, Any] | None = None) -> Any:
        return self._retry(lambda: self._client().query(sql, parameters=parameters))

    def close(self) -> None:
        self._reader = None


class ClickHouseStore(OfflineStore):
    """A ClickHouse server through clickhouse-connect (``_client`` lets tests inject a
    client on the embedded engine, which speaks the same API)."""

    def __init__(self, url: str, _client: Any = None) -> None:
        import clickhouse_connect

        self._lock = threading.Lock()
        self._c = _client if _client is not None else clickhouse_connect.get_client(
            dsn=url, connect_timeout=5, send_receive_timeout=60)

    def _client(self) -> Any:
        return self._c

    def ensure_schema(self) -> None:
        for name, t in TABLES.items():
            cols = ", ".join(f"`{n}` {typ}" for n, typ in t.columns)
            key = ", ".join(f"`{k}`" for k in t.key)
            self._c.command(f"CREATE TABLE IF NOT EXISTS `{name}_data` ({cols}, `_v` Int64) "
                            f"ENGINE = ReplacingMergeTree(_v) ORDER BY ({key})")
            self._c.command(f"CREATE VIEW IF NOT EXISTS `{name}` AS SELECT * EXCEPT _v FROM `{name}_data` FINAL")

    def insert(self, table: str, data: pa.Table) -> None:
        if table not in TABLES:
            raise StoreError(f"unknown table {table!r}; known: {', '.join(TABLES)}")
        if data.num_rows:
            with self._lock:
                self._c.insert_arrow(f"{table}_data", data)

    def query(self, sql: str, parameters: dict[str, Any] | None = None) -> Any:
        with self._lock:
            return self._c.query(sql, parameters=parameters)

    def query_df(self, sql: str, parameters: dict[str, Any] | None = None) -> Any:
        with self._lock:
            return self._c.query_df(sql, parameters=parameters)

    def raw(self, sql: str, fmt: str = "Pretty") -> bytes:
        with self._lock:
            return bytes(self._c.raw_query(sql, fmt=fmt, settings=RAW_SETTINGS))

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._c.close()


def open_offline(url: str, *, read_only: bool = False) -> OfflineStore:
    """``chdb:///abs/dir`` -> :class:`LakeStore`; ``http(s)://…`` -> :class:`ClickHouseStore`."""
    if url.startswith("chdb://"):
        path = url[len("chdb://"):]
        if not path.startswith("/"):
            raise StoreError(f"embedded offline store URL must be chdb:///absolute/path; got {url!r}")
        return LakeStore(Path(path))
    if url.startswith(("http://", "https://")):
        return ClickHouseStore(url)
    raise StoreError(f"offline store URL must be chdb:///abs/path or http(s)://…; got {url!r}")
