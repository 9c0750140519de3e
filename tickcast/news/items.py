"""The news item: one headline, mapped to symbols and scored, with its point-in-time stamps.

Contract:

* ``id`` is the item's identity across feeds, polls and restarts (the feed's guid/id,
  else a hash of its link): a repeated id is the same item and counts once.
* ``available_at_us`` is when the system may first use the item: live, the moment it
  was received (never before ``published_at_us``); in replays and backfills
  ``published_at_us + TICKCAST_NEWS_DELAY_SECONDS``. Features at time ``t`` use only
  items with ``available_at_us <= t``.
* ``symbols`` are configured symbols (``BTC/USD``), sorted, never empty for a stored
  item; ``sentiments`` is aligned with ``symbols`` (a score in [-1, 1] per symbol;
  a lexicon scorer gives every symbol the item's score, an LLM may differ per coin).

>>> it = NewsItem("a1", 1_700_000_000_000_000, 1_700_000_030_000_000, "feed", "BTC soars",
...               "", "https://x/a1", ("BTC/USD",), (0.6,), "lexicon")
>>> it.sentiment, it.sentiment_for("BTC/USD"), it.sentiment_for("ETH/USD")
(0.6, 0.6, None)
"""

from __future__ import annotations

from dataclasses import dataclass
from math import fsum


@dataclass(frozen=True, slots=True)
class NewsItem:
    id: str
    published_at_us: int
    available_at_us: int
    source: str
    title: str
    summary: str
    url: str
    symbols: tuple[str, ...]
    sentiments: tuple[float, ...]
    scorer: str

    @property
    def sentiment(self) -> float:
        """The item's overall score: the mean over its symbols (0.0 without symbols)."""
        return fsum(self.sentiments) / len(self.sentiments) if self.sentiments else 0.0

    def sentiment_for(self, symbol: str) -> float | None:
        try:
            return self.sentiments[self.symbols.index(symbol)]
        except ValueError:
            return None
