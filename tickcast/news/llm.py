"""The optional ``llm`` scorer: an OpenAI-compatible chat-completions endpoint.

Contract (:class:`LLMScorer`):

* ``POST {TICKCAST_LLM_URL}/chat/completions`` with ``model`` = ``TICKCAST_LLM_MODEL``,
  ``temperature`` 0, a JSON-schema ``response_format`` asking for
  ``{"scores": {"BTC": s, …}}`` (one score in [-1, 1] per base asset of the item),
  ``Authorization: Bearer TICKCAST_LLM_KEY`` when a key is set; timeout
  ``TICKCAST_NEWS_TIMEOUT_SECONDS``.
* Answers are cached by item id (at most 10,000): a repeated or recovered item costs
  no second call.
* **Any** failure — refused connection, timeout, HTTP error, malformed JSON, a
  missing coin, a score outside [-1, 1] or not a number — falls back to the lexicon
  scorer for that item, whose row then says ``scorer = lexicon``. After 3 failures in
  a row the endpoint is skipped for 60 s (one warning line), so a dead endpoint does
  not cost a timeout per item.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import orjson

from tickcast.news.parse import Candidate
from tickcast.news.symbols import base_of

log = logging.getLogger(__name__)
PROMPT = ("You rate the sentiment of crypto news for the price of each listed coin. Answer with JSON only: "
          '{"scores": {"<COIN>": <number from -1 (very bearish) to 1 (very bullish)>, ...}}, one entry per '
          "listed coin, 0 when the news is neutral or irrelevant to that coin.")


class LLMScorer:
    name = "llm"

    def __init__(self, url: str, model: str, key: str, timeout_s: float, fallback: Any,
                 cache_size: int = 10_000) -> None:
        import httpx

        self.url = url.rstrip("/") + "/chat/completions"
        self.model = model
        self.fallback = fallback
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._client = httpx.Client(timeout=httpx.Timeout(timeout_s), headers=headers)
        self._cache: OrderedDict[str, tuple[float, ...]] = OrderedDict()
        self._cache_size = cache_size
        self._failures = 0
        self._skip_until = 0.0
        self.last_names: dict[str, str] = {}  # item id -> scorer that produced its scores (this batch)
        self.calls = self.fallbacks = 0

    @classmethod
    def from_settings(cls, settings: Any, fallback: Any) -> LLMScorer:
        return cls(settings.llm_url, settings.llm_model, settings.llm_key, settings.news_timeout_seconds, fallback)

    def _ask(self, item: Candidate, coins: list[str]) -> dict[str, float]:
        body = {
            "model": self.model, "temperature": 0,
            "messages": [{"role": "system", "content": PROMPT},
                         {"role": "user", "content": f"Coins: {', '.join(coins)}\nHeadline: {item.title}\n"
                                                     f"Summary: {item.summary[:1000]}"}],
            "response_format": {"type": "json_schema", "json_schema": {"name": "coin_sentiment", "strict": True,
                                "schema": {"type": "object", "required": ["scores"], "additionalProperties": False,
                                           "properties": {"scores": {
                                               "type": "object", "required": coins, "additionalProperties": False,
                                               "properties": {c: {"type": "number", "minimum": -1, "maximum": 1}
                                                              for c in coins}}}}}},
        }
        self.calls += 1
        r = self._client.post(self.url, content=orjson.dumps(body), headers={"Content-Type": "application/json"})
        r.raise_for_status()
        content = r.json()["choices"][0]["message"]["content"]
        scores = orjson.loads(content)["scores"]
        out: dict[str, float] = {}
        for c in coins:
            v = scores[c]
            if isinstance(v, bool) or not isinstance(v, int | float) or not -1 <= v <= 1:
                raise ValueError(f"score for {c} is {v!r}, not a number in [-1, 1]")
            out[c] = float(v)
        return out

    def score(self, items: Sequence[Candidate], symbols: Sequence[tuple[str, ...]]) -> list[tuple[float, ...]]:
        self.last_names = {}
        out: list[tuple[float, ...]] = []
        for it, syms in zip(items, symbols, strict=True):
            cached = self._cache.get(it.id)
            if cached is not None and len(cached) == len(syms):
                out.append(cached)
                self.last_names[it.id] = self.name
                continue
            coins = sorted({base_of(s) for s in syms})
            got: tuple[float, ...] | None = None
            if time.monotonic() >= self._skip_until:
                try:
                    by_coin = self._ask(it, coins)
                    got = tuple(by_coin[base_of(s)] for s in syms)
                    self._failures = 0
                except Exception as e:  # noqa: BLE001 - any failure: the lexicon scores this item
                    self._failures += 1
                    if self._failures >= 3:
                        self._skip_until = time.monotonic() + 60
                        log.warning("news: llm scorer failed %d times in a row (last: %s: %s); lexicon for 60 s",
                                    self._failures, type(e).__name__, str(e)[:200])
            if got is None:
                self.fallbacks += 1
                got = self.fallback.score([it], [syms])[0]
                self.last_names[it.id] = self.fallback.name
            else:
                self.last_names[it.id] = self.name
                self._cache[it.id] = got
                if len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
            out.append(got)
        return out
