"""Deduplication of news items by id, across polls and (as recovery state) restarts.

Contract (:class:`Deduper`):

* The **first version seen** of an id wins: a repeat is dropped (``duplicates``); a
  repeat whose title or summary changed — an item edited after publication — is
  dropped too and counted as ``edited``. First-seen is deterministic for a replay
  (file order) and, live, is what was already stored and possibly served: rewriting
  it would change history the models may have used.
* Memory is bounded: ids are kept while their ``published_at`` is within ``horizon_us``
  (default 30 days) of the newest item seen, and at most ``cap`` ids (default 200,000,
  ~25 MB) — the oldest inserted go first. An unseen id published before that horizon
  cannot be told apart from a forgotten one, so it is refused with a reason (the flow
  makes it a dead letter) instead of possibly storing a second version.
* The object is the flow's recovery state: plain data, pickled by Bytewax.

>>> from tickcast.news.parse import Candidate
>>> d = Deduper()
>>> c = Candidate("a", 1_700_000_000_000_000, 1_700_000_000_000_000, "s", "t", "", "", None)
>>> d.admit(c), d.admit(c), d.admit(c._replace(title="t (updated)")), (d.duplicates, d.edited)
(True, False, False, (2, 1))
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict

from tickcast.news.parse import Candidate
from tickcast.schema import safe_iso

DAY_US = 86_400_000_000


def _content(c: Candidate) -> bytes:
    return hashlib.blake2b(f"{c.title}\x00{c.summary}".encode(), digest_size=8).digest()


class Deduper:
    def __init__(self, horizon_us: int = 30 * DAY_US, cap: int = 200_000) -> None:
        self.horizon_us = horizon_us
        self.cap = cap
        self._seen: OrderedDict[str, tuple[int, bytes]] = OrderedDict()
        self.newest_us = 0
        self.duplicates = 0
        self.edited = 0

    def __len__(self) -> int:
        return len(self._seen)

    def too_old(self, c: Candidate) -> str | None:
        """Why an unseen id cannot be admitted (published before the horizon), else None."""
        if c.id in self._seen or c.published_at_us >= self.newest_us - self.horizon_us:
            return None
        return (f"published {safe_iso(c.published_at_us)}, more than {self.horizon_us / DAY_US:g} days before "
                f"the newest item seen ({safe_iso(self.newest_us)}): beyond the deduplication horizon, "
                f"so it cannot be told from an item already stored")

    def admit(self, c: Candidate) -> bool:
        """True: first time this id is seen (remembered now). False: a repeat (counted).
        Call :meth:`too_old` first: an item it refuses must not be admitted."""
        prev = self._seen.get(c.id)
        if prev is not None:
            self.duplicates += 1
            if prev[1] != _content(c):
                self.edited += 1
            return False
        self._seen[c.id] = (c.published_at_us, _content(c))
        if c.published_at_us > self.newest_us:
            self.newest_us = c.published_at_us
            self._evict()
        if len(self._seen) > self.cap:
            self._seen.popitem(last=False)
        return True

    def _evict(self) -> None:
        cutoff = self.newest_us - self.horizon_us
        seen = self._seen
        while seen:
            first = next(iter(seen.values()))
            if first[0] >= cutoff:
                break
            seen.popitem(last=False)
