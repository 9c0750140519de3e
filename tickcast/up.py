"""``tickcast up``: the whole system on one machine, as one :class:`Stack`.

A stack has four steps, run in this order by :func:`cmd_up`:

1. :meth:`Stack.start` — the embedded servers it needs (Valkey unless
   ``TICKCAST_REDIS_URL``; with ``--kafka`` and no ``TICKCAST_KAFKA_BROKERS``, tansu on
   SeaweedFS S3), then the children: the feature flow (with ``--kafka`` also the
   ingest flow), each with its Bytewax recovery directory under the data dir, and
   the API on gunicorn. Every child gets its own session and SIGTERM when ``up``
   dies (also by SIGKILL), and logs to ``DATA_DIR/logs/<name>.log``.
2. :meth:`Stack.wait_ready` — until the API answers ``/openapi.json`` (60 s), or a
   child fails.
3. :meth:`Stack.failed`, :meth:`Stack.tick` and :meth:`Stack.status_line` — the
   watch loop: a child that dies ends ``up`` with exit 1 and its last log line;
   periodic training; one live status line.
4. :meth:`Stack.stop` — in order: trainer, API, sources before the flows reading
   them (so a flow never sees half-sent data), the broker and S3, Valkey.

Ctrl-C and SIGTERM only set a flag; the loops notice it within 0.25 s, and stopping
always runs (also after an error). Exit codes: 0 after Ctrl-C/SIGTERM, 1 when a child
fails or an embedded server cannot start, 2 for bad configuration.

Why Kafka is opt-in locally: tansu 0.6 on SeaweedFS is slow and heavy at live rates
(benchmarks/bench_kafka_lag.py at 100 trades/s: consumer lag p99 1.7-6.9 s, a whole
core for the broker pair); a lagging consumer no longer makes trades late (the
feature flow's clock follows the ingest's heartbeats) but delays every candle. tansu
in memory would be fast but loses the topic on restart, breaking exact resumption.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tickcast.command import EPILOG, Command
from tickcast.config import Settings
from tickcast.embedded import EmbeddedError

READY_TIMEOUT_S = 60.0
WATCH_EVERY_S = 0.25
STATUS_EVERY_S = 2.0
SNAPSHOTS = ["-s", "5", "-b", "0"]  # a recovery snapshot every 5 s, none kept longer than needed
# how long each child may take to stop before it is killed, and with which signal
STOP_TRAINER = (signal.SIGTERM, 10.0)
STOP_API = (signal.SIGTERM, 15.0)
STOP_FLOW = (signal.SIGINT, 30.0)


def _die_with_parent() -> None:
    """In a child: get SIGTERM when `tickcast up` dies, even by SIGKILL (Linux)."""
    import ctypes

    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _stop(proc: subprocess.Popen[bytes], sig: int, timeout: float) -> None:
    """Signal a child's process group, wait ``timeout`` s, then SIGKILL it."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, sig)
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    except ProcessLookupError:
        pass


def _last_line(log: Path) -> str:
    """The last non-empty line of a child's log (its one-line error, when it failed)."""
    try:
        lines = [x for x in log.read_text(errors="replace").splitlines() if x.strip()]
    except FileNotFoundError:
        return ""
    return lines[-1].strip() if lines else ""


def source_slug(source: str) -> str:
    """A file-name-safe name of a source: ``kraken``, ``kafka``, ``sim``,
    ``replay-<hash of the file's absolute path>``, or for any other spec (news feeds:
    ``rss:<urls>``, ``cryptopanic``) ``<kind>-<hash of the spec>`` — never of the cwd."""
    if source in ("kraken", "kafka", "sim"):
        return source
    if source.startswith("replay:"):
        return "replay-" + hashlib.sha1(str(Path(source[7:]).resolve()).encode()).hexdigest()[:10]
    kind = source.split(":", 1)[0] if source[:1].isalpha() else "source"
    return f"{''.join(c for c in kind if c.isalnum())[:16]}-" + hashlib.sha1(source.encode()).hexdigest()[:10]


class Stack:
    """The processes and embedded servers of one ``tickcast up`` (see the module doc).

    ``overrides`` are the ``TICKCAST_*`` values the flags set; every child gets them,
    and ``TICKCAST_DATA_DIR`` (so ``ps e`` tells which ``up`` a process belongs to).
    """

    CHILDREN = ("ingest", "features", "api")  # watched; a failure of one ends `up`

    def __init__(self, settings: Settings, overrides: dict[str, str], *, kafka: bool = False,
                 train_every: float = 0.0) -> None:
        s = self.settings = settings
        self.data_dir = s.data_dir.resolve()
        self.logs = self.data_dir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.env = {**os.environ, **overrides, "TICKCAST_DATA_DIR": str(self.data_dir)}
        self.via_kafka = s.source == "kafka" or kafka
        self.ingests = self.via_kafka and s.source != "kafka"  # an ingest flow writes the topic
        self.embedded_kafka = self.ingests and not os.environ.get("TICKCAST_KAFKA_BROKERS")
        self.train_every = train_every
        self.children: dict[str, subprocess.Popen[bytes]] = {}
        self.trainer: subprocess.Popen[bytes] | None = None
        self.started_valkey = False
        self.s3: Any = None
        self.broker: Any = None
        self.redis_url = s.redis_url
        self.brokers = s.kafka_brokers
        self.url = ""
        self._store: Any = None
        self._next_train = 0.0
        self._next_status = 0.0

    # -- 1. start --------------------------------------------------------------------------

    def start(self) -> None:
        """Embedded servers, then the flows, then the API. Raises EmbeddedError."""
        self._start_servers()
        flow = [sys.executable, "-m", "bytewax.run"]
        if self.ingests:
            if not os.environ.get("TICKCAST_TRADES_TOPIC"):
                # one topic per source: the Kafka reader drops a trade whose id is not above
                # the last of its symbol, so histories must not share a topic
                self.env["TICKCAST_TRADES_TOPIC"] = f"{self.settings.trades_topic}-{source_slug(self.settings.source)}"
            self.spawn("ingest", [*flow, "dataflows.ingest", "-r", self.recovery("ingest"), *SNAPSHOTS])
            self.spawn("features", [*flow, "dataflows.features", "-r", self.recovery("features-via-kafka"),
                                    *SNAPSHOTS], TICKCAST_SOURCE="kafka")
        else:
            self.spawn("features", [*flow, "dataflows.features", "-r", self.recovery("features"), *SNAPSHOTS])
        # the news flow beside the price flow (README, News); one recovery dir per news source spec.
        # Not watched: a news outage must not stop prices (its problems are in logs/news.log)
        news = self.settings.news_source_resolved
        if news != "off":
            self.spawn("news", [*flow, "dataflows.news", "-r",
                                self.recovery("news", news), *SNAPSHOTS])
        from tickcast.embedded import free_port

        port = self.settings.api_port or free_port()
        gunicorn = str(Path(sys.executable).parent / "gunicorn")
        self.spawn("api", [gunicorn, "-w", "2", "-b", f"127.0.0.1:{port}", "--access-logfile", "-",
                           "api:create_app()"])
        self.url = f"http://127.0.0.1:{port}"

    def _start_servers(self) -> None:
        if not self.redis_url:
            from tickcast.embedded import ensure_valkey

            self.redis_url = ensure_valkey(self.data_dir)
            self.started_valkey = True
        self.env["TICKCAST_REDIS_URL"] = self.redis_url
        if self.embedded_kafka:
            from tickcast.embedded import SeaweedS3
            from tickcast.tansu import TansuBroker

            tag = {"TICKCAST_DATA_DIR": str(self.data_dir)}
            popen: dict[str, Any] = {"start_new_session": True, "preexec_fn": _die_with_parent}
            self.s3 = SeaweedS3(self.data_dir / "kafka", buckets=("tansu",), env=tag, **popen).start()
            self.broker = TansuBroker.start(storage="s3://tansu/", s3=self.s3.creds,
                                            log_path=self.logs / "kafka.log", env=tag, popen=popen)
            self.brokers = self.broker.bootstrap
            self.env["TICKCAST_KAFKA_BROKERS"] = self.brokers

    def spawn(self, name: str, cmd: list[str], **extra_env: str) -> subprocess.Popen[bytes]:
        """Start child ``name`` (own session, dies with its parent, logs to logs/<name>.log)."""
        log = (self.logs / f"{name}.log").open("ab")
        self.children[name] = subprocess.Popen(cmd, env={**self.env, **extra_env}, stdout=log,
                                               stderr=subprocess.STDOUT, start_new_session=True,
                                               preexec_fn=_die_with_parent)
        return self.children[name]

    def _news_banner(self) -> str:
        news = self.settings.news_source_resolved
        shown = news if len(news) < 90 else news[:87] + "..."
        return f"{shown}   (log: {self.logs / 'news.log'})" if news != "off" else "off"

    def recovery(self, flow_name: str, source: str | None = None) -> str:
        """The flow's Bytewax recovery directory, one per source (a replay file, the
        simulator and the live feed are different histories: sharing window state
        between them would fill years of empty candles or make every trade late).
        Initialised in a temporary directory and renamed, so it exists only complete."""
        d = self.data_dir / "recovery" / f"{flow_name}-{source_slug(source or self.settings.source)}"
        if not d.exists():
            tmp = d.with_name(d.name + ".init")
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            r = subprocess.run([sys.executable, "-m", "bytewax.recovery", str(tmp), "1"], capture_output=True,
                               text=True)
            if r.returncode != 0:
                raise EmbeddedError(f"could not initialise Bytewax recovery in {d}: {r.stderr.strip()[-300:]}")
            tmp.rename(d)
        return str(d)

    # -- 2. ready --------------------------------------------------------------------------

    def wait_ready(self, stopping: Any) -> str | None:
        """Wait until the API answers (``stopping()`` true ends the wait early: None).
        Returns why it did not come up, or None."""
        import urllib.request

        deadline = time.monotonic() + READY_TIMEOUT_S
        while not stopping():
            why = self.failed()
            if why:
                return why
            try:
                urllib.request.urlopen(self.url + "/openapi.json", timeout=1).read()
                return None
            except Exception:  # noqa: BLE001 - not up yet
                if time.monotonic() > deadline:
                    return f"the API did not start within {READY_TIMEOUT_S:g} s; see {self.logs / 'api.log'}"
                time.sleep(0.2)
        return None

    def banner(self) -> list[str]:
        """The lines printed once everything answers."""
        s = self.settings
        if self.ingests:
            path = f"{s.source} -> Kafka ({self.brokers}) -> features"
        else:
            path = f"Kafka ({self.brokers}) -> features" if self.via_kafka else f"{s.source} -> features"
        return ["tickcast up",
                f"  API         {self.url}/predict?symbol={s.symbols[0]}   (/dashboard, /health, /metrics, /models)",
                f"  source      {path}",
                f"  news        {self._news_banner()}",
                f"  symbols     {','.join(s.symbols)}",
                f"  data dir    {self.data_dir}",
                f"  offline     {s.offline_url}   (tickcast sql \"SELECT ...\")",
                f"  online      {self.redis_url}",
                f"  logs        {self.logs}",
                "Ctrl-C stops everything."]

    # -- 3. watch --------------------------------------------------------------------------

    def failed(self) -> str | None:
        """Why a watched child is gone, or None while all run (or ended as they should:
        a flow reading a replay file exits 0 at its end; the API keeps serving)."""
        for name in self.CHILDREN:
            p = self.children.get(name)
            reads_replay = self.settings.replay_path is not None and (
                name == "ingest" or (name == "features" and not self.via_kafka))
            if p is None or p.poll() is None or (p.returncode == 0 and reads_replay):
                continue
            log = self.logs / f"{name}.log"
            return f"the {name} process exited with {p.returncode}: {_last_line(log)} (log: {log})"
        return None

    def tick(self, now: float) -> str | None:
        """One turn of the watch loop: start a training run when one is due, and return
        a new status line every STATUS_EVERY_S (else None)."""
        if self.train_every and now >= self._next_train and (self.trainer is None or self.trainer.poll() is not None):
            self.trainer = self.spawn("train", [sys.executable, "-m", "tickcast.cli", "train", "--quiet"])
            self._next_train = now + self.train_every
        if now < self._next_status:
            return None
        self._next_status = now + STATUS_EVERY_S
        return self.status_line()

    def start_watch(self) -> None:
        """Open the offline store read-only for the status line; first training after
        ``train_every`` seconds."""
        from tickcast.stores.offline import open_offline

        self._next_train = time.monotonic() + self.train_every
        self._next_status = 0.0
        self._store = open_offline(self.settings.offline_url, read_only=True)

    def status_line(self) -> str:
        """trades/s over the newest minute of candles, candles written, the last prediction."""
        import json
        import urllib.parse
        import urllib.request

        symbol = self.settings.symbols[0]
        n_candles, rate, last = 0, 0.0, "no prediction yet"
        try:
            n_candles, last_min = self._store.query(
                "SELECT count(), sumIf(trades, window_start >= (SELECT max(window_start) FROM candles) "
                "- INTERVAL 60 SECOND) FROM candles").result_rows[0]
            rate = float(last_min or 0) / 60.0
            q = urllib.parse.urlencode({"symbol": symbol})
            pr = json.loads(urllib.request.urlopen(f"{self.url}/predict?{q}", timeout=1).read())
            last = f"{symbol} {pr['predicted_price']:.2f} by {pr['model']['name']}@{pr['model']['version'][:24]}"
        except Exception:  # noqa: BLE001 - the status line is best effort
            pass
        return f"  {rate:7.1f} trades/s | {n_candles:>7} candles | {last}"

    # -- 4. stop ---------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop everything started, in order; safe after a partial start."""
        if self.trainer is not None:
            _stop(self.trainer, *STOP_TRAINER)
        if "api" in self.children:
            _stop(self.children["api"], *STOP_API)
        for name in ("news", "ingest", "features"):  # sources first, so the flows see no half-sent data
            if name in self.children:
                _stop(self.children[name], *STOP_FLOW)
        if self.broker is not None:
            self.broker.stop()
        if self.s3 is not None:
            self.s3.stop()
        if self.started_valkey:
            from tickcast.embedded import stop_valkey

            stop_valkey(self.data_dir)
        if self._store is not None:
            with contextlib.suppress(Exception):
                self._store.close()


def cmd_up(args: argparse.Namespace) -> int:
    """Everything on one machine (see the module doc): start, wait until the API
    answers, print the banner and a status line until Ctrl-C/SIGTERM or a failed
    child, then stop in order."""
    overrides: dict[str, str] = {}
    if args.source:
        overrides["TICKCAST_SOURCE"] = args.source
    if args.symbols:
        overrides["TICKCAST_SYMBOLS"] = args.symbols
    if args.data_dir:
        overrides["TICKCAST_DATA_DIR"] = args.data_dir
    settings = Settings.from_env({**os.environ, **overrides})
    stack = Stack(settings, overrides, kafka=args.kafka, train_every=args.train_every)
    stop = {"now": False}

    def _on_signal(signum: int, frame: object) -> None:
        stop["now"] = True

    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    try:
        stack.start()
        why = stack.wait_ready(lambda: stop["now"])
        if why:
            print(f"tickcast up: {why}", file=sys.stderr)
            return 1
        if stop["now"]:
            return 0
        print("\n".join(stack.banner()), flush=True)
        stack.start_watch()
        while not stop["now"]:
            time.sleep(WATCH_EVERY_S)
            why = stack.failed()
            if why:
                print(f"\ntickcast up: {why}", file=sys.stderr)
                return 1
            line = stack.tick(time.monotonic())
            if line is not None:
                print("\r" + line[:150].ljust(150), end="", flush=True)
        return 0
    finally:
        print("\nstopping …", flush=True)
        stack.stop()
        print("stopped.")


def _setup(p: argparse.ArgumentParser) -> None:
    p.add_argument("--source", help="kraken | kafka | sim | replay:FILE (default: $TICKCAST_SOURCE or kraken)")
    p.add_argument("--symbols", help="comma-separated Kraken v2 symbols (default: BTC/USD,ETH/USD)")
    p.add_argument("--data-dir", help="directory for every embedded store (default: ./data)")
    p.add_argument("--kafka", action="store_true",
                   help="put Kafka between ingestion and the feature flow: TICKCAST_KAFKA_BROKERS if set, else an "
                   "embedded tansu broker on an embedded SeaweedFS S3 (durable and exact, but slow: consumer lag of "
                   "seconds at 100 trades/s; for demos of the Kafka path)")
    p.add_argument("--train-every", type=float, default=600.0,
                   help="seconds between training runs (gated promotion; 0 = never; default 600)")


UP = Command(
    "up", cmd_up, _setup, help="run the whole system locally (what `make run` starts)", epilog=EPILOG,
    description="Starts, under the data dir: Valkey, dataflows.features (source -> candles, features, "
    "online learning -> stores), the API on gunicorn and periodic training. With --kafka: ingestion into "
    "Kafka (dataflows.ingest) and the feature flow reading it, on TICKCAST_KAFKA_BROKERS or an "
    "embedded broker (tansu on SeaweedFS S3). Prints the URLs and a live status line; logs go to "
    "DATA_DIR/logs. Ctrl-C stops everything; `up` again resumes from Bytewax recovery. --source kafka reads "
    "an existing topic.")
