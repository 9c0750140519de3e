"""Reference for benchmarks/bench_news.py: the news flow's reader and JSON parsing
(validation, time stamps) only — no dedupe, symbol mapping, scoring or stores.

    TICKCAST_NEWS_SOURCE=replay:FILE python -m bytewax.run benchmarks.minimal_news_flow
"""

from __future__ import annotations

import os
from pathlib import Path

import bytewax.operators as op
from bytewax.dataflow import Dataflow

from dataflows.news import NewsReplaySource
from tickcast.news.parse import parse_line

path = Path(os.environ["TICKCAST_NEWS_SOURCE"][len("replay:"):])
flow = Dataflow("minimal_news")
raw = op.input("source", flow, NewsReplaySource(path))
parsed = op.map("parse", raw, lambda c: sum(not isinstance(parse_line(b, delay_us=0), str) for _, b in c.lines))
op.inspect("drop", op.filter("never", parsed, lambda n: n < 0))
