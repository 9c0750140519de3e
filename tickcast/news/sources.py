"""Live news sources, framework-free: RSS/Atom feeds and the CryptoPanic posts API.

Each poller turns one HTTP fetch into a :class:`NewsChunk`: entry lines in the replay
format of CONTRACT §8 (:func:`tickcast.news.parse.candidate_json`), parsed and
validated downstream like a replay file, plus dead letters for what could not become
a line (a malformed feed, an entry without a date). The Bytewax sources in
``dataflows/news.py`` drive them.

Politeness and failure (both pollers):

* one ``httpx.Client`` (keep-alive), a ``User-Agent`` naming tickcast, connect/read
  timeouts (default 10 s), bodies capped at :data:`MAX_BODY_BYTES` (a bigger body is
  a dead letter, not read further);
* each feed is polled every ``poll_s`` (default 300 s); RSS uses conditional requests
  (``If-None-Match``/``If-Modified-Since`` from the last ``ETag``/``Last-Modified``), so
  an unchanged feed costs a ``304`` and no parsing;
* a feed that times out, refuses, or answers an HTTP error logs one warning line
  (once, until it answers again) and is retried at its next poll; the other feeds go
  on; a round in which no feed answered (no network) logs one line saying so. Malformed
  XML/JSON with nothing usable is one dead letter (reason + the first 4 kB), the same
  body polled again the same dead letter (position = a hash of the body).

The conditional-request state (``etags``) is returned with each chunk and becomes
recovery state only once the chunk was emitted (``dataflows/news.py``), so a crash
between fetching and emitting cannot make a restart skip items with a ``304``.
"""

from __future__ import annotations

import html
import io
import logging
import re
import time
from calendar import timegm
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, NamedTuple
from urllib.parse import urlsplit

import orjson

from tickcast.news.items import NewsItem
from tickcast.news.parse import candidate_json
from tickcast.schema import DeadLetter, us_to_iso

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 5 << 20  # a news feed is tens of kB; 5 MB is generous
USER_AGENT = "tickcast/0.1 (news sentiment pipeline; polite polling)"
RAW_KEEP = 4096
# Live RSS feeds `tickcast up` polls by default (crypto news sites' public feeds).
DEFAULT_FEEDS = (
    "https://www.coindesk.com/arc/outboundfeeds/rss/",
    "https://cointelegraph.com/rss",
    "https://decrypt.co/feed",
)
CRYPTOPANIC_URL = "https://cryptopanic.com/api/developer/v2/posts/"


class NewsChunk(NamedTuple):
    """What a news source emits: ``lines`` = (position, replay-format JSON) to parse;
    ``dead`` = what could not become a line; ``items`` = ready items (the simulator);
    ``live`` = available_at is the receive time (else published_at + delay)."""

    source: str
    lines: list[tuple[str, bytes]]
    dead: list[DeadLetter]
    items: list[NewsItem]
    live: bool


def now_us() -> int:
    return time.time_ns() // 1000


_TAG = re.compile(r"<[^>]*>")
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:\S")


def plain_text(s: str) -> str:
    """HTML summary -> text (tags dropped, entities decoded, spaces collapsed).

    >>> plain_text("<p>BTC &amp; ETH <b>up</b></p>")
    'BTC & ETH up'
    """
    return " ".join(html.unescape(_TAG.sub(" ", s)).split())


def _host(url: str) -> str:
    return urlsplit(url).hostname or url[:100]


@dataclass
class FetchResult:
    status: int
    body: bytes
    headers: dict[str, str]
    error: str = ""  # non-empty: no usable response (timeout, refused, too large, HTTP error)
    too_large: bool = False


def _client(timeout_s: float) -> Any:
    import httpx

    return httpx.Client(timeout=httpx.Timeout(timeout_s), follow_redirects=True,
                        headers={"User-Agent": USER_AGENT}, limits=httpx.Limits(max_connections=8))


def fetch(client: Any, url: str, headers: dict[str, str], params: dict[str, str] | None = None) -> FetchResult:
    """GET with a body cap; never raises (an error is a FetchResult with ``error``)."""
    import httpx

    try:
        with client.stream("GET", url, headers=headers, params=params) as r:
            if r.status_code == 304:
                return FetchResult(304, b"", dict(r.headers))
            if r.status_code >= 400:
                return FetchResult(r.status_code, b"", dict(r.headers), f"HTTP {r.status_code}")
            buf = bytearray()
            for part in r.iter_bytes():
                buf += part
                if len(buf) > MAX_BODY_BYTES:
                    return FetchResult(r.status_code, bytes(buf[:RAW_KEEP]), dict(r.headers),
                                       f"body larger than {MAX_BODY_BYTES:,} bytes (not read further)", True)
            return FetchResult(r.status_code, bytes(buf), dict(r.headers))
    except httpx.TimeoutException:
        return FetchResult(0, b"", {}, "timed out")
    except httpx.HTTPError as e:
        return FetchResult(0, b"", {}, f"{type(e).__name__}: {str(e)[:200]}")


def body_id(body: bytes) -> str:
    """A short hash of a response body: the same malformed answer polled again is the
    same dead letter (its id covers source, position, reason and raw), not one per poll."""
    import hashlib

    return hashlib.blake2b(body, digest_size=8).hexdigest()


def _redact(text: str, secret: str) -> str:
    return text.replace(secret, "***") if secret else text


@dataclass
class FeedPoller:
    """RSS/Atom feeds (any number), polled with conditional requests; parsed by PyPI
    ``feedparser`` from the fetched bytes (it never fetches by itself here)."""

    urls: Sequence[str]
    poll_s: float = 300.0
    timeout_s: float = 10.0
    etags: dict[str, tuple[str, str]] = field(default_factory=dict)  # url -> (ETag, Last-Modified)
    _next: dict[str, float] = field(default_factory=dict)
    _client: Any = None
    warnings: int = 0
    _failing: set[str] = field(default_factory=set)  # feeds whose last fetch failed (warned once)
    _all_down_said: bool = False

    def due(self, mono: float) -> list[str]:
        return [u for u in self.urls if self._next.get(u, 0.0) <= mono]

    def next_due(self) -> float:
        return min((self._next.get(u, 0.0) for u in self.urls), default=time.monotonic() + self.poll_s)

    def poll(self) -> list[tuple[NewsChunk, str, tuple[str, str]]]:
        """Fetch every due feed (concurrently). Returns (chunk, url, new conditional state)."""
        mono = time.monotonic()
        due = self.due(mono)
        if not due:
            return []
        if self._client is None:
            self._client = _client(self.timeout_s)
        for u in due:
            self._next[u] = mono + self.poll_s
        with ThreadPoolExecutor(max_workers=min(8, len(due))) as ex:
            out = [r for r in ex.map(self._one, due) if r is not None]
        if self._failing >= set(self.urls):
            if not self._all_down_said:
                self._all_down_said = True
                log.warning("news: none of the %d feeds answered (no network?); retrying every %.0f s — "
                            "TICKCAST_NEWS_SOURCE=off or sim runs without them", len(self.urls), self.poll_s)
        else:
            self._all_down_said = False
        return out

    def _one(self, url: str) -> tuple[NewsChunk, str, tuple[str, str]] | None:
        etag, modified = self.etags.get(url, ("", ""))
        headers = {}
        if etag:
            headers["If-None-Match"] = etag
        if modified:
            headers["If-Modified-Since"] = modified
        received = now_us()
        res = fetch(self._client, url, headers)
        name = f"rss:{url}"
        if res.status == 304:
            self._failing.discard(url)
            return None
        if res.error and not res.too_large:
            self.warnings += 1
            if url not in self._failing:  # once until it answers again
                self._failing.add(url)
                log.warning("news: feed %s: %s; retried every %.0f s, the other feeds go on", url, res.error,
                            self.poll_s)
            return None
        if url in self._failing:
            self._failing.discard(url)
            log.warning("news: feed %s answers again", url)
        state = (res.headers.get("etag", ""), res.headers.get("last-modified", ""))
        if res.too_large:
            return NewsChunk(name, [], [DeadLetter(received, name, res.body.decode(errors="replace"), res.error,
                                                   f"{url}@{body_id(res.body)}")], [], True), url, (etag, modified)
        return parse_feed(res.body, url, received, res.headers), url, state

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


def _entry_time(e: Any) -> str | None:
    for key in ("published_parsed", "updated_parsed", "created_parsed"):
        st = e.get(key)
        if st:
            try:
                return us_to_iso(timegm(st) * 1_000_000)
            except (ValueError, OverflowError, TypeError):
                return None
    return None


def parse_feed(body: bytes, url: str, received_us: int, headers: dict[str, str] | None = None) -> NewsChunk:
    """An RSS/Atom document -> a chunk of entry lines (+ dead letters)."""
    import feedparser

    name = f"rss:{url}"
    hdrs = {"content-location": url}
    if headers and headers.get("content-type"):
        hdrs["content-type"] = headers["content-type"]
    d = feedparser.parse(io.BytesIO(body), response_headers=hdrs)
    dead: list[DeadLetter] = []
    lines: list[tuple[str, bytes]] = []
    if d.get("bozo") and not d.entries:
        why = d.get("bozo_exception")
        dead.append(DeadLetter(received_us, name, body[:RAW_KEEP].decode(errors="replace"),
                               f"malformed feed, no entries: {type(why).__name__}: {str(why)[:200]}",
                               f"{url}@{body_id(body)}"))
        log.warning("news: feed %s is malformed (%s); one dead letter, the other feeds go on", url, why)
        return NewsChunk(name, [], dead, [], True)
    host = _host(url)
    feed_title = str(d.feed.get("title", "") or host)[:200]
    for i, e in enumerate(d.entries[:1000]):
        guid = str(e.get("id") or e.get("link") or "")
        title = str(e.get("title") or "")
        pos = f"{url}#{guid[:200] or i}"
        published = _entry_time(e)
        raw = {"id": guid, "title": title, "link": e.get("link", "")}
        if not guid:
            dead.append(DeadLetter(received_us, name, orjson.dumps(raw, default=str).decode()[:RAW_KEEP],
                                   "feed entry has neither id/guid nor link", pos))
            continue
        if published is None:
            dead.append(DeadLetter(received_us, name, orjson.dumps(raw, default=str).decode()[:RAW_KEEP],
                                   "feed entry has no parseable published/updated date", pos))
            continue
        # a guid that is a URI (http://…, urn:…, tag:…) is global; anything else (e.g. "123")
        # only means something in its feed
        iid = guid if _URI.match(guid) else f"{host}#{guid}"
        lines.append((pos, candidate_json(iid, published, title, plain_text(str(e.get("summary") or ""))[:4000],
                                          feed_title, str(e.get("link") or ""))))
    return NewsChunk(name, lines, dead, [], True)


@dataclass
class CryptoPanicPoller:
    """The CryptoPanic posts API (``auth_token`` from ``TICKCAST_CRYPTOPANIC_TOKEN``):
    ``GET <url>?auth_token=…&public=true&kind=news&currencies=BTC,ETH``, following
    ``next`` for at most ``max_pages`` pages, and stopping early at a page whose ids
    were all seen by the previous poll (the API lists newest first)."""

    token: str
    currencies: Sequence[str]
    url: str = CRYPTOPANIC_URL
    poll_s: float = 300.0
    timeout_s: float = 10.0
    max_pages: int = 5
    _next: float = 0.0
    _client: Any = None
    _last_ids: set[str] = field(default_factory=set)
    warnings: int = 0

    def next_due(self) -> float:
        return self._next

    def poll(self) -> list[NewsChunk]:
        mono = time.monotonic()
        if mono < self._next:
            return []
        self._next = mono + self.poll_s
        if self._client is None:
            self._client = _client(self.timeout_s)
        params: dict[str, str] | None = {"auth_token": self.token, "public": "true", "kind": "news",
                                         "currencies": ",".join(self.currencies)}
        url: str | None = self.url
        chunks: list[NewsChunk] = []
        ids: set[str] = set()
        for page in range(self.max_pages):
            if url is None:
                break
            received = now_us()
            res = fetch(self._client, url, {}, params)
            name = "cryptopanic"
            if res.error and not res.too_large:
                self.warnings += 1
                log.warning("news: cryptopanic page %d: %s; retried in %.0f s", page + 1,
                            _redact(res.error, self.token), self.poll_s)
                break
            chunk, nxt, page_ids = parse_cryptopanic(res.body, received, f"page{page + 1}@{body_id(res.body)}")
            if res.too_large:
                chunk = NewsChunk(name, [], [DeadLetter(received, name, res.body.decode(errors="replace"),
                                                        res.error, f"page{page + 1}@{body_id(res.body)}")], [],
                                  True)
            chunks.append(chunk)
            ids |= page_ids
            if page_ids and page_ids <= self._last_ids:
                break
            url, params = (nxt, None) if isinstance(nxt, str) and nxt.startswith(("http://", "https://")) else (
                None, None)
        self._last_ids = ids
        return chunks

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


def parse_cryptopanic(body: bytes, received_us: int, position: str) -> tuple[NewsChunk, str | None, set[str]]:
    """One page of posts -> (chunk, next page URL, ids on the page). Accepts v1
    (``currencies: [{"code": …}]``) and v2 (``instruments``) shapes."""
    name = "cryptopanic"
    try:
        doc = orjson.loads(body)
        if not isinstance(doc, dict) or not isinstance(doc.get("results"), list):
            raise ValueError("expected an object with a 'results' list")
    except (orjson.JSONDecodeError, ValueError) as e:
        dl = DeadLetter(received_us, name, body[:RAW_KEEP].decode(errors="replace"),
                        f"malformed CryptoPanic response: {str(e)[:200]}", position)
        log.warning("news: cryptopanic answered a malformed page (%s); one dead letter", e)
        return NewsChunk(name, [], [dl], [], True), None, set()
    lines: list[tuple[str, bytes]] = []
    dead: list[DeadLetter] = []
    ids: set[str] = set()
    for i, post in enumerate(doc["results"][:1000]):
        pos = f"{position}/{i}"
        if not isinstance(post, dict):
            dead.append(DeadLetter(received_us, name, orjson.dumps(post, default=str).decode()[:RAW_KEEP],
                                   "post is not a JSON object", pos))
            continue
        pid = post.get("id")
        if isinstance(pid, int | str) and not isinstance(pid, bool):
            ids.add(str(pid))
        codes = post.get("currencies") or post.get("instruments") or []
        cur = [c.get("code") for c in codes if isinstance(c, dict) and isinstance(c.get("code"), str)] \
            if isinstance(codes, list) else []
        src = post.get("source")
        obj = {"id": f"cryptopanic:{pid}" if pid is not None and pid != "" else None,
               "published_at": post.get("published_at"), "title": post.get("title"),
               "summary": post.get("description") or "",
               "source": (src.get("title") or src.get("domain")) if isinstance(src, dict) else "cryptopanic",
               "url": post.get("original_url") or post.get("url") or ""}
        if cur:
            obj["currencies"] = cur
        lines.append((pos, orjson.dumps(obj, default=str)))
    nxt = doc.get("next")
    return NewsChunk(name, lines, dead, [], True), nxt if isinstance(nxt, str) else None, ids
