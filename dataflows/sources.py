"""Bytewax sources of raw Kraken v2 messages.

Every source emits the same item: a :data:`RawChunk` ``(source_name, [(position,
raw_message_bytes), ...])``. Parsing happens in one place downstream
(:func:`parse_chunk`, used by both flows): raw Kraken v2 messages through
``tickcast.kraken.parse_message``, except chunks whose source name starts with
``kafka:``, which carry tickcast's normalised trade JSON (``tickcast.wire``). So the
replay file, the simulator and the live socket all go through exactly the same code. Chunks amortise Bytewax's per-item
overhead; positions identify each message so dead letters are not duplicated when
a recovered flow re-reads a stretch.

Delivery: at-least-once with exact resume (recovery state = byte offset / simulator
state after the last emitted chunk); the sinks are idempotent, so the stores end
exactly-once.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition

from dataflows.chunks import HEARTBEAT, HEARTBEAT_EVERY_S, RawChunk, heartbeat_chunk
from tickcast.config import Settings
from tickcast.kraken import parse_message
from tickcast.schema import DeadLetter, Trade, safe_iso, trade_json


class _ReplayPartition(StatefulSourcePartition[RawChunk, int]):
    def __init__(self, path: Path, name: str, offset: int, chunk_lines: int) -> None:
        self._f = path.open("rb")
        self._f.seek(offset)
        self._offset = offset
        self._name = name
        self._chunk = chunk_lines

    def next_batch(self) -> list[RawChunk]:
        lines: list[tuple[str, bytes]] = []
        f = self._f
        off = self._offset
        for _ in range(self._chunk):
            line = f.readline(MAX_MESSAGE_BYTES + 1)
            if not line:
                break
            pos = off
            off += len(line)
            if len(line) > MAX_MESSAGE_BYTES and not line.endswith(b"\n"):
                # a line longer than any message: skip the rest in pieces (memory stays
                # bounded whatever its length); parse_chunk makes the prefix a dead letter
                while (more := f.readline(1 << 20)):
                    off += len(more)
                    if more.endswith(b"\n"):
                        break
            line = line.rstrip(b"\r\n")
            if line.strip():
                lines.append((str(pos), line))
        if off == self._offset:
            raise StopIteration
        self._offset = off
        return [(self._name, lines)] if lines else []

    def snapshot(self) -> int:
        return self._offset

    def close(self) -> None:
        self._f.close()


class ReplaySource(FixedPartitionedSource[RawChunk, int]):
    """A JSON Lines file of raw Kraken v2 messages (format: the README's "Replay files"
    section), read once to EOF.

    One partition (a file is sequential); the symbols fan out to all workers
    downstream. Resume state: the byte offset after the last emitted chunk."""

    def __init__(self, path: Path, chunk_lines: int = 2000) -> None:
        self.path = path
        self.chunk_lines = chunk_lines

    def list_parts(self) -> list[str]:
        return [f"replay:{self.path}"]

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> _ReplayPartition:
        return _ReplayPartition(self.path, for_part, resume_state or 0, self.chunk_lines)


class _SimPartition(StatefulSourcePartition[RawChunk, Any]):
    def __init__(self, settings: Settings, state: Any) -> None:
        from tickcast.sim import MarketSimulator, SimParams

        if state is None:
            now_us = time.time_ns() // 1000
            state = MarketSimulator(
                list(settings.symbols), settings.sim_seed, now_us, SimParams(rate=settings.sim_rate)
            )
        self._sim = state
        self._seq = 0
        self._beat_us = 0
        self._interval = timedelta(milliseconds=100)
        self._next_awake = datetime.now().astimezone()

    def next_batch(self) -> list[RawChunk]:
        from tickcast.kraken import trades_to_message

        now_us = time.time_ns() // 1000
        self._next_awake = datetime.now().astimezone() + self._interval
        trades = self._sim.until(now_us)
        beat: list[RawChunk] = []
        if now_us - self._beat_us >= HEARTBEAT_EVERY_S * 1e6:  # every trade until now is emitted
            self._beat_us = now_us
            beat = [heartbeat_chunk(now_us)]
        if not trades:
            return beat
        msgs: list[tuple[str, bytes]] = []
        i = 0
        n = len(trades)
        # one message per (symbol, timestamp) run, as Kraken groups them
        while i < n:
            j = i + 1
            while j < n and trades[j].symbol == trades[i].symbol and trades[j].ts_us == trades[i].ts_us:
                j += 1
            group = trades[i:j]
            msgs.append((f"{group[0].symbol}#{group[0].trade_id}", orjson.dumps(trades_to_message(group))))
            i = j
        return [("sim", msgs), *beat]

    def next_awake(self) -> datetime:
        return self._next_awake

    def snapshot(self) -> Any:
        return self._sim


class SimSource(FixedPartitionedSource[RawChunk, Any]):
    """The built-in market simulator, paced to the wall clock (live-like)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def list_parts(self) -> list[str]:
        return ["sim"]

    def build_part(self, step_id: str, for_part: str, resume_state: Any | None) -> _SimPartition:
        return _SimPartition(self.settings, resume_state)


def make_source(settings: Settings) -> FixedPartitionedSource[Any, Any]:
    """The source named by ``TICKCAST_SOURCE``. Live sources plug in here."""
    path = settings.replay_path
    if path is not None:
        return ReplaySource(path)
    if settings.source == "sim":
        return SimSource(settings)
    if settings.source == "kraken":
        from dataflows.kraken_source import KrakenSource

        return KrakenSource(settings)
    if settings.source == "kafka":
        from dataflows.kafka.source import KafkaTradeSource

        return KafkaTradeSource(settings)
    raise ValueError(f"unknown source {settings.source!r}")  # Settings validated it already


def is_live(settings: Settings) -> bool:
    """Live sources advance event time with the wall clock; replays do not, nor does a
    Kafka read that ends at the topic's end (``TICKCAST_KAFKA_STOP_AT_END=1``: a
    backfill or a test, which must not depend on how fast the consumer is)."""
    if settings.source == "kafka":
        return not settings.kafka_stop_at_end
    return settings.replay_path is None


class DeadLetters(list[DeadLetter]):
    """The value of a dead-letter item: the flows tell dead letters from trades by this
    type, never by a key value (any string a record carries could be a key)."""


DEAD = "dead"  # the key dead-letter items travel under (irrelevant for telling them apart)
MIN_TRADE_US = 1_230_940_800_000_000  # 2009-01-03T00:00:00Z, Bitcoin's first block: no trade before it
MAX_MESSAGE_BYTES = 1 << 20  # a Kraken trade message is ~200 bytes per trade; longer lines are refused
MAX_DEAD_PER_CHUNK = 100  # dead letters kept per chunk; the rest are counted in one summary letter


def now_us() -> int:
    return time.time_ns() // 1000


def is_dead(kv: tuple[str, Any]) -> bool:
    return isinstance(kv[1], DeadLetters)


class TradeGate:
    """What a well-formed trade must also be to enter the pipelines: of a configured
    symbol (``TICKCAST_SYMBOLS``), and stamped at a sensible time — not before 2009 and
    not more than ``TICKCAST_MAX_AHEAD_SECONDS`` after it was received. Anything else
    is a dead letter naming why, so one record can neither create a pipeline, model,
    registry entry or Redis key of its own, nor make a pipeline fill or close windows
    up to a time that has not come (one empty candle per window: a day ahead was 8,638
    candles; centuries ahead, memory ran out).

    >>> g = TradeGate(("BTC/USD",), 60.0)
    >>> t = Trade("BTC/USD", 1, 1_700_000_000_000_000, 100.0, 1.0, "buy", "limit")
    >>> g.reason(t, 1_700_000_000_000_000) is None
    True
    >>> g.reason(t._replace(symbol="\\x00dead"), 1_700_000_000_000_000)
    "symbol '\\\\x00dead' is not one of TICKCAST_SYMBOLS (BTC/USD)"
    >>> g.reason(t, 1_699_999_000_000_000)
    'trade time 2023-11-14T22:13:20.000000Z is 1000 s after it was received (2023-11-14T21:56:40.000000Z; TICKCAST_MAX_AHEAD_SECONDS=60)'
    """

    def __init__(self, symbols: tuple[str, ...] | frozenset[str], max_ahead_seconds: float) -> None:
        self.symbols = frozenset(symbols)
        self._listed = ",".join(sorted(self.symbols))
        self.max_ahead_us = int(max_ahead_seconds * 1_000_000)

    @classmethod
    def from_settings(cls, settings: Settings) -> TradeGate:
        return cls(settings.symbols, settings.max_ahead_seconds)

    def reason(self, t: Trade, received_us: int) -> str | None:
        if t.symbol not in self.symbols:
            return f"symbol {t.symbol[:40]!r} is not one of TICKCAST_SYMBOLS ({self._listed})"
        if t.ts_us < MIN_TRADE_US:
            return f"trade time {safe_iso(t.ts_us)} is before 2009-01-03 (no crypto trade is that old)"
        if t.ts_us > received_us + self.max_ahead_us:
            return (f"trade time {safe_iso(t.ts_us)} is {(t.ts_us - received_us) / 1e6:.0f} s after it was received "
                    f"({safe_iso(received_us)}; TICKCAST_MAX_AHEAD_SECONDS={self.max_ahead_us / 1e6:g})")
        return None


def parse_chunk(chunk: RawChunk, gate: TradeGate | None = None) -> list[tuple[str, Any]]:
    """Parse a chunk of raw messages into per-symbol trade lists (+ one dead-letter item).

    With a ``gate``, trades it refuses become dead letters. At most
    :data:`MAX_DEAD_PER_CHUNK` dead letters are kept per chunk; a flood's rest is
    counted in one summary letter, so garbage costs bounded storage."""
    source, lines = chunk
    if source == HEARTBEAT:
        return []
    received = now_us()
    parse = parse_message
    if source.startswith("kafka:"):
        from tickcast.wire import decode_trade as parse
    by_symbol: dict[str, list[Trade]] = {}
    dead = DeadLetters()
    for pos, raw in lines:
        if len(raw) > MAX_MESSAGE_BYTES:
            dead.append(DeadLetter(received, source, bytes(raw[:4096]).decode(errors="replace"),
                                   f"message longer than {MAX_MESSAGE_BYTES:,} bytes (not parsed; first 4 kB kept)",
                                   pos))
            continue
        trades, bad = parse(raw, source, received, pos)
        for t in trades:
            if gate is not None and (why := gate.reason(t, received)) is not None:
                dead.append(DeadLetter(received, source, trade_json(t), why, f"{pos}/{t.trade_id}"))
                continue
            lst = by_symbol.get(t.symbol)
            if lst is None:
                by_symbol[t.symbol] = [t]
            else:
                lst.append(t)
        if bad:
            dead.extend(bad)
    out: list[tuple[str, Any]] = list(by_symbol.items())
    if dead:
        if len(dead) > MAX_DEAD_PER_CHUNK:
            n = len(dead) - MAX_DEAD_PER_CHUNK
            last = dead[-1]
            kept = DeadLetters(dead[:MAX_DEAD_PER_CHUNK])
            kept.append(DeadLetter(received, source, "", f"{n} more dead letters in this chunk were not kept "
                                   f"(positions {dead[MAX_DEAD_PER_CHUNK].position} .. {last.position}); "
                                   f"the first {MAX_DEAD_PER_CHUNK} are stored", f"{last.position}+{n}"))
            dead = kept
        out.append((DEAD, dead))
    return out
