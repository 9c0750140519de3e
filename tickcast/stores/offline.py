"""The offline store: ClickHouse SQL over candles, features, predictions, …

One small interface, :class:`OfflineStore`, two backends chosen by URL
(:func:`open_offline`). Every table name returns one row per key — the newest
insert of a key wins — also after restarts, replays and recovery.

* :class:`LakeStore` — embedded, ``chdb:///abs/dir``. chdb locks a data directory to
  one process (and a process can open only one), yet training, ``tickcast sql`` and
  dashboards must read while the feature pipeline writes. So the embedded store is an
  **append-only Parquet lake**::

      <dir>/<table>/p<YYYYMM>-<time_ns>-<pid>-<random>.parquet

  One part holds rows of one UTC month of the table's time column (``Table.time``), so
  the newest rows of a symbol are in the newest months (:meth:`LakeStore.newest` reads
  only those) and compaction merges within a month; parts named without the ``p<YYYYMM>-``
  prefix (lakes written before partitions) are read like any other and re-partitioned by
  the next compaction. Retention (:mod:`tickcast.stores.retention`) deletes or rewrites
  parts whose rows were written too long ago, under the same locks as a compaction.

  *Writers* (any number of processes and threads) need pyarrow only: a part is
  written to a hidden temporary name in the same directory, fsynced, then renamed,
  so a reader never sees half a part. Every row carries the hidden version ``_v``.
  *Readers* open an in-memory chdb session and query views named like the tables::

      CREATE VIEW candles AS SELECT * EXCEPT _v FROM (
          SELECT * FROM file('<dir>/candles/*.parquet', Parquet, '<structure>')
          ORDER BY _v DESC LIMIT 1 BY symbol, window_start)

  The explicit structure makes an empty (or not yet created) table return 0 rows and
  a column missing from old parts read as its default. *Compaction*: when a table
  has more than ``max_parts`` parts, the inserting writer merges its small parts
  into one deduplicated part under an ``fcntl`` lock (one compactor per table across
  processes), writing the merged part before deleting its inputs. Queries hold the
  lake's readers' lock (``<dir>/.readers.lock``) shared and the inputs are deleted
  under it exclusively — at once if no query is running, else by a background
  thread once the queries are done — so a query never loses a part it listed; as a
  backstop a query whose part vanished is retried (3 times, short sleeps). Nothing is ever
  rewritten in place, so there is no state to corrupt: a crash leaves at worst a
  hidden temporary file (removed by a later compaction) or a merged part next to its
  inputs (duplicates the views drop).
* :class:`ClickHouseStore` — ``http(s)://user:pass@host:port/db``: tables
  ``<name>_data`` with ``ReplacingMergeTree(_v)`` ordered by the key, and views
  ``<name>`` reading them ``FINAL``; created idempotently, missing columns added.

Both take ``pyarrow.Table`` inserts (see :mod:`tickcast.stores.tables` for the
converters) and are safe to share between threads.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import threading
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pyarrow as pa
import pyarrow.parquet as pq

from tickcast.stores.errors import StoreError, StoreUnavailable
from tickcast.stores.retention import retention_days
from tickcast.stores.tables import TABLES, VERSION, conform, table_def

__all__ = ["ClickHouseStore", "LakeStore", "OfflineStore", "StoreError", "StoreUnavailable", "open_offline"]

T = TypeVar("T")
# "BTC/USD", not "BTC\/USD", in JSON output formats
RAW_SETTINGS = {"output_format_json_escape_forward_slashes": 0}


class OfflineStore(ABC):
    """What every offline backend offers. Queries are ClickHouse SQL over the table
    names of :data:`tickcast.stores.tables.TABLES`; parameters use ClickHouse's
    server-side binding (``{name:Type}``)."""

    read_only: bool = False

    @abstractmethod
    def ensure_schema(self) -> None:
        """Create every table/view if missing (idempotent, safe from several processes)."""

    @abstractmethod
    def insert(self, table: str, data: pa.Table) -> None:
        """Append rows. ``data`` is conformed to the table's schema (``_v`` added if
        absent); the newest version of a key wins."""

    @abstractmethod
    def close(self) -> None:
        """Release connections/sessions (the store may not be used afterwards)."""

    @abstractmethod
    def expire(self, table: str | None = None, now_us: int | None = None) -> int:
        """Apply retention (:mod:`tickcast.stores.retention`) to ``table`` (default: all)
        now; returns how many parts were dropped or rewritten (lake) or tables optimised
        (server). Writers apply it by themselves; this is for maintenance and tests."""

    @abstractmethod
    def _run(self, fn: Callable[[Any], T]) -> T:
        """Run ``fn(client)`` on a clickhouse-connect client of this store."""

    # -- reading, the same for every backend -------------------------------------
    def query(self, sql: str, parameters: dict[str, Any] | None = None) -> Any:
        """clickhouse-connect ``QueryResult`` (``.result_rows``, ``.column_names``, …).
        Timestamps come back as aware UTC datetimes."""
        return self._run(lambda c: c.query(sql, parameters=parameters))

    def query_df(self, sql: str, parameters: dict[str, Any] | None = None) -> Any:
        """A pandas DataFrame (pandas is imported only here)."""
        return self._run(lambda c: c.query_df(sql, parameters=parameters))

    def query_arrow(self, sql: str, parameters: dict[str, Any] | None = None) -> pa.Table:
        return self._run(lambda c: c.query_arrow(sql, parameters=parameters, use_strings=True))

    def newest(self, table: str, symbol: str) -> dict[str, Any] | None:
        """The row of ``symbol`` with the greatest time (``Table.time``: ``window_start`` for
        candles, ``ts`` for features, …) as ``{column: value}``, or None. Ties (e.g. two
        model versions at one ``ts``) go to the newest insert. Its cost does not grow with
        history: a server reads its ``(symbol, time)``-ordered table; the lake reads only
        its newest partitions."""
        t = _symbol_table(table)
        res = self.query(f"SELECT * FROM `{table}` WHERE symbol = {{symbol:String}} "
                         f"ORDER BY `{t.time}` DESC LIMIT 1", {"symbol": symbol})
        return dict(zip(res.column_names, res.result_rows[0], strict=True)) if res.result_rows else None

    def raw(self, sql: str, fmt: str = "Pretty", *, readonly: bool = False) -> bytes:
        """The result in a ClickHouse output format (CSV, TSV, JSONEachRow, Pretty, …).

        ``readonly=True`` runs it with ClickHouse's ``readonly = 1``: the engine itself
        refuses writes, schema changes, setting changes and every table function
        (``file``, ``url``, ``s3``, ``remote``, ``executable``, …) — what ``tickcast sql``
        does unless given ``--write``."""
        if readonly:
            return self._raw_readonly(sql, fmt)
        return bytes(self._run(lambda c: c.raw_query(sql, fmt=fmt, settings=RAW_SETTINGS)))

    def _raw_readonly(self, sql: str, fmt: str) -> bytes:
        # readonly = 1 also forbids changing any other setting in the same query, so
        # RAW_SETTINGS cannot be sent along (JSON output then escapes "/" as "\/")
        return bytes(self._run(lambda c: c.raw_query(sql, fmt=fmt, settings={"readonly": 1})))

    def __enter__(self) -> OfflineStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _symbol_table(table: str) -> Any:
    t = table_def(table)
    if "symbol" not in t.names:
        raise StoreError(f"{table} has no symbol column; newest() takes one of "
                         f"{', '.join(n for n, d in TABLES.items() if 'symbol' in d.names)}")
    return t


# -- the embedded Parquet lake ----------------------------------------------------

PART_SUFFIX = ".parquet"
TMP_PREFIX = ".tmp-"  # hidden and not *.parquet: invisible to readers and compaction
LOCK_NAME = ".compact.lock"  # per table: one compactor at a time, across processes
READERS_LOCK = ".readers.lock"  # per lake: queries hold it shared; deleting parts takes it exclusive
DELETE_LOCK = ".delete.lock"  # per lake: the turnstile a deleter closes to get the readers' lock
PARTITION_PREFIX = "p"  # p<YYYYMM>-…: the UTC month of the rows' time column
STALE_TMP_SECONDS = 3600.0
EXPIRE_EVERY_SECONDS = 3600.0  # a writer applies retention to a table at most this often
DAY_US = 86_400_000_000
READ_RETRIES = 3


def _flock_within(fd: int, op: int, wait_s: float) -> bool:
    deadline = time.monotonic() + wait_s
    while True:
        try:
            fcntl.flock(fd, op | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.005)


def _delete_unread(root: Path, paths: list[Path], wait_s: float | None) -> bool:
    """Delete replaced parts once no query of any process is reading the lake.

    Writer-preferring: the deleter takes the turnstile ``.delete.lock`` exclusively,
    which stops new queries from starting, waits for running queries to release the
    readers' lock, deletes, and lets the queries go on. A query therefore never
    waits long: the deleter holds the turnstile for at most ``wait_s`` (or 1 s per
    attempt when ``wait_s`` is None, retrying until it succeeds)."""
    try:
        turn = os.open(root / DELETE_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:
        turn = -1
    try:
        readers = os.open(root / READERS_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:
        readers = -1
    if turn < 0 or readers < 0:  # cannot lock (permissions): delete anyway, readers retry
        for fd in (turn, readers):
            if fd >= 0:
                os.close(fd)
        for p in paths:
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
        return True
    try:
        while True:
            window = 1.0 if wait_s is None else wait_s
            if _flock_within(turn, fcntl.LOCK_EX, window):
                try:
                    if _flock_within(readers, fcntl.LOCK_EX, window):
                        for p in paths:
                            with contextlib.suppress(FileNotFoundError):
                                p.unlink()
                        return True
                finally:
                    fcntl.flock(readers, fcntl.LOCK_UN)
                    fcntl.flock(turn, fcntl.LOCK_UN)
            if wait_s is not None:
                return False
            time.sleep(0.05)  # let the queries that waited at the turnstile run
    finally:
        os.close(turn)
        os.close(readers)


class _Sweeper:
    """Deletes replaced parts in the background when readers hold the lake, so an
    insert never waits for a long query. One per process; pending deletions are
    flushed on :meth:`LakeStore.close` and at exit (a deletion lost to a crash only
    leaves duplicate rows, which the views drop and the next compaction merges)."""

    def __init__(self) -> None:
        self._cv = threading.Condition()
        self._todo: list[tuple[Path, list[Path]]] = []
        self._busy = False
        self._current: list[Path] = []
        self._thread: threading.Thread | None = None

    def submit(self, root: Path, paths: list[Path]) -> None:
        with self._cv:
            self._todo.append((root, paths))
            if self._thread is None:
                import atexit

                self._thread = threading.Thread(target=self._loop, name="tickcast-lake-sweeper", daemon=True)
                self._thread.start()
                atexit.register(self.flush, 2.0)
            self._cv.notify_all()

    def _loop(self) -> None:
        while True:
            with self._cv:
                while not self._todo:
                    self._cv.wait()
                root, paths = self._todo.pop(0)
                self._busy, self._current = True, paths
            try:
                _delete_unread(root, paths, wait_s=None)
            finally:
                with self._cv:
                    self._busy, self._current = False, []
                    self._cv.notify_all()

    def pending(self, path: Path) -> bool:
        """Is ``path`` replaced already, waiting to be deleted?"""
        with self._cv:
            return any(path in paths for _, paths in self._todo) or path in self._current

    def flush(self, timeout_s: float) -> bool:
        """Wait until every submitted deletion is done (at most ``timeout_s``)."""
        with self._cv:
            return self._cv.wait_for(lambda: not self._todo and not self._busy, timeout_s)


    def _after_fork(self) -> None:  # a forked child has no sweeper thread: start afresh
        self.__init__()  # type: ignore[misc]


_sweeper = _Sweeper()
os.register_at_fork(after_in_child=_sweeper._after_fork)


def _fsync_dir(d: Path) -> None:
    fd = os.open(d, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def part_partition(name: str) -> str:
    """The partition of a part file name (``p202601-…`` -> ``"202601"``; ``""`` for parts
    written before partitions existed)."""
    if name.startswith(PARTITION_PREFIX) and name[7:8] == "-" and name[1:7].isdigit():
        return name[1:7]
    return ""


def partitions_of(table: str, data: pa.Table) -> list[tuple[str, pa.Table]]:
    """Split rows by the UTC month of the table's time column: ``[("202601", rows), …]``."""
    import numpy as np

    col = data.column(table_def(table).time)
    us = col.cast(pa.int64()).to_numpy()
    months = us.astype("datetime64[us]").astype("datetime64[M]")
    uniq = np.unique(months)
    if len(uniq) == 1:
        return [(str(uniq[0]).replace("-", ""), data)]
    return [(str(m).replace("-", ""), data.filter(pa.array(months == m))) for m in uniq]


def write_part(d: Path, data: pa.Table, partition: str = "") -> Path:
    """Atomically add one immutable part to a table directory; returns its path.
    ``partition`` (``YYYYMM``) prefixes the name: ``p202601-<time_ns>-<pid>-<random>.parquet``."""
    prefix = f"{PARTITION_PREFIX}{partition}-" if partition else ""
    name = f"{prefix}{time.time_ns():020d}-{os.getpid()}-{uuid.uuid4().hex[:12]}{PART_SUFFIX}"
    tmp = d / f"{TMP_PREFIX}{name}.partial"
    try:
        with open(tmp, "wb") as f:
            pq.write_table(data, f, compression="zstd")  # type: ignore[no-untyped-call]
            f.flush()
            os.fsync(f.fileno())
        final = d / name
        os.rename(tmp, final)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_dir(d)  # the rename is durable before anyone deletes what this part replaces
    return final


def newest_per_key(t: pa.Table, key: list[str]) -> pa.Table:
    """Keep the row with the highest ``_v`` of every key (ReplacingMergeTree's rule)."""
    import pyarrow.compute as pc

    if t.num_rows < 2:
        return t
    t = t.sort_by([(k, "ascending") for k in key] + [(VERSION, "descending")])
    first: Any = None
    for k in key:
        col = t.column(k).combine_chunks()
        neq = pc.not_equal(col.slice(1), col.slice(0, len(col) - 1))  # type: ignore[attr-defined]
        first = neq if first is None else pc.or_(first, neq)  # type: ignore[attr-defined]
    return t.filter(pa.concat_arrays([pa.array([True]), first]))


def _version_range(path: Path) -> tuple[int, int]:
    """(min, max) of a part's ``_v`` from its Parquet statistics (the column if absent)."""
    meta = pq.ParquetFile(path).metadata  # type: ignore[no-untyped-call]
    names = [meta.schema.column(i).name for i in range(meta.num_columns)]
    j = names.index(VERSION)
    lo: int | None = None
    hi: int | None = None
    for g in range(meta.num_row_groups):
        st = meta.row_group(g).column(j).statistics
        if st is None or not st.has_min_max:
            import pyarrow.compute as pc

            col = pq.read_table(path, columns=[VERSION]).column(VERSION)  # type: ignore[no-untyped-call]
            mm = pc.min_max(col)  # type: ignore[attr-defined]
            return int(mm["min"].as_py()), int(mm["max"].as_py())
        lo = st.min if lo is None else min(lo, st.min)
        hi = st.max if hi is None else max(hi, st.max)
    return (lo, hi) if lo is not None and hi is not None else (0, 0)


def _is_vanished_part(err: Exception) -> bool:
    text = str(err)
    return any(s in text for s in ("FILE_DOESNT_EXIST", "CANNOT_OPEN_FILE", "CANNOT_STAT", "No such file"))


def _sql_string(s: str) -> str:
    return s.replace("\\", "\\\\").replace("'", "\\'")


class LakeStore(OfflineStore):
    """Embedded offline store: a Parquet lake queried with chdb (see the module docstring).

    ``max_parts``: compact a table when it has more parts than this.
    ``small_part_bytes``: only parts smaller than this are merged, and one compaction
    reads at most about twice this much, so memory stays bounded.
    ``retention``: days to keep per table (:func:`tickcast.stores.retention.retention_days`;
    :func:`open_offline` reads it from the environment); a writer applies it to a table
    it inserts into at most every :data:`EXPIRE_EVERY_SECONDS`."""

    _compacting = threading.Lock()  # one compaction at a time per process (flock: per host)

    def __init__(self, root: Path | str, *, max_parts: int = 64, small_part_bytes: int = 32 << 20,
                 read_only: bool = False, retention: dict[str, int] | None = None) -> None:
        self.root = Path(root).resolve()
        self.retention = dict(retention or {})  # days per table, 0/absent = forever
        self._expired_at: dict[str, float] = {}  # monotonic time of the last retention pass per table
        self.max_parts = max_parts
        self.small_part_bytes = small_part_bytes
        self.read_only = read_only
        self.read_retries = 0  # how often a query was retried because a compaction replaced parts
        self._reader: Any = None
        self._ro_reader: Any = None  # readonly = 1 session (raw(readonly=True)), opened on first use
        self._reader_lock = threading.Lock()
        self._db = "lake_" + hashlib.sha1(str(self.root).encode()).hexdigest()[:12]

    def __repr__(self) -> str:
        return f"LakeStore({str(self.root)!r})"

    # -- writing: pyarrow only, no chdb ---------------------------------------------
    def ensure_schema(self) -> None:
        if self.read_only:
            return  # the views need no directories: a missing table reads as empty
        for name in TABLES:
            (self.root / name).mkdir(parents=True, exist_ok=True)
        (self.root / READERS_LOCK).touch()
        (self.root / DELETE_LOCK).touch()

    def insert(self, table: str, data: pa.Table) -> None:
        data = conform(table, data)
        if data.num_rows == 0:
            return
        d = self.root / table
        if not d.is_dir():
            d.mkdir(parents=True, exist_ok=True)
            (self.root / READERS_LOCK).touch()
            (self.root / DELETE_LOCK).touch()
        (self.root / DELETE_LOCK).touch()
        for partition, rows in partitions_of(table, data):
            write_part(d, rows, partition)
        if self.part_count(table) > self.max_parts:
            self.compact(table)
        if self.retention.get(table, 0) > 0:
            last = self._expired_at.get(table)
            if (last is None or time.monotonic() - last >= EXPIRE_EVERY_SECONDS) and self.expire(table, wait=False) >= 0:
                self._expired_at[table] = time.monotonic()  # else a compaction was running: next insert

    def part_count(self, table: str) -> int:
        try:
            with os.scandir(self.root / table) as it:
                return sum(1 for e in it if e.name.endswith(PART_SUFFIX) and not e.name.startswith("."))
        except FileNotFoundError:
            return 0

    def compact(self, table: str) -> int:
        """Merge small parts of ``table`` into one deduplicated part; returns how many
        parts were merged (0 if another thread/process is compacting it)."""
        key = list(table_def(table).key)
        d = self.root / table
        if not d.is_dir() or not self._compacting.acquire(blocking=False):
            return 0
        try:
            with open(d / LOCK_NAME, "a+") as lock:
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    return 0  # another process is compacting this table
                try:
                    return self._compact_locked(d, key)
                finally:
                    fcntl.flock(lock, fcntl.LOCK_UN)
        finally:
            self._compacting.release()

    def expire(self, table: str | None = None, now_us: int | None = None, *, wait: bool = True) -> int:
        """Drop rows written more than the table's retention ago (their ``_v``): parts
        whose every row expired are deleted whole, parts with some expired rows are
        rewritten without them (the ``_v`` range of a part comes from its Parquet
        statistics, so unexpired parts are not read). Runs under the table's compaction
        lock; replaced parts are deleted under the readers' lock (a running query keeps
        its view of them). Returns the number of parts dropped or rewritten; with
        ``wait=False`` (what inserts use) -1 if a compaction held a lock, nothing done."""
        now = time.time_ns() // 1000 if now_us is None else now_us
        done = 0
        for name in [table] if table else list(TABLES):
            days = self.retention.get(name, 0)
            d = self.root / name
            if days <= 0 or not d.is_dir():
                continue
            if not self._compacting.acquire(blocking=wait):
                return -1
            try:
                with open(d / LOCK_NAME, "a+") as lock:
                    try:  # waits for (or, without wait, gives way to) a compaction of this table
                        fcntl.flock(lock, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
                    except BlockingIOError:
                        return -1
                    try:
                        done += self._expire_locked(d, (now - days * DAY_US) * 1000)
                    finally:
                        fcntl.flock(lock, fcntl.LOCK_UN)
            finally:
                self._compacting.release()
        return done

    def _expire_locked(self, d: Path, cutoff_v: int) -> int:
        import pyarrow.compute as pc

        doomed: list[Path] = []
        with os.scandir(d) as it:
            parts = sorted(Path(e.path) for e in it if e.name.endswith(PART_SUFFIX) and not e.name.startswith("."))
        for p in parts:
            if _sweeper.pending(p):
                continue
            try:
                lo, hi = _version_range(p)
                if lo >= cutoff_v:
                    continue
                if hi < cutoff_v:
                    doomed.append(p)
                    continue
                t = pq.read_table(p)  # type: ignore[no-untyped-call]
            except OSError:
                if p.exists():
                    raise
                continue  # replaced by a compaction since listed
            kept = t.filter(pc.greater_equal(t.column(VERSION), cutoff_v))  # type: ignore[attr-defined]
            if kept.num_rows:
                for part, rows in partitions_of(d.name, conform(d.name, kept)):
                    write_part(d, rows, part)
            doomed.append(p)
        if doomed and not _delete_unread(self.root, doomed, wait_s=0.05):
            _sweeper.submit(self.root, doomed)
        return len(doomed)

    def _compact_locked(self, d: Path, key: list[str]) -> int:
        """Merge the small parts of ONE partition — the one with the most of them — into
        one deduplicated part. Parts written before partitions existed are merged with
        every small part and come out split by partition (the layout migrates)."""
        now = time.time()
        groups: dict[str, list[tuple[Path, int]]] = {}
        with os.scandir(d) as it:
            entries = sorted(it, key=lambda e: e.name)  # per partition, names start with time_ns: oldest first
        for e in entries:
            try:
                st = e.stat()
            except FileNotFoundError:
                continue
            if e.name.startswith(TMP_PREFIX):
                if now - st.st_mtime > STALE_TMP_SECONDS:  # left by a writer that crashed
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(e.path)
                continue
            if (not e.name.endswith(PART_SUFFIX) or e.name.startswith(".") or st.st_size >= self.small_part_bytes
                    or _sweeper.pending(Path(e.path))):
                continue
            groups.setdefault(part_partition(e.name), []).append((Path(e.path), st.st_size))
        if not groups:
            return 0
        if "" in groups:  # a lake from before partitions: migrate, merging everything small
            partition, candidates = "", [c for _, g in sorted(groups.items()) for c in g]
        else:
            partition, candidates = max(groups.items(), key=lambda kv: len(kv[1]))
        small: list[Path] = []
        budget = 2 * self.small_part_bytes
        for path, size in candidates:
            if size > budget and small:
                break
            budget -= size
            small.append(path)
        tables, read = [], []
        for p in small:
            try:
                tables.append(pq.read_table(p))  # type: ignore[no-untyped-call]
                read.append(p)
            except OSError:
                if p.exists():
                    raise
                # deleted by a sweeper since listed: its rows are in a merged part already
        if len(read) < 2:
            return 0
        merged = pa.concat_tables(tables, promote_options="default")
        conformed = newest_per_key(conform(d.name, merged), key)  # old parts may lack newer columns
        if partition:
            write_part(d, conformed, partition)
        else:
            for part, rows in partitions_of(d.name, conformed):
                write_part(d, rows, part)
        # The merged part is durable: its inputs may go, once no query is reading
        # them (a reader that lists the files must be able to open them).
        if not _delete_unread(self.root, read, wait_s=0.05):
            _sweeper.submit(self.root, read)
        return len(read)

    # -- reading: an in-memory chdb session with deduplicating views -----------------
    def _client(self) -> Any:
        with self._reader_lock:
            if self._reader is None:
                import clickhouse_connect

                # The in-memory engine lives while any client of it is open: the reader
                # is opened before the bootstrap client closes, or the views would vanish.
                boot = clickhouse_connect.get_client(dsn="chdb://memory")
                try:
                    boot.command(f"CREATE DATABASE IF NOT EXISTS {self._db}")
                    root = _sql_string(str(self.root))
                    for name, t in TABLES.items():
                        boot.command(
                            f"CREATE OR REPLACE VIEW {self._db}.`{name}` AS SELECT * EXCEPT {VERSION} FROM "
                            f"(SELECT * FROM file('{root}/{name}/*{PART_SUFFIX}', Parquet, "
                            f"'{_sql_string(t.columns_sql())}') ORDER BY {VERSION} DESC LIMIT 1 BY {t.key_sql()})")
                    self._reader = clickhouse_connect.get_client(dsn="chdb://memory", database=self._db,
                                                                 tz_mode="aware")
                finally:
                    boot.close()
            return self._reader

    @contextlib.contextmanager
    def _reading(self) -> Iterator[None]:
        """Hold the lake's readers' lock shared while a query runs, so no compaction
        deletes a part this query listed (passing the deleters' turnstile first).
        Without the lock files (nothing written yet, or no permission) the query runs
        unlocked and relies on retries."""
        try:
            readers = os.open(self.root / READERS_LOCK, os.O_RDONLY)
        except OSError:
            yield
            return
        try:
            try:
                turn = os.open(self.root / DELETE_LOCK, os.O_RDONLY)
            except OSError:
                fcntl.flock(readers, fcntl.LOCK_SH)
            else:
                try:
                    fcntl.flock(turn, fcntl.LOCK_SH)  # waits while a deleter holds the turnstile
                    fcntl.flock(readers, fcntl.LOCK_SH)
                finally:
                    os.close(turn)
            yield
        finally:
            os.close(readers)

    def _run(self, fn: Callable[[Any], T]) -> T:
        client = self._client()
        for attempt in range(READ_RETRIES + 1):
            try:
                with self._reading():
                    return fn(client)
            except Exception as e:
                if attempt == READ_RETRIES or not _is_vanished_part(e):
                    raise
                self.read_retries += 1
                time.sleep(0.02 * (attempt + 1))  # a compaction replaced parts mid-read
        raise AssertionError("unreachable")

    def _readonly_client(self) -> Any:
        """A reader whose session has ``readonly = 1``. The views of :meth:`_client` read
        the ``file()`` table function, which ``readonly = 1`` refuses; these read
        ``File(Parquet)`` tables over the same globs (same rows), so the engine can refuse
        every table function, write and schema change of the user's query."""
        with self._reader_lock:
            if self._ro_reader is None:
                import clickhouse_connect

                db = self._db + "_ro"
                boot = clickhouse_connect.get_client(dsn="chdb://memory")
                try:
                    boot.command(f"CREATE DATABASE IF NOT EXISTS {db}")
                    root = _sql_string(str(self.root))
                    for name, t in TABLES.items():
                        boot.command(f"CREATE OR REPLACE TABLE {db}.`_parts_{name}` ({t.columns_sql()}) "
                                     f"ENGINE = File(Parquet, '{root}/{name}/*{PART_SUFFIX}')")
                        boot.command(
                            f"CREATE OR REPLACE VIEW {db}.`{name}` AS SELECT * EXCEPT {VERSION} FROM "
                            f"(SELECT * FROM {db}.`_parts_{name}` ORDER BY {VERSION} DESC LIMIT 1 BY {t.key_sql()})")
                    ro = clickhouse_connect.get_client(dsn="chdb://memory", database=db, tz_mode="aware")
                finally:
                    boot.close()
                ro.command("SET output_format_json_escape_forward_slashes = 0")
                ro.raw_query("SELECT 1", settings={"readonly": 1})  # sticks to this client's session
                self._ro_reader = ro
            return self._ro_reader

    def _raw_readonly(self, sql: str, fmt: str) -> bytes:
        client = self._readonly_client()
        for attempt in range(READ_RETRIES + 1):
            try:
                with self._reading():
                    return bytes(client.raw_query(sql, fmt=fmt))
            except Exception as e:
                if attempt == READ_RETRIES or not _is_vanished_part(e):
                    raise
                time.sleep(0.02 * (attempt + 1))
        raise AssertionError("unreachable")

    def _parts_by_partition(self, table: str) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        try:
            with os.scandir(self.root / table) as it:
                for e in it:
                    if e.name.endswith(PART_SUFFIX) and not e.name.startswith("."):
                        out.setdefault(part_partition(e.name), []).append(e.name)
        except FileNotFoundError:
            pass
        return out

    def newest(self, table: str, symbol: str) -> dict[str, Any] | None:
        """See :meth:`OfflineStore.newest`. Rows are partitioned by the month of the time
        column and a key always falls in one partition, so the newest row of a symbol is
        in the newest partition holding that symbol: partitions are probed newest first
        (parts from before partitions existed, if any, are read with every probe), each
        probe reads only its own parts (listed by name) and deduplicates its own rows."""
        t = _symbol_table(table)
        for attempt in range(READ_RETRIES + 1):
            try:
                return self._newest(table, t, symbol)
            except Exception as e:
                if attempt == READ_RETRIES or not _is_vanished_part(e):
                    raise
                self.read_retries += 1  # a compaction replaced parts since they were listed
                time.sleep(0.02 * (attempt + 1))
        raise AssertionError("unreachable")

    def _newest(self, table: str, t: Any, symbol: str) -> dict[str, Any] | None:
        parts = self._parts_by_partition(table)
        if any(ch in n for names in parts.values() for n in names for ch in "{},*?[]\\'"):
            return super().newest(table, symbol)  # a name a glob cannot list: the plain query
        legacy = parts.pop("", [])
        order = sorted(parts, reverse=True)
        probes = [[p] for p in order[:2]]
        if len(order) > 2:
            probes.append(order[2:])  # not in the two newest months: read the rest at once
        if not probes:
            probes = [[]]
        d = _sql_string(str(self.root / table))
        for months in probes:
            names = legacy + [n for m in months for n in parts[m]]
            if not names:
                continue
            glob = "{" + ",".join(_sql_string(n) for n in names) + "}" if len(names) > 1 else _sql_string(names[0])
            sql = (f"SELECT * EXCEPT {VERSION} FROM file('{d}/{glob}', Parquet, '{_sql_string(t.columns_sql())}') "
                   f"WHERE symbol = {{symbol:String}} ORDER BY `{t.time}` DESC, {VERSION} DESC LIMIT 1")
            res = self.query(sql, {"symbol": symbol})
            if res.result_rows:
                return dict(zip(res.column_names, res.result_rows[0], strict=True))
        return None

    def close(self) -> None:
        _sweeper.flush(2.0)  # deletions this process deferred (instant when there are none)
        with self._reader_lock:
            reader, self._reader = self._reader, None
            ro, self._ro_reader = self._ro_reader, None
        if ro is not None:
            ro.close()
        if reader is not None:
            reader.close()  # chdb can open another engine path once every client is closed


# -- a ClickHouse server ------------------------------------------------------------

def _redact(url: str) -> str:
    return re.sub(r"//([^:/@]+):[^@/]*@", r"//\1:***@", url)


class ClickHouseStore(OfflineStore):
    """A ClickHouse server through clickhouse-connect.

    ``_client`` (private, for tests) injects a ready clickhouse-connect client, e.g.
    one on the embedded engine (``chdb://…``), which speaks the same API."""

    def __init__(self, url: str, *, read_only: bool = False, connect_timeout: float = 5.0,
                 send_receive_timeout: float = 120.0, retention: dict[str, int] | None = None,
                 _client: Any = None) -> None:
        self.url = _redact(url)
        self.read_only = read_only
        self.retention = dict(retention or {})  # days per table: a TTL on <name>_data's _v (0 = none)
        self._lock = threading.Lock()  # one HTTP session: one query at a time
        if _client is None:
            import clickhouse_connect
            from clickhouse_connect.driver.exceptions import OperationalError

            try:
                _client = clickhouse_connect.get_client(dsn=url, connect_timeout=connect_timeout,
                                                        send_receive_timeout=send_receive_timeout,
                                                        tz_mode="aware")
            except OperationalError as e:
                raise StoreUnavailable(f"ClickHouse at {self.url} unavailable: {e}") from e
        self._c = _client

    def __repr__(self) -> str:
        return f"ClickHouseStore({self.url!r})"

    def _run(self, fn: Callable[[Any], T]) -> T:
        from clickhouse_connect.driver.exceptions import OperationalError

        with self._lock:
            try:
                return fn(self._c)
            except OperationalError as e:
                raise StoreUnavailable(f"ClickHouse at {self.url} unavailable: {e}") from e

    def ensure_schema(self) -> None:
        def go(c: Any) -> None:
            for name, t in TABLES.items():
                c.command(f"CREATE TABLE IF NOT EXISTS `{name}_data` ({t.columns_sql()}) "
                          f"ENGINE = ReplacingMergeTree({VERSION}) ORDER BY ({t.key_sql()})")
            engines = dict(c.query("SELECT name, engine_full FROM system.tables "
                                   "WHERE database = currentDatabase()").result_rows)
            for name in TABLES:  # retention: a TTL on _v (written + days), kept in step
                if self.read_only:
                    break  # readers (the API, `tickcast sql`) leave the table settings alone
                days = self.retention.get(name, 0)
                engine = engines.get(f"{name}_data", "")
                ttl = f"toDateTime(intDiv(`{VERSION}`, 1000000000)) + toIntervalDay({days})"  # written + days
                if days > 0 and f"toIntervalDay({days})" not in engine:
                    c.command(f"ALTER TABLE `{name}_data` MODIFY TTL {ttl}")
                elif days <= 0 and " TTL " in engine:
                    c.command(f"ALTER TABLE `{name}_data` REMOVE TTL")
            have: dict[str, list[str]] = {}
            for table, column in c.query(
                    "SELECT table, name FROM system.columns WHERE database = currentDatabase() "
                    "ORDER BY table, position").result_rows:
                have.setdefault(table, []).append(column)
            for name, t in TABLES.items():
                data_cols = have.get(f"{name}_data", [])
                for col in t.columns:  # columns added to TABLES since the table was created
                    if col.name not in data_cols:
                        c.command(f"ALTER TABLE `{name}_data` ADD COLUMN IF NOT EXISTS {col.sql}")
                select = f"SELECT {', '.join(f'`{n}`' for n in t.names)} FROM `{name}_data` FINAL"
                if name not in have:
                    c.command(f"CREATE VIEW IF NOT EXISTS `{name}` AS {select}")
                elif have[name] != list(t.names):
                    c.command(f"CREATE OR REPLACE VIEW `{name}` AS {select}")

        self._run(go)

    def insert(self, table: str, data: pa.Table) -> None:
        data = conform(table, data)
        if data.num_rows:
            self._run(lambda c: c.insert_arrow(f"{table}_data", data))

    def expire(self, table: str | None = None, now_us: int | None = None) -> int:
        """The server drops expired rows in its merges; this forces it now (``OPTIMIZE …
        FINAL`` on each table with a retention — heavy on big tables). ``now_us`` is
        ignored: a server's TTL goes by its own clock."""
        names = [n for n in ([table] if table else list(TABLES)) if self.retention.get(n, 0) > 0]
        def go(c: Any) -> None:
            for name in names:
                c.command(f"OPTIMIZE TABLE `{name}_data` FINAL")

        self._run(go)
        return len(names)

    def close(self) -> None:
        with self._lock, contextlib.suppress(Exception):
            self._c.close()


def open_offline(url: str, *, read_only: bool = False) -> OfflineStore:
    """``chdb:///abs/dir`` -> :class:`LakeStore`; ``http(s)://…`` -> :class:`ClickHouseStore`.

    ``read_only`` says the caller mostly reads: the lake's ``ensure_schema`` then
    creates no directories (its views need none). Retention per table comes from the
    environment (:mod:`tickcast.stores.retention`); a bad value raises :class:`StoreError`. Inserts are still allowed (e.g.
    ``tickcast train`` reads features and records a ``training_runs`` row).

    >>> open_offline("chdb:///tmp/tickcast-doc", read_only=True)
    LakeStore('/tmp/tickcast-doc')
    """
    if url.startswith("chdb://"):
        path = url[len("chdb://"):]
        if not path.startswith("/"):
            raise StoreError(f"embedded offline store URL must be chdb:///absolute/path; got {url!r}")
        return LakeStore(Path(path), read_only=read_only, retention=retention_days(os.environ))
    if url.startswith(("http://", "https://")):
        return ClickHouseStore(url, read_only=read_only, retention=retention_days(os.environ))
    raise StoreError(f"offline store URL must be chdb:///abs/path or http(s)://…; got {_redact(url)!r}")
