"""The live Kraken source of the feature flow (``TICKCAST_SOURCE=kraken``).

:class:`KrakenSource` is a Bytewax ``FixedPartitionedSource`` with one partition
(one WebSocket connection carries every symbol; the symbols fan out to the workers
downstream). It emits :data:`~dataflows.chunks.RawChunk` items
``("kraken", [(position, raw_v2_message), ...])`` with positions like
``"BTC/USD#103436768"`` (first trade id of the message), so the feature flow parses
live data with exactly the code it uses for replays.

Following Bytewax's guidance for async inputs, the asyncio client
(:class:`~tickcast.live.kraken_client.KrakenClient`) runs on its own event loop in a
background thread (so pings, heartbeats and the silence timer keep running while the
worker is busy) and hands events over a queue; ``next_batch`` only drains that queue
and never blocks.

**Delivery guarantee.** The client delivers every trade exactly once per run (dedupe
by ``(symbol, trade_id)``, gaps filled from REST). The recovery state is the last
*emitted* ``(trade_id, time)`` per symbol; a flow resumed from it re-subscribes, fills
from REST everything after it — what was missed while the flow was down and what was
emitted after the last snapshot — and drops what is at or below it. So the source is
at-least-once across restarts with an exact resume point, and the idempotent sinks
make the stores exactly-once.

Failures at start (no network, a symbol Kraken rejects) end the process with exit
status 1 / 2 and one line on stderr, not a Bytewax traceback.

**Ingestion metrics.** The client's counters (connects, reconnects, gaps, filled and
unfilled gap trades, duplicates dropped, malformed frames) go to the offline store's
``ingest_stats`` table as deltas, one row every ``TICKCAST_STATS_SECONDS`` (default
10) and one at close, keyed by ``source``, a random ``session`` per partition start,
and ``ts``. ``next_batch`` only *collects* a row when one is due (seven integer
subtractions); a small writer thread of
:class:`~tickcast.live.ingest_stats.IngestStatsRecorder` inserts it, so the worker
never waits for the store (a Parquet part or a ClickHouse insert). The rows do not go
through the dataflow on purpose: they describe this process's connection, not the
market data, so they need no keying, ordering or recovery, and routing them would
change the item type every source and both flows (``ingest``, ``features``) share.
On a clean stop (SIGINT: Bytewax calls ``close``; also before a fatal client error
ends the process) the client is stopped first, then the final row is written, so the
rows of a session add up exactly to the client's totals. A crash (``kill -9``, or
SIGTERM, which Bytewax does not turn into ``close``) loses at most the current
interval's counts.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition

from dataflows.chunks import HEARTBEAT_EVERY_S, RawChunk, heartbeat_chunk
from tickcast.config import Settings
from tickcast.fatal import fatal
from tickcast.kraken import KrakenError
from tickcast.live.ingest_stats import IngestStatsRecorder
from tickcast.live.kraken_client import ClientConfig, ClientThread, NetworkUnavailable
from tickcast.schema import MAX_TRADE_ID_JUMP

State = dict[str, tuple[int, int]]  # symbol -> (last emitted trade_id, its time in µs)
_IDLE_POLL = timedelta(milliseconds=5)  # how soon to look again when the queue was empty
_MAX_EVENTS = 5_000  # per batch


def _exit_code(e: BaseException) -> int:
    """1 for a network that is not there, else 2 (a setting or symbol Kraken refuses)."""
    return 1 if isinstance(e, NetworkUnavailable) else 2


class _KrakenPartition(StatefulSourcePartition[RawChunk, State]):
    def __init__(self, settings: Settings, resume: State | None) -> None:
        cfg = ClientConfig.from_settings(settings)
        self._state: State = {s: (int(v[0]), int(v[1])) for s, v in (resume or {}).items()}
        self._bg = ClientThread(cfg, resume=self._state)
        # before the client starts: the first row counts the first connect
        self.stats = IngestStatsRecorder(settings.offline_url, "kraken", self._bg.client.stats.as_dict,
                                         settings.stats_seconds)
        self._bg.start()
        try:
            # bounded: connect + every ack, or the client's own error
            self._bg.wait_ready(cfg.open_timeout_s + cfg.ack_timeout_s + 5)
        except KrakenError as e:
            fatal(e, _exit_code(e), now=True)  # one line, not a Bytewax panic
        self._awake: datetime | None = None
        self._beat_at = 0.0

    def _beat(self, complete: int | None, handled_us: int, drained_all: bool) -> list[RawChunk]:
        """A heartbeat when due and true: the client was complete (subscribed, snapshots
        handled, no gap being filled) when the queue was drained, and everything received
        until ``handled_us`` (the newest fully handled frame: Kraken's own heartbeats keep
        it moving; a silent socket stops it) was in the queue."""
        now = time.monotonic()
        if complete is None or not drained_all or handled_us <= 0 or now - self._beat_at < HEARTBEAT_EVERY_S:
            return []
        self._beat_at = now
        return [heartbeat_chunk(handled_us)]

    def next_batch(self) -> list[RawChunk]:
        self.stats.poll()  # collects a row when one is due; a thread writes it
        # read before draining: if the client was complete then, every trade it had
        # received is in the queue now
        client = self._bg.client
        complete, handled_us = client.complete_since_us, client.handled_rx_us
        try:
            events = self._bg.drain(_MAX_EVENTS)
        except KrakenError as e:
            self.stats.close(timeout_s=5.0)  # the client has stopped: its final counts
            fatal(e, _exit_code(e), now=True)  # one line, not a Bytewax panic
        beat = self._beat(complete, handled_us, len(events) < _MAX_EVENTS)
        if not events:
            self._awake = datetime.now(UTC) + _IDLE_POLL
            return beat
        self._awake = None
        state = self._state
        msgs: list[tuple[str, bytes]] = []
        for ev in events:
            if ev.kind == "trades":
                msgs.append((ev.position, ev.raw))
                cur = state.get(ev.trades[0].symbol)
                # an implausible id (the client passes it on for the pipeline to refuse) is
                # no resume point: resuming from it would drop every genuine trade
                ok = [t for t in ev.trades if cur is None or t.trade_id <= cur[0] + MAX_TRADE_ID_JUMP]
                if ok:
                    last = max(ok, key=lambda t: t.trade_id)
                    if cur is None or last.trade_id > cur[0]:
                        state[last.symbol] = (last.trade_id, last.ts_us)
            elif ev.kind == "malformed":
                msgs.append((ev.position, ev.raw))
        return [("kraken", msgs), *beat] if msgs else beat

    def next_awake(self) -> datetime | None:
        return self._awake

    def snapshot(self) -> State:
        return dict(self._state)

    def close(self) -> None:
        self._bg.stop()
        self.stats.close()  # after the client stopped: nothing is counted after the final row


class KrakenSource(FixedPartitionedSource[RawChunk, State]):
    """Live Kraken WebSocket v2 trades of ``settings.symbols`` with REST gap fill."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def list_parts(self) -> list[str]:
        return ["kraken"]

    def build_part(self, step_id: str, for_part: str, resume_state: State | None) -> _KrakenPartition:
        return _KrakenPartition(self.settings, resume_state)
