"""Reference for the pipeline benchmark: a minimal, idiomatic Bytewax flow.

parse (the same Kraken parser) -> key by symbol -> fold_window (event-time tumbling
windows) -> OHLC; no features, no stores. Run with
``BENCH_REPLAY=file.jsonl python -m bytewax.run benchmarks.minimal_flow``.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta

import bytewax.operators as op
import bytewax.operators.windowing as win
from bytewax.connectors.files import FileSource
from bytewax.dataflow import Dataflow
from bytewax.operators.windowing import EventClock, TumblingWindower
from bytewax.outputs import DynamicSink, StatelessSinkPartition

from tickcast.kraken import parse_message
from tickcast.schema import Trade, us_to_dt

WINDOW = timedelta(seconds=int(os.environ.get("TICKCAST_WINDOW_SECONDS", "10")))


class _Count(StatelessSinkPartition[object]):
    def write_batch(self, items: list[object]) -> None:
        pass


class CountSink(DynamicSink[object]):
    def build(self, step_id: str, worker_index: int, worker_count: int) -> _Count:
        return _Count()


def trades(line: str) -> list[Trade]:
    return parse_message(line, "bench", 0)[0]


def builder() -> list[float]:
    return []


def folder(acc: list[float], t: Trade) -> list[float]:
    if not acc:
        return [t.price, t.price, t.price, t.price, t.qty]
    acc[1] = max(acc[1], t.price)
    acc[2] = min(acc[2], t.price)
    acc[3] = t.price
    acc[4] += t.qty
    return acc


def merger(a: list[float], b: list[float]) -> list[float]:
    return [a[0], max(a[1], b[1]), min(a[2], b[2]), b[3], a[4] + b[4]]


flow = Dataflow("minimal_ohlc")
lines = op.input("in", flow, FileSource(os.environ["BENCH_REPLAY"], batch_size=2000))
parsed = op.flat_map("parse", lines, trades)
keyed = op.key_on("key", parsed, lambda t: t.symbol)
clock = EventClock(lambda t: us_to_dt(t.ts_us), wait_for_system_duration=timedelta(0))
windower = TumblingWindower(length=WINDOW, align_to=datetime(1970, 1, 1, tzinfo=UTC))
ohlc = win.fold_window("ohlc", keyed, clock, windower, builder, folder, merger)
op.output("out", ohlc.down, CountSink())
