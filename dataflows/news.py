"""The news dataflow: news sources -> parse -> dedupe -> symbols -> sentiment -> stores.

Run it with ``python -m bytewax.run dataflows.news`` (CONTRACT §8), configured by
``TICKCAST_NEWS_SOURCE`` (``replay:<file>`` | ``rss:<url>[,<url>…]`` | ``cryptopanic`` |
``sim`` | ``off``; empty: follows ``TICKCAST_SOURCE``, see ``Settings.news_source_resolved``),
``TICKCAST_NEWS_SCORER``, ``TICKCAST_NEWS_DELAY_SECONDS`` and the other ``TICKCAST_NEWS_*``
variables (README, News). With ``replay:`` it processes the file, writes everything
and exits 0; ``off`` exits 0 at once.

Shape::

    input(source: NewsChunk) -> stateful "news" (one key: NewsProcessor = parse,
    dedupe by id, map to symbols, score) -> sink: publish_news(new items) + dead_letters

Delivery: at-least-once with exact resume, like the price flow. Recovery (``-r DIR -s
SECS -b SECS``) keeps the source position (replay byte offset; RSS ETags of emitted
fetches; simulator clock) and the deduplicator's ids; the sink flushes in
``snapshot()``, before an epoch's state is committed; ``news`` keeps one row per id,
dead letters one row per (source, position, reason, raw). So a restart duplicates
nothing and loses nothing.
"""

from __future__ import annotations

import logging
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from bytewax.operators import StatefulLogic
from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition

from dataflows.process import relax_gc
from dataflows.sources import _ReplayPartition
from tickcast.config import ConfigError, Settings
from tickcast.news.dedupe import Deduper
from tickcast.news.items import NewsItem
from tickcast.news.process import NewsProcessor, NewsStats
from tickcast.news.publish import publish_news
from tickcast.news.scoring import make_scorer
from tickcast.news.sources import CryptoPanicPoller, FeedPoller, NewsChunk, now_us
from tickcast.news.symbols import SymbolMapper, base_of
from tickcast.schema import DeadLetter

log = logging.getLogger("tickcast.news")
Out = tuple[list[NewsItem], list[DeadLetter]]


# -- sources ---------------------------------------------------------------------------

class _NewsReplayPartition(StatefulSourcePartition[NewsChunk, int]):
    """The price flow's replay reader (bounded lines, byte-offset resume), as NewsChunks."""

    def __init__(self, path: Path, name: str, offset: int) -> None:
        self._inner = _ReplayPartition(path, name, offset, 2000)

    def next_batch(self) -> list[NewsChunk]:
        return [NewsChunk(name, lines, [], [], False) for name, lines in self._inner.next_batch()]

    def snapshot(self) -> int:
        return self._inner.snapshot()

    def close(self) -> None:
        self._inner.close()


class NewsReplaySource(FixedPartitionedSource[NewsChunk, int]):
    def __init__(self, path: Path) -> None:
        self.path = path

    def list_parts(self) -> list[str]:
        return [f"replay:{self.path}"]

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> _NewsReplayPartition:
        return _NewsReplayPartition(self.path, for_part, resume_state or 0)


def _at(mono: float) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=max(0.0, mono - time.monotonic()))


class _RSSPartition(StatefulSourcePartition[NewsChunk, dict[str, tuple[str, str]]]):
    def __init__(self, poller: FeedPoller) -> None:
        self._p = poller
        self._committed = dict(poller.etags)

    def next_batch(self) -> list[NewsChunk]:
        out = []
        for chunk, url, state in self._p.poll():
            out.append(chunk)
            self._committed[url] = state  # emitted: its conditional state may be recovered
            self._p.etags[url] = state  # and the next request is conditional on it
        return out

    def next_awake(self) -> datetime:
        return _at(self._p.next_due())

    def snapshot(self) -> dict[str, tuple[str, str]]:
        return dict(self._committed)

    def close(self) -> None:
        self._p.close()


class RSSSource(FixedPartitionedSource[NewsChunk, dict[str, tuple[str, str]]]):
    def __init__(self, urls: list[str], settings: Settings) -> None:
        self.urls = urls
        self.settings = settings

    def list_parts(self) -> list[str]:
        return ["rss"]

    def build_part(self, step_id: str, for_part: str,
                   resume_state: dict[str, tuple[str, str]] | None) -> _RSSPartition:
        s = self.settings
        return _RSSPartition(FeedPoller(self.urls, s.news_poll_seconds, s.news_timeout_seconds,
                                        etags=dict(resume_state or {})))


class _CryptoPanicPartition(StatefulSourcePartition[NewsChunk, None]):
    def __init__(self, poller: CryptoPanicPoller) -> None:
        self._p = poller

    def next_batch(self) -> list[NewsChunk]:
        return self._p.poll()

    def next_awake(self) -> datetime:
        return _at(self._p.next_due())

    def snapshot(self) -> None:
        return None  # what was seen is the deduplicator's state

    def close(self) -> None:
        self._p.close()


class CryptoPanicSource(FixedPartitionedSource[NewsChunk, None]):
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def list_parts(self) -> list[str]:
        return ["cryptopanic"]

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> _CryptoPanicPartition:
        s = self.settings
        codes = sorted({base_of(x) for x in s.symbols})
        return _CryptoPanicPartition(CryptoPanicPoller(s.cryptopanic_token, codes, s.cryptopanic_url,
                                                       s.news_poll_seconds, s.news_timeout_seconds))


class _NewsSimPartition(StatefulSourcePartition[NewsChunk, int]):
    """``tickcast.news.sim.simulate_news`` paced to the wall clock: every second, the
    items published in [last end, now) (seeded per second, so a restart re-creates them)."""

    def __init__(self, settings: Settings, resume_us: int | None) -> None:
        from tickcast.news.sim import simulate_news

        self._sim = simulate_news
        self._symbols = list(settings.symbols)
        self._seed = settings.sim_seed
        self._end = resume_us if resume_us is not None else now_us()
        self._next = time.monotonic()

    def next_batch(self) -> list[NewsChunk]:
        self._next = time.monotonic() + 1.0
        now = now_us() // 1_000_000 * 1_000_000
        if now <= self._end:
            return []
        items = list(self._sim(self._symbols, self._end, now, self._seed + self._end // 1_000_000))
        self._end = now
        return [NewsChunk("sim", [], [], items, True)] if items else []

    def next_awake(self) -> datetime:
        return _at(self._next)

    def snapshot(self) -> int:
        return self._end


class NewsSimSource(FixedPartitionedSource[NewsChunk, int]):
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def list_parts(self) -> list[str]:
        return ["sim"]

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> _NewsSimPartition:
        return _NewsSimPartition(self.settings, resume_state)


class _OffPartition(StatefulSourcePartition[NewsChunk, None]):
    def next_batch(self) -> list[NewsChunk]:
        raise StopIteration

    def snapshot(self) -> None:
        return None


class OffSource(FixedPartitionedSource[NewsChunk, None]):
    def list_parts(self) -> list[str]:
        return ["off"]

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> _OffPartition:
        return _OffPartition()


def make_news_source(settings: Settings) -> FixedPartitionedSource[NewsChunk, Any]:
    src = settings.news_source_resolved
    if src.startswith("replay:"):
        path = Path(src[len("replay:"):])
        if not path.is_file():
            raise ConfigError(f"TICKCAST_NEWS_SOURCE={src!r} is not valid: {path} is not a readable file")
        return NewsReplaySource(path)
    if src.startswith("rss:"):
        return RSSSource([u.strip() for u in src[4:].split(",") if u.strip()], settings)
    if src == "cryptopanic":
        return CryptoPanicSource(settings)
    if src == "sim":
        try:
            import tickcast.news.sim  # noqa: F401
        except ImportError as e:
            raise ConfigError(f"TICKCAST_NEWS_SOURCE=sim is not available: {e}") from None
        return NewsSimSource(settings)
    return OffSource()


# -- processing --------------------------------------------------------------------------

class NewsLogic(StatefulLogic[NewsChunk, Out, tuple[Deduper, NewsStats]]):
    """Drives the (one) :class:`NewsProcessor`; its deduplicator and counters are the
    recovery state. Logs the counters every minute and at EOF."""

    def __init__(self, proc: NewsProcessor, name: str) -> None:
        self.proc = proc
        self.name = name
        self._logged = time.monotonic()

    def on_item(self, value: NewsChunk) -> tuple[list[Out], bool]:
        items, dead = self.proc.on_chunk(value)
        if time.monotonic() - self._logged >= 60:
            self._logged = time.monotonic()
            log.warning("news %s: %s", self.name, self.proc.stats.line())
        return ([(items, dead)] if items or dead else []), StatefulLogic.RETAIN

    def on_eof(self) -> tuple[list[Out], bool]:
        print(f"news {self.name}: {self.proc.stats.line()}", file=sys.stderr, flush=True)
        return [], StatefulLogic.RETAIN

    def snapshot(self) -> tuple[Deduper, NewsStats]:
        return self.proc.dedupe, self.proc.stats


# -- sink ----------------------------------------------------------------------------------

class _LazyOnline:
    """The online store, opened on first use (publish_news may not need it)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._store: Any = None

    def __getattr__(self, name: str) -> Any:
        if self._store is None:
            from tickcast.stores.online import open_online

            self._store = open_online(self._settings, lease=True)
        return getattr(self._store, name)

    def close_if_open(self) -> None:
        if self._store is not None:
            self._store.close()


class _NewsSinkPartition(StatefulSinkPartition[Out, None]):
    def __init__(self, settings: Settings, max_delay_s: float) -> None:
        from tickcast.stores.offline import open_offline

        self._store = open_offline(settings.offline_url)
        self._store.ensure_schema()
        self._online = _LazyOnline(settings)
        self._items: list[NewsItem] = []
        self._dead: list[DeadLetter] = []
        self._max_delay = max_delay_s
        self._oldest = 0.0

    def write_batch(self, values: list[Out]) -> None:
        if not self._items and not self._dead:
            self._oldest = time.monotonic()
        for items, dead in values:
            self._items.extend(items)
            self._dead.extend(dead)
        if len(self._items) + len(self._dead) >= 20_000 or time.monotonic() - self._oldest >= self._max_delay:
            self.flush()

    def flush(self) -> None:
        from tickcast.stores.tables import dead_letters_to_arrow

        if self._items:
            publish_news(self._items, self._store, self._online)
            self._items = []
        if self._dead:
            self._store.insert("dead_letters", dead_letters_to_arrow(self._dead))
            self._dead = []

    def snapshot(self) -> None:
        self.flush()

    def close(self) -> None:
        self.flush()
        self._online.close_if_open()
        self._store.close()


class NewsSink(FixedPartitionedSink[Out, None]):
    """New items -> :func:`publish_news`; dead letters -> ``dead_letters``. Buffers up
    to ``max_delay_s`` (live: 0, every batch) and flushes at every epoch and at EOF."""

    def __init__(self, settings: Settings, max_delay_s: float) -> None:
        self.settings = settings
        self.max_delay_s = max_delay_s

    def list_parts(self) -> list[str]:
        return ["news"]

    def part_fn(self, item_key: str) -> int:
        return 0

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> _NewsSinkPartition:
        return _NewsSinkPartition(self.settings, self.max_delay_s)


def build_flow(settings: Settings) -> Dataflow:
    source = make_news_source(settings)
    name = settings.news_source_resolved
    live = not name.startswith("replay:")
    scorer = make_scorer(settings.news_scorer, settings)
    mapper = SymbolMapper(settings.symbols)
    delay_us = int(settings.news_delay_seconds * 1_000_000)
    max_ahead_us = int(max(settings.max_ahead_seconds, 86_400.0) * 1_000_000) if not live else int(
        settings.max_ahead_seconds * 1_000_000)
    flow = Dataflow("tickcast_news")
    raw = op.input("source", flow, source)
    keyed = op.key_on("one_key", raw, lambda _c: "news")  # one deduplicator for the whole stream
    short = name if len(name) < 80 else name[:77] + "..."

    def builder(resume: tuple[Deduper, NewsStats] | None) -> NewsLogic:
        dedupe, stats = resume if resume is not None else (Deduper(), NewsStats())
        return NewsLogic(NewsProcessor(mapper, scorer, delay_us, max_ahead_us, dedupe, stats), short)

    outs = op.stateful("news", keyed, builder)
    op.output("stores", outs, NewsSink(settings, 0.0 if live else 5.0))
    return flow


def _flow_or_exit() -> Dataflow:
    try:
        return build_flow(Settings.from_env())
    except (ConfigError, ValueError) as e:
        print(f"tickcast: {e}", file=sys.stderr)
        raise SystemExit(2) from None


relax_gc()
flow = _flow_or_exit()
