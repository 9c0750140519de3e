"""One news line (CONTRACT §8's replay format) -> a :class:`Candidate`, or the reason it is not one.

Every source ends here: replay files are read line by line; the RSS and CryptoPanic
sources turn each feed entry into the same JSON object (:func:`candidate_json`), so
validation, limits and point-in-time stamps live in one place.

Contract of :func:`parse_line`:

* ``id``, ``published_at`` (RFC 3339 / ISO 8601 **with** a time zone) and ``title``
  (non-empty string) are required; ``summary``, ``source``, ``url`` are optional
  strings; ``currencies`` an optional list of base-asset codes (strings).
* Limits (a hostile line costs bounded memory): id ≤ 512 characters, codes ≤ 16,
  at most 64 codes; title cut at 1,000 characters, summary at 4,000, url at 2,000.
* ``published_at`` must be after 2009-01-03 and not more than ``max_ahead_us`` after
  the item was received (a wrong clock or a hostile record would otherwise be
  "available" in the future).
* ``available_at``: live (``received_us`` given), the receive time but never before
  ``published_at``; replay (``received_us=None``), ``published_at + delay_us``.

>>> c = parse_line(b'{"id": "a", "published_at": "2025-03-03T00:01:02Z", "title": "BTC up"}',
...                delay_us=60_000_000)
>>> c.available_at_us - c.published_at_us, c.currencies
(60000000, None)
>>> print(parse_line(b'{"id": "a", "title": "x", "published_at": "2025-03-03T00:01:02"}', delay_us=0))
published_at '2025-03-03T00:01:02' has no time zone (expected e.g. 2025-03-03T00:01:02Z)
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, NamedTuple

import orjson

from tickcast.schema import dt_to_us

MIN_PUBLISHED_US = 1_230_940_800_000_000  # 2009-01-03T00:00:00Z
MAX_ID_CHARS = 512
MAX_TITLE_CHARS = 1_000
MAX_SUMMARY_CHARS = 4_000
MAX_URL_CHARS = 2_000
MAX_CODES = 64


class Candidate(NamedTuple):
    """A valid news item before deduplication, symbol mapping and scoring."""

    id: str
    published_at_us: int
    available_at_us: int
    source: str
    title: str
    summary: str
    url: str
    currencies: tuple[str, ...] | None  # None: the item names none; the text decides


def parse_time(value: Any) -> int | str:
    """RFC 3339 text -> µs since the epoch, or the reason it is not one."""
    if value is None:
        return "published_at is missing"
    if not isinstance(value, str) or not value.strip():
        return f"published_at must be an RFC 3339 string; got {type(value).__name__}"
    text = value.strip()[:64]
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        return f"published_at {text!r} is not an RFC 3339 time"
    if dt.tzinfo is None:
        return f"published_at {text!r} has no time zone (expected e.g. 2025-03-03T00:01:02Z)"
    try:
        return dt_to_us(dt)
    except (OverflowError, ValueError):
        return f"published_at {text!r} is out of range"


def _opt_str(obj: dict[str, Any], key: str, limit: int) -> str | None:
    v = obj.get(key)
    if v is None:
        return ""
    if not isinstance(v, str):
        return None
    return v[:limit]


def parse_obj(obj: Any, *, delay_us: int, received_us: int | None = None, default_source: str = "",
              max_ahead_us: int = 86_400_000_000, now_us: int | None = None) -> Candidate | str:
    """A decoded JSON object -> :class:`Candidate`, or the reason (one line) it is not one."""
    if not isinstance(obj, dict):
        return f"expected a JSON object; got {type(obj).__name__}"
    iid = obj.get("id")
    if isinstance(iid, int) and not isinstance(iid, bool):
        iid = str(iid)
    if not isinstance(iid, str) or not iid.strip():
        return "id is missing or not a non-empty string"
    if len(iid) > MAX_ID_CHARS:
        return f"id is longer than {MAX_ID_CHARS} characters"
    title = obj.get("title")
    if not isinstance(title, str) or not title.strip():
        return "title is missing or not a non-empty string"
    pub = parse_time(obj.get("published_at"))
    if isinstance(pub, str):
        return pub
    if pub < MIN_PUBLISHED_US:
        return f"published_at {obj['published_at']!r} is before 2009-01-03"
    ref = received_us if received_us is not None else now_us
    if ref is not None and pub > ref + max_ahead_us:
        return (f"published_at {obj['published_at']!r} is {(pub - ref) / 1e6:.0f} s after it was received "
                f"(more than {max_ahead_us / 1e6:g} s ahead)")
    fields: dict[str, str] = {}
    for key, limit in (("summary", MAX_SUMMARY_CHARS), ("source", 200), ("url", MAX_URL_CHARS)):
        v = _opt_str(obj, key, limit)
        if v is None:
            return f"{key} must be a string; got {type(obj[key]).__name__}"
        fields[key] = v
    codes = obj.get("currencies")
    currencies: tuple[str, ...] | None = None
    if codes is not None:
        if not isinstance(codes, list) or len(codes) > MAX_CODES or not all(
                isinstance(c, str) and 0 < len(c) <= 16 for c in codes):
            return f"currencies must be a list of at most {MAX_CODES} codes (strings of 1-16 characters)"
        currencies = tuple(c.strip().upper() for c in codes) or None
    available = pub + delay_us if received_us is None else max(received_us, pub)
    return Candidate(iid.strip(), pub, available, fields["source"] or default_source, " ".join(title.split())[
        :MAX_TITLE_CHARS], fields["summary"].strip(), fields["url"].strip(), currencies)


def parse_line(raw: bytes, *, delay_us: int, received_us: int | None = None, default_source: str = "",
               max_ahead_us: int = 86_400_000_000, now_us: int | None = None) -> Candidate | str:
    """One JSON line -> :class:`Candidate`, or the reason (one line) it is not one."""
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        return f"not valid JSON: {e}"
    return parse_obj(obj, delay_us=delay_us, received_us=received_us, default_source=default_source,
                     max_ahead_us=max_ahead_us, now_us=now_us)


def candidate_json(id: str, published_at: str, title: str, summary: str = "", source: str = "",
                   url: str = "", currencies: list[str] | None = None) -> bytes:
    """The replay-format line for a feed entry (what the live sources emit)."""
    obj: dict[str, Any] = {"id": id, "published_at": published_at, "title": title, "summary": summary,
                           "source": source, "url": url}
    if currencies:
        obj["currencies"] = currencies
    return orjson.dumps(obj)
