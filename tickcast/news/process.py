"""A chunk of raw news -> stored-ready :class:`NewsItem` s and dead letters, framework-free.

:class:`NewsProcessor` is the whole per-item path of ``dataflows/news.py`` (and of a
plain loop: the benchmark drives it the same way): parse and validate every line
(:mod:`tickcast.news.parse`), deduplicate by id (:class:`~tickcast.news.dedupe.Deduper`,
first version wins), map to configured symbols (:class:`~tickcast.news.symbols.SymbolMapper`;
no symbol -> counted as ``unmapped`` and skipped, not a dead letter), then score the
new items in one batch (:mod:`tickcast.news.scoring`).

Counters (``stats``): ``lines``, ``stored``, ``duplicates``, ``edited`` (a repeat
whose text changed; also counted in duplicates), ``unmapped``, ``dead``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tickcast.news.dedupe import Deduper
from tickcast.news.items import NewsItem
from tickcast.news.parse import Candidate, parse_line
from tickcast.news.scoring import Scorer
from tickcast.news.sources import NewsChunk, now_us
from tickcast.news.symbols import SymbolMapper
from tickcast.schema import MAX_RAW_CHARS, DeadLetter

MAX_DEAD_PER_CHUNK = 100
MAX_LINE_BYTES = 1 << 20  # as dataflows.sources.MAX_MESSAGE_BYTES: a news item is a few kB at most


@dataclass
class NewsStats:
    lines: int = 0
    stored: int = 0
    duplicates: int = 0
    edited: int = 0
    unmapped: int = 0
    dead: int = 0

    def line(self) -> str:
        return (f"{self.lines} lines: {self.stored} stored, {self.duplicates} duplicates "
                f"({self.edited} edited after publication, first version kept), {self.unmapped} about no "
                f"configured symbol (skipped), {self.dead} dead letters")


@dataclass
class NewsProcessor:
    mapper: SymbolMapper
    scorer: Scorer
    delay_us: int
    max_ahead_us: int = 86_400_000_000
    dedupe: Deduper = field(default_factory=Deduper)
    stats: NewsStats = field(default_factory=NewsStats)

    def on_chunk(self, chunk: NewsChunk) -> tuple[list[NewsItem], list[DeadLetter]]:
        received = now_us()
        dead = list(chunk.dead)
        fresh: list[Candidate] = []
        symbols: list[tuple[str, ...]] = []
        for pos, raw in chunk.lines:
            self.stats.lines += 1
            if len(raw) > MAX_LINE_BYTES:
                dead.append(DeadLetter(received, chunk.source, bytes(raw[:4096]).decode(errors="replace"),
                                       f"line longer than {MAX_LINE_BYTES:,} bytes (not parsed; first 4 kB kept)",
                                       pos))
                continue
            c = parse_line(raw, delay_us=self.delay_us, received_us=received if chunk.live else None,
                           default_source=chunk.source.split(":", 1)[0], max_ahead_us=self.max_ahead_us,
                           now_us=received)
            if isinstance(c, str):
                dead.append(DeadLetter(received, chunk.source, bytes(raw[:MAX_RAW_CHARS]).decode(errors="replace"),
                                       c, pos))
                continue
            if (why := self.dedupe.too_old(c)) is not None:
                dead.append(DeadLetter(received, chunk.source, bytes(raw[:MAX_RAW_CHARS]).decode(errors="replace"),
                                       why, pos))
                continue
            if not self.dedupe.admit(c):
                continue
            syms = self.mapper.map(c.currencies, c.title, c.summary)
            if not syms:
                self.stats.unmapped += 1
                continue
            fresh.append(c)
            symbols.append(syms)
        items: list[NewsItem] = []
        if fresh:
            scores = self.scorer.score(fresh, symbols)
            items = [NewsItem(c.id, c.published_at_us, c.available_at_us, c.source, c.title, c.summary, c.url,
                              syms, tuple(s), getattr(self.scorer, "last_names", {}).get(c.id, self.scorer.name))
                     for c, syms, s in zip(fresh, symbols, scores, strict=True)]
        items.extend(self._ready(chunk.items))
        self.stats.duplicates = self.dedupe.duplicates
        self.stats.edited = self.dedupe.edited
        self.stats.stored += len(items)
        if len(dead) > MAX_DEAD_PER_CHUNK:
            n = len(dead) - MAX_DEAD_PER_CHUNK
            dead = dead[:MAX_DEAD_PER_CHUNK] + [DeadLetter(
                received, chunk.source, "", f"{n} more dead letters in this chunk were not kept (positions "
                f"{dead[MAX_DEAD_PER_CHUNK].position} .. {dead[-1].position})", f"{dead[-1].position}+{n}")]
        self.stats.dead += len(dead)
        return items, dead

    def _ready(self, items: list[NewsItem]) -> list[NewsItem]:
        """Items a source made itself (the simulator): deduplicated; mapped and scored
        here only if they came without symbols or scores."""
        out: list[NewsItem] = []
        for it in items:
            c = Candidate(it.id, it.published_at_us, it.available_at_us, it.source, it.title, it.summary, it.url,
                          None)
            self.stats.lines += 1
            if self.dedupe.too_old(c) is not None or not self.dedupe.admit(c):
                continue
            syms = tuple(s for s in it.symbols if s in self.mapper.symbols) or self.mapper.map(None, it.title,
                                                                                                it.summary)
            if not syms:
                self.stats.unmapped += 1
                continue
            if it.scorer and len(it.sentiments) == len(it.symbols) and syms == it.symbols:
                out.append(it)
                continue
            scores = self.scorer.score([c], [syms])[0]
            out.append(NewsItem(it.id, it.published_at_us, it.available_at_us, it.source, it.title, it.summary,
                                it.url, syms, tuple(scores), self.scorer.name))
        return out
