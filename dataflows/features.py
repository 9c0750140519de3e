"""The feature dataflow: raw Kraken v2 messages -> trades -> candles -> features
-> offline store (ClickHouse) + online store (Redis).

Run it with ``python -m bytewax.run dataflows.features`` (configured by
``TICKCAST_*`` environment variables; see README). With
``TICKCAST_SOURCE=replay:<file>`` it reads the file, closes every open window at
EOF, writes everything and exits 0.

Shape::

    input(source) -> flat_map(parse) -> branch(trades | dead letters)
    trades: keyed by symbol -> stateful(SymbolPipeline) -> candles, features, late
            trades, online predictions, model metrics, drift events, model snapshots
    all -> offline sink;  newest features/predictions -> online sink;
    snapshots -> registry sink

Scaling: ``-w N`` threads or ``-i/-a`` processes; symbols are spread over workers
by key. Recovery: ``-r DIR -s SECS -b SECS`` after ``python -m bytewax.recovery
DIR N``; per-symbol state (open windows, indicator state) is snapshotted and the
source resumes where the last epoch ended; the sinks are idempotent.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.operators import StatefulLogic

from dataflows.chunks import PROGRESS, RawChunk
from dataflows.process import relax_gc
from dataflows.sinks import OfflineSink, OnlineSink, RegistrySink
from dataflows.sources import (
    DEAD,
    TradeGate,
    is_dead,
    is_live,
    make_source,
    now_us,
    parse_chunk,
)
from tickcast.config import ConfigError, Settings
from tickcast.fatal import fatal
from tickcast.pipeline import StepOutput, SymbolPipeline
from tickcast.schema import Trade


@dataclass(frozen=True, slots=True)
class SourceProgress:
    """A Kafka partition's report, sent to every symbol's pipeline: every trade the
    ingest received before ``complete_until_us`` (its wall clock, µs) has been read from
    this partition — or ``None``: not known (behind, or the broker has not answered
    lately). ``partitions``: how many partitions the topic has."""

    symbol: str
    partition: int
    partitions: int
    complete_until_us: int | None


def progress_items(chunk: RawChunk, symbols: tuple[str, ...]) -> list[tuple[str, SourceProgress]]:
    """A :data:`dataflows.sources.PROGRESS` chunk as one item per configured symbol."""
    out: list[tuple[str, SourceProgress]] = []
    for pos, raw in chunk[1]:
        part, _, n = pos.partition("/")
        until = int(raw)
        for sym in symbols:
            out.append((sym, SourceProgress(sym, int(part), int(n), None if until < 0 else until)))
    return out


class PipelineLogic(StatefulLogic[list[Trade] | SourceProgress, StepOutput, SymbolPipeline]):
    """Drives one symbol's :class:`SymbolPipeline` inside Bytewax.

    Live sources advance the watermark with the wall clock too, so a quiet market
    still gets its (empty) candles: once no newer trade has arrived for ``idle_us``
    (default: one window), watermark = newest event + (wall time since it arrived -
    idle_us) - lateness. While trades flow the watermark is their event time alone.
    The idle grace is what keeps a *stalled* flow honest: a consumer that falls
    behind (a busy machine, a pause) sees no trade for a while and then a burst of
    older ones; without the grace, wall time would have closed their windows and they
    would all be late. Replays are driven by event time alone (deterministic).

    ``lag_aware`` (the Kafka source): "wall time" is not this process's clock but how
    far the stream is known complete: the smallest ``complete_until_us`` over every
    partition of the topic (:class:`SourceProgress`; the ingest's heartbeats, written
    into the topic behind its trades). A consumer that is behind (starved by a slow
    broker, restarted, reading a backlog) reads old heartbeats; an ingest that is down,
    reconnecting to Kraken or filling a gap from REST writes none; a broker that is
    down answers nothing — in every case the clock stands still and no window is closed
    early. Until every partition has reported (e.g. after a restart) it stands still too."""

    def __init__(self, pipe: SymbolPipeline, live: bool, idle_us: int | None = None,
                 lag_aware: bool = False) -> None:
        self.pipe = pipe
        self.live = live
        self.lag_aware = lag_aware
        self.idle_us = pipe.windower.window_us if idle_us is None else idle_us
        # wall-clock anchor; never restored from a snapshot (time passed while down)
        self._anchor_event: int | None = pipe.windower.max_event_us
        self._anchor_wall = now_us()
        self._parts: dict[int, int | None] = {}  # partition -> complete until (lag_aware)
        self._n_parts = 0

    def _clock(self) -> int | None:
        """Now, for the idle computation: this process's clock, or (lag_aware) how far
        the stream is complete; None while unknown."""
        if not self.lag_aware:
            return now_us()
        if not self._n_parts or len(self._parts) < self._n_parts:
            return None
        until: int | None = None
        for v in self._parts.values():
            if v is None:
                return None
            until = v if until is None else min(until, v)
        return None if until is None else min(until, now_us())  # never ahead of this host's clock

    def on_item(self, value: list[Trade] | SourceProgress) -> tuple[list[StepOutput], bool]:
        if isinstance(value, SourceProgress):
            if not self.pipe.symbol:
                self.pipe.bind(value.symbol)
            self._n_parts = value.partitions
            self._parts[value.partition] = value.complete_until_us
            return self.on_notify()
        if not self.pipe.symbol and value:
            self.pipe.bind(value[0].symbol)
        before = self.pipe.windower.max_event_us
        out = self.pipe.on_trades(value, now_us())
        if self.live and self.pipe.windower.max_event_us != before:
            self._anchor_event = self.pipe.windower.max_event_us
            self._anchor_wall = now_us()
        return ([out] if out else []), StatefulLogic.RETAIN

    def _watermark(self) -> int | None:
        clock = self._clock()
        if self._anchor_event is None or clock is None:
            return None
        idle = max(0, clock - self._anchor_wall - self.idle_us)
        return self._anchor_event + idle - self.pipe.windower.lateness_us

    def on_notify(self) -> tuple[list[StepOutput], bool]:
        wm = self._watermark() if self.live else None
        out = self.pipe.on_watermark(wm) if wm is not None else StepOutput()
        return ([out] if out else []), StatefulLogic.RETAIN

    def notify_at(self) -> datetime | None:
        # lag_aware: the clock moves only with SourceProgress items, which call on_notify
        if not self.live or self.lag_aware or self._anchor_event is None:
            return None
        due = self.pipe.windower.next_close_us()
        if due is None:
            return None
        wall = self._anchor_wall + self.idle_us + (due - self._anchor_event)
        return datetime.fromtimestamp(wall / 1e6, tz=UTC) + timedelta(milliseconds=1)

    def on_eof(self) -> tuple[list[StepOutput], bool]:
        out = self.pipe.on_eof()
        return ([out] if out else []), StatefulLogic.RETAIN

    def snapshot(self) -> SymbolPipeline:
        return self.pipe


def build_flow(settings: Settings) -> Dataflow:
    live = is_live(settings)
    lag_aware = live and settings.source == "kafka"
    flow = Dataflow("tickcast_features")
    raw = op.input("source", flow, make_source(settings))
    gate = TradeGate.from_settings(settings)  # configured symbols, sane times: else dead letters
    symbols = settings.symbols

    def parse(chunk: RawChunk) -> list[tuple[str, Any]]:
        if chunk[0].startswith(PROGRESS):
            return progress_items(chunk, symbols)
        return parse_chunk(chunk, gate)

    parsed = op.flat_map("parse", raw, parse)
    split = op.branch("split_dead", parsed, lambda kv: not is_dead(kv))
    lateness_us = settings.lateness_us
    watcher: list[Any] = []  # the production-model watcher, started by the first pipeline

    def production() -> Any:
        if settings.online_model == "off":
            return None
        if not watcher:
            from models.production import ProductionWatcher
            from models.registry import registry_from_settings

            watcher.append(ProductionWatcher(registry_from_settings(settings, writer=True), symbols).start())
        return watcher[0]

    def builder(resume: SymbolPipeline | None) -> PipelineLogic:
        # the key is not passed to the builder; the pipeline learns its symbol lazily
        pipe = resume if resume is not None else SymbolPipeline(
            "", settings.window_seconds, lateness_us, horizon_seconds=settings.horizon_seconds,
            online_model=settings.online_model, snapshot_every=settings.snapshot_every,
            dedupe=settings.source == "kafka",  # the topic is at-least-once: repeats dropped by trade_id
            interval_levels=settings.interval_levels,
        )
        pipe.production = production()  # live scoreboard: the promoted model, scored like the online one
        return PipelineLogic(pipe, live, lag_aware=lag_aware)

    outs = op.stateful("pipeline", split.trues, builder)
    dead = op.map("dead_out", split.falses, lambda kv: (DEAD, StepOutput(dead_letters=kv[1])))
    everything = op.merge("all_out", outs, dead)
    values = op.map("values", everything, lambda kv: kv[1])
    fresh = op.filter("has_features", values, lambda o: bool(o.features or o.predictions))
    # the online store first: operators run in the order they are built, so the Redis
    # write of a new feature row does not wait for the Parquet part (fsync) of the same batch
    op.output("online", fresh, OnlineSink(settings))
    op.output("offline", everything, OfflineSink(settings.offline_url, max_delay_s=0.0 if live else 5.0))
    snaps = op.filter("has_snapshots", values, lambda o: bool(o.snapshots))
    op.output("registry", snaps, RegistrySink(settings))
    return flow


def _settings_or_exit() -> Settings:
    try:
        return Settings.from_env()
    except ConfigError as e:
        fatal(e, 2)


relax_gc()
flow = build_flow(_settings_or_exit())
