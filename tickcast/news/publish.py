"""Where newly stored news items go: :func:`publish_news`, the one hand-over point.

``dataflows/news.py`` calls it with every batch of new, scored items (deduplicated:
each id at most once per run; a recovered run may hand over an item again, which the
stores absorb — ``news`` keeps one row per id). It writes the offline ``news`` table,
then updates the ``news`` feature group (:func:`tickcast.news.features.publish_news`:
each symbol's recent items in the online store, the ``news_features`` table).
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
    from tickcast.news.features import publish_news as update_group

    if items:
        offline.insert("news", news_to_arrow(items))
        update_group(items, offline, online)
