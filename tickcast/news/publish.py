"""Where newly stored news items go: :func:`publish_news`, the one hand-over point.

``dataflows/news.py`` calls it with every batch of new, scored items (deduplicated:
each id at most once per run; a recovered run may hand over an item again, which the
stores absorb — ``news`` keeps one row per id). Today it writes the offline ``news``
table; the ``news`` feature group (offline ``news_features`` + the online store) plugs
in here, so the flow does not change when it does.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tickcast.news.items import NewsItem
from tickcast.stores.offline import OfflineStore
from tickcast.stores.tables import news_to_arrow


def publish_news(items: Sequence[NewsItem], offline: OfflineStore, online: Any = None) -> None:
    """Store ``items`` (any order). ``online``: the online store, opened lazily by the
    flow on first attribute access (so nothing starts a Valkey unless it is used)."""
    if items:
        offline.insert("news", news_to_arrow(items))
