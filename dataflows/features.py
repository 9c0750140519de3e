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

import sys
from datetime import UTC, datetime, timedelta

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.operators import StatefulLogic

from dataflows.sinks import OfflineSink, OnlineSink, RegistrySink
from dataflows.sources import DEAD, is_live, make_source, now_us, parse_chunk
from tickcast.config import ConfigError, Settings
from tickcast.pipeline import StepOutput, SymbolPipeline
from tickcast.schema import Trade


class PipelineLogic(StatefulLogic[list[Trade], StepOutput, SymbolPipeline]):
    """Drives one symbol's :class:`SymbolPipeline` inside Bytewax.

    Live sources advance the watermark with the wall clock too, so a quiet market
    still gets its (empty) candles: once no newer trade has arrived for ``idle_us``
    (default: one window), watermark = newest event + (wall time since it arrived -
    idle_us) - lateness. While trades flow the watermark is their event time alone.
    The idle grace is what keeps a *stalled* flow honest: a consumer that falls
    behind (a busy machine, a pause, a Kafka backlog) sees no trade for a while and
    then a burst of older ones; without the grace, wall time would have closed their
    windows and they would all be late. Stalls shorter than lateness + grace cost
    nothing; longer ones turn trades into late-trade dead letters (recorded and
    counted, never dropped). Replays are driven by event time alone (deterministic)."""

    def __init__(self, pipe: SymbolPipeline, live: bool, idle_us: int | None = None) -> None:
        self.pipe = pipe
        self.live = live
        self.idle_us = pipe.windower.window_us if idle_us is None else idle_us
        # wall-clock anchor; never restored from a snapshot (time passed while down)
        self._anchor_event: int | None = pipe.windower.max_event_us
        self._anchor_wall = now_us()

    def on_item(self, value: list[Trade]) -> tuple[list[StepOutput], bool]:
        if not self.pipe.symbol and value:
            self.pipe.bind(value[0].symbol)
        before = self.pipe.windower.max_event_us
        out = self.pipe.on_trades(value, now_us())
        if self.live and self.pipe.windower.max_event_us != before:
            self._anchor_event = self.pipe.windower.max_event_us
            self._anchor_wall = now_us()
        return ([out] if out else []), StatefulLogic.RETAIN

    def _watermark(self) -> int | None:
        if self._anchor_event is None:
            return None
        idle = max(0, now_us() - self._anchor_wall - self.idle_us)
        return self._anchor_event + idle - self.pipe.windower.lateness_us

    def on_notify(self) -> tuple[list[StepOutput], bool]:
        wm = self._watermark()
        out = self.pipe.on_watermark(wm) if wm is not None else StepOutput()
        return ([out] if out else []), StatefulLogic.RETAIN

    def notify_at(self) -> datetime | None:
        if not self.live or self._anchor_event is None:
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
    flow = Dataflow("tickcast_features")
    raw = op.input("source", flow, make_source(settings))
    parsed = op.flat_map("parse", raw, parse_chunk)
    split = op.branch("split_dead", parsed, lambda kv: kv[0] != DEAD)
    lateness_us = settings.lateness_us

    def builder(resume: SymbolPipeline | None) -> PipelineLogic:
        # the key is not passed to the builder; the pipeline learns its symbol lazily
        pipe = resume if resume is not None else SymbolPipeline(
            "", settings.window_seconds, lateness_us, horizon_seconds=settings.horizon_seconds,
            online_model=settings.online_model, snapshot_every=settings.snapshot_every,
        )
        return PipelineLogic(pipe, live)

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
        print(f"tickcast: {e}", file=sys.stderr)
        raise SystemExit(2) from None


flow = build_flow(_settings_or_exit())
