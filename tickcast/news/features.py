"""The news features: one pure definition, used by training and by serving alike.

The value of a news feature at time ``t`` depends on ``t`` itself (counts over the last
hour, the age of the last item), so "the newest row" is not enough online: the online
``news`` group keeps each symbol's recent items (at most :data:`KEEP_US` old, see
:mod:`tickcast.groups`), and ``/predict`` computes the values at the price features'
``as_of`` with :func:`news_values_at` — the function the training join calls on every
label row. The skew test (tests/test_groups.py) checks both give the same numbers.

Contracts:

* **Point-in-time.** The values at ``t`` use only items with ``available_at <= t``;
  items older than :data:`KEEP_US` (``t - available_at >= KEEP_US``) contribute
  nothing to any feature, so keeping only the items of the last :data:`KEEP_US`
  online loses nothing.
* **No news is a value, not an error.** With no item in the last :data:`KEEP_US`
  every count is 0, every sentiment 0.0 and ``news_minutes_since_last`` is
  :data:`AGE_CAP_MINUTES` (:data:`NO_NEWS`): a model needing ``news`` answers for a
  symbol that never had any.
* **Versioned**: :data:`NEWS_DEFINITION_VERSION` names these definitions; bump it when
  one changes.

Features (why each exists):

* ``news_count_5m/1h/6h``: how much is being said (attention, bursts of headlines);
* ``news_sent_mean_1h/6h``: the average tone (0.0 without items);
* ``news_sent_decay_2m/30m``: sum of sentiments weighted by ``exp(-age / tau)``: a
  fresh item weighs most, the effect of news on prices fades;
* ``news_minutes_since_last``: how fresh the newest item is, capped at 6 h.

>>> t0 = 1_700_000_000_000_000
>>> avail = [t0 - 600_000_000, t0 - 60_000_000, t0 + 1]       # 10 min ago, 1 min ago, in the future
>>> sent = [0.5, -1.0, 1.0]
>>> v = news_values_at(avail, sent, t0)
>>> v["news_count_5m"], v["news_count_1h"], v["news_sent_mean_1h"], v["news_minutes_since_last"]
(1.0, 2.0, -0.25, 1.0)
>>> round(v["news_sent_decay_2m"], 4)                          # -1 * e^-0.5 + 0.5 * e^-5
-0.6032
>>> news_values_at([], [], t0) == NO_NEWS
True
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

import numpy as np

from tickcast.groups import FeatureGroup
from tickcast.news.items import NewsItem

NEWS_DEFINITION_VERSION: Final = "nf1"
MINUTE_US: Final = 60_000_000
AGE_CAP_MINUTES: Final = 360.0
KEEP_US: Final = int(AGE_CAP_MINUTES * MINUTE_US)  # longest lookback = the age cap: 6 h
_COUNTS: Final = (("news_count_5m", 5 * MINUTE_US), ("news_count_1h", 60 * MINUTE_US),
                  ("news_count_6h", 360 * MINUTE_US))
_MEANS: Final = (("news_sent_mean_1h", 60 * MINUTE_US), ("news_sent_mean_6h", 360 * MINUTE_US))
_DECAYS: Final = (("news_sent_decay_2m", 2 * MINUTE_US), ("news_sent_decay_30m", 30 * MINUTE_US))

#: Column order of the news features (the ``news_features`` table's columns, model inputs).
NEWS_FEATURE_NAMES: Final[tuple[str, ...]] = (
    *(n for n, _ in _COUNTS), *(n for n, _ in _MEANS), *(n for n, _ in _DECAYS), "news_minutes_since_last")

#: The values of a symbol without news in the last 6 h.
NO_NEWS: Final[dict[str, float]] = {n: 0.0 for n in NEWS_FEATURE_NAMES} | {"news_minutes_since_last": AGE_CAP_MINUTES}


def news_values_at(avail_us: Sequence[int], sentiments: Sequence[float], t_us: int) -> dict[str, float]:
    """The news features of one symbol at ``t_us`` from its items' ``available_at``
    (sorted ascending) and sentiments (aligned). Pure; O(log n + items in 6 h)."""
    return _values(np.asarray(avail_us, dtype=np.int64), np.asarray(sentiments, dtype=float), int(t_us))


def news_values_many(avail_us: Sequence[int], sentiments: Sequence[float], ts_us: Iterable[int]) -> list[dict[str, float]]:
    """:func:`news_values_at` at every time of ``ts_us`` (the training join): the same
    computation, with the arrays converted once."""
    a, s = np.asarray(avail_us, dtype=np.int64), np.asarray(sentiments, dtype=float)
    return [_values(a, s, int(t)) for t in ts_us]


_SPANS: Final = np.array([span for _, span in _COUNTS] + [span for _, span in _MEANS], dtype=np.int64)


def _values(a: np.ndarray, s: np.ndarray, t: int) -> dict[str, float]:
    hi = int(np.searchsorted(a, t, side="right"))  # items available at t: [.., hi)
    lo = int(np.searchsorted(a, t - KEEP_US, side="right"))  # older than 6 h: ignored
    if hi <= lo:
        return dict(NO_NEWS)
    aw, sw = a[lo:hi], s[lo:hi]
    n = hi - lo
    starts = np.searchsorted(aw, t - _SPANS, side="right").tolist()
    out: dict[str, float] = {}
    for (name, _), k in zip(_COUNTS, starts, strict=False):
        out[name] = float(n - k)
    for (name, _), k in zip(_MEANS, starts[len(_COUNTS):], strict=True):
        out[name] = float(sw[k:].sum() / (n - k)) if n > k else 0.0
    age = (aw - t).astype(float)
    for name, tau in _DECAYS:
        out[name] = float(np.dot(sw, np.exp(age / tau)))
    out["news_minutes_since_last"] = min((t - int(aw[-1])) / MINUTE_US, AGE_CAP_MINUTES)
    return {k: out[k] for k in NEWS_FEATURE_NAMES}


def symbol_items(items: Iterable[NewsItem], symbol: str) -> dict[str, tuple[int, float]]:
    """One symbol's items as ``{id: (available_at_us, sentiment)}`` (a repeated id counts
    once: the last one given wins)."""
    out: dict[str, tuple[int, float]] = {}
    for it in items:
        s = it.sentiment_for(symbol)
        if s is not None:
            out[it.id] = (it.available_at_us, float(s))
    return out


def series(by_id: Mapping[str, tuple[int, float]]) -> tuple[list[int], list[float]]:
    """``{id: (available_at_us, sentiment)}`` -> (available_at sorted, sentiments aligned);
    ties in time are ordered by id, so the result does not depend on arrival order."""
    pairs = sorted((a, i, s) for i, (a, s) in by_id.items())
    return [p[0] for p in pairs], [p[2] for p in pairs]


def last_available(avail_us: Sequence[int], t_us: int) -> int | None:
    """The newest ``available_at <= t_us`` among the items that count at ``t_us``
    (the news group's ``as_of``), or None."""

    hi = bisect_right(avail_us, t_us)
    if hi == 0 or avail_us[hi - 1] <= t_us - KEEP_US:
        return None
    return avail_us[hi - 1]


def feature_rows(items: Sequence[NewsItem],
                 history: Mapping[str, Mapping[str, tuple[int, float]]] | None = None) -> list[dict[str, Any]]:
    """``news_features`` rows materialised at each item's ``available_at`` for each of
    its symbols (for dashboards): ``history`` holds each symbol's earlier items
    ``{id: (available_at_us, sentiment)}`` (e.g. what the online group keeps), merged
    with ``items`` by id."""
    rows: list[dict[str, Any]] = []
    for sym in sorted({s for it in items for s in it.symbols}):
        mine = symbol_items(items, sym)
        av, se = series({**(history or {}).get(sym, {}), **mine})
        for t in sorted({a for a, _ in mine.values()}):
            rows.append({"symbol": sym, "ts_us": t, **news_values_at(av, se, t),
                         "feature_set_version": NEWS_DEFINITION_VERSION})
    return rows


def publish_news(items: Sequence[NewsItem], offline: Any, online: Any) -> int:
    """Update the ``news`` feature group with newly scored items: the online group
    (each symbol's recent items) and the offline ``news_features`` table (values at
    each new item's ``available_at``). ``offline``/``online`` may be None (skipped).
    Idempotent: a repeated item is one member online and rewrites the same offline
    keys. Returns the number of ``news_features`` rows written."""
    from tickcast.groups import group

    items = [it for it in items if it.symbols]
    if not items:
        return 0
    news = group("news")
    history: dict[str, dict[str, tuple[int, float]]] = {}
    if online is not None:
        online.write(news, items)
        for sym in sorted({s for it in items for s in it.symbols}):
            history[sym] = online.read(news, sym) or {}
    rows = feature_rows(items, history)
    if offline is not None and rows:
        from tickcast.stores.tables import rows_to_arrow

        offline.insert("news_features", rows_to_arrow("news_features", rows))
    return len(rows)


class NewsGroup(FeatureGroup):
    """The ``news`` feature group. Online state: ``{id: (available_at_us, sentiment)}``
    of the symbol's items of the last :data:`KEEP_US`; offline source: the ``news`` table."""

    name = "news"
    version = NEWS_DEFINITION_VERSION
    columns = NEWS_FEATURE_NAMES
    table = "news_features"
    online_layout = "recent"
    keep_us = KEEP_US

    def online_entries(self, rows: Iterable[NewsItem]) -> list[tuple[str, int, str, list[Any]]]:
        return [(sym, int(it.available_at_us), it.id, [repr(float(s))])
                for it in rows for sym, s in zip(it.symbols, it.sentiments, strict=True)]

    def parse_online(self, raw: Mapping[str, str]) -> dict[str, tuple[int, float]]:
        out: dict[str, tuple[int, float]] = {}
        for item_id, val in raw.items():
            a, _, s = val.partition(" ")
            out[item_id] = (int(a), float(s))
        return out

    def values_at(self, state: Any, t_us: int) -> tuple[dict[str, float], int | None]:
        av, se = series(state or {})
        return news_values_at(av, se, t_us), last_available(av, t_us)

    def load(self, store: Any, symbol: str, since_us: int | None, until_us: int | None) -> dict[str, tuple[int, float]]:
        import json

        where = ["has(splitByChar(',', symbols), {symbol:String})"]
        params: dict[str, Any] = {"symbol": symbol}
        if since_us is not None:
            where.append("available_at > fromUnixTimestamp64Micro({since:Int64}, 'UTC')")
            params["since"] = since_us - KEEP_US
        if until_us is not None:
            where.append("available_at < fromUnixTimestamp64Micro({until:Int64}, 'UTC')")
            params["until"] = until_us
        df = store.query_df("SELECT id, toUnixTimestamp64Micro(available_at) AS a_us, sentiments FROM news "
                            f"WHERE {' AND '.join(where)}", parameters=params)
        out: dict[str, tuple[int, float]] = {}
        if df is None or len(df) == 0:
            return out
        for item_id, a_us, sj in zip(df["id"], df["a_us"], df["sentiments"], strict=True):
            try:
                s = float(json.loads(sj)[symbol])
            except (ValueError, KeyError, TypeError):
                continue  # a row without a score for this symbol carries no sentiment for it
            out[str(item_id)] = (int(a_us), s)
        return out

    def join(self, source: Any, ts_us: Any) -> Any:
        import pandas as pd

        av, se = series(source)
        return pd.DataFrame(news_values_many(av, se, ts_us), columns=list(NEWS_FEATURE_NAMES))


GROUP = NewsGroup()
