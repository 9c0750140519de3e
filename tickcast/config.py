"""Typed, frozen configuration read from ``TICKCAST_*`` environment variables.

Read once per entry point with :meth:`Settings.from_env`. A bad value raises
:class:`ConfigError` whose message is one line naming the variable, the value and
what is accepted; entry points print it and exit 2.

>>> s = Settings.from_env({"TICKCAST_SYMBOLS": "BTC/USD", "TICKCAST_DATA_DIR": "/tmp/tc"})
>>> s.symbols, s.window_seconds, s.horizon_seconds
(('BTC/USD',), 10, 60)
>>> Settings.from_env({"TICKCAST_WINDOW_SECONDS": "ten"})
Traceback (most recent call last):
...
tickcast.config.ConfigError: TICKCAST_WINDOW_SECONDS='ten' is not valid: expected a whole number of seconds >= 1
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from tickcast.schema import SYMBOL_RE as _SYMBOL_RE

PREFIX = "TICKCAST_"


class ConfigError(ValueError):
    """A configuration value is invalid; the message is one line for the user."""


def _bad(name: str, value: str, accepted: str) -> ConfigError:
    return ConfigError(f"{PREFIX}{name}={value!r} is not valid: expected {accepted}")


def parse_number(var: str, raw: str, minimum: float, maximum: float = math.inf, *, whole: bool = False,
                 above: bool = False, accepted: str) -> float:
    """The one number parser of every ``TICKCAST_*`` setting: ``raw`` (stripped) as a
    whole number (``whole``) or a finite float in ``[minimum, maximum]`` (``(minimum,
    maximum]`` when ``above``); anything else raises :class:`ConfigError` naming
    ``var``, ``raw`` and ``accepted``.

    >>> parse_number("TICKCAST_X", "3", 1, whole=True, accepted="a count >= 1")
    3
    >>> parse_number("TICKCAST_X", "nan", 0, accepted="a finite number >= 0")
    Traceback (most recent call last):
    ...
    tickcast.config.ConfigError: TICKCAST_X='nan' is not valid: expected a finite number >= 0
    """
    try:
        v: float = int(raw) if whole else float(raw)
    except ValueError:
        v = math.nan
    if not (minimum < v if above else minimum <= v) or not v <= maximum or v == math.inf:
        raise ConfigError(f"{var}={raw!r} is not valid: expected {accepted}")
    return v


def registry_keys(env: Mapping[str, str]) -> dict[str, Any]:
    """The registry key fields of :class:`Settings` from ``env``: the one place that reads
    ``TICKCAST_REGISTRY_SIGNING_KEY``, ``TICKCAST_REGISTRY_PUBLIC_KEYS`` and the retired
    ``TICKCAST_REGISTRY_KEY``."""
    return {
        "registry_signing_key": (env.get(PREFIX + "REGISTRY_SIGNING_KEY") or "").strip(),
        "registry_public_keys": (env.get(PREFIX + "REGISTRY_PUBLIC_KEYS") or "").strip(),
        "registry_legacy_key": bool((env.get(PREFIX + "REGISTRY_KEY") or "").strip()),
    }


@dataclass(frozen=True)
class Settings:
    """Everything a tickcast process needs to know. Defaults are the embedded ones."""

    source: str = "kraken"  # kraken | kafka | sim | replay:<path>
    symbols: tuple[str, ...] = ("BTC/USD", "ETH/USD")
    data_dir: Path = Path("data")
    clickhouse_url: str = ""  # "" -> chdb:///<data_dir>/offline
    redis_url: str = ""  # "" -> embedded Valkey under <data_dir>/valkey
    kraken_ws_url: str = "wss://ws.kraken.com/v2"
    kraken_rest_url: str = "https://api.kraken.com"
    kafka_brokers: str = "localhost:9092"
    trades_topic: str = "trades"
    # partitions of a topic the flows create (the embedded broker cannot add any later)
    kafka_partitions: int = 2
    kafka_timeout_seconds: float = 10.0  # creating/inspecting the topic waits at most this
    # the Kafka source ends at the high watermark seen at start (tests, benchmarks, backfills)
    kafka_stop_at_end: bool = False
    # Kraken sends a heartbeat about once a second: a connection silent this long is replaced
    kraken_silence_seconds: float = 10.0
    kraken_backoff_seconds: float = 0.5  # first reconnect delay (doubles, with jitter)
    model_store: str = ""  # "" -> file://<data_dir>/models
    # the model registry's keys, as configured: a key in hex, or the path of a file holding
    # it (a mounted Secret); models.registry parses and checks them. "" -> local key pair
    # under <data_dir>/registry-keys for a file:// store. Never printed (repr=False).
    registry_signing_key: str = field(default="", repr=False)
    registry_public_keys: str = ""
    registry_legacy_key: bool = False  # TICKCAST_REGISTRY_KEY (the old shared HMAC key) is set: ignored, warned
    # 10-second candles: six per 60-s horizon, so the model sees within-minute
    # dynamics; long enough that liquid Kraken pairs rarely have empty windows, and
    # 30 days x 2 symbols is ~0.5M rows, which trains in minutes.
    window_seconds: int = 10
    horizon_seconds: int = 60
    # Kraken stamps trades at the matching engine and delivers them within
    # milliseconds; 2 s covers network jitter without delaying candles much.
    allowed_lateness_seconds: float = 2.0
    # a trade stamped more than this after the moment it was received is a dead letter
    # (a clock that far off, or a hostile record, would otherwise close or open
    # windows up to its time: one empty candle per window)
    max_ahead_seconds: float = 60.0
    max_feature_age_seconds: float = 120.0  # 0 = never stale (replayed history)
    # the API keeps a symbol's feature row this long per worker (0 = read Redis every request)
    feature_cache_seconds: float = 0.1
    api_port: int = 0  # 0 -> a free port
    online_ttl_seconds: int = 86_400  # Redis keys expire if the pipeline stops writing
    sim_seed: int = 42
    sim_rate: float = 50.0  # mean trades/s per symbol of the live simulator
    online_model: str = "linear"  # online model learning in the feature flow (tickcast.learner.MODEL_KINDS); "off" disables
    snapshot_every: int = 360  # registry snapshot of the online model every N matured labels
    registry_keep: int = 20  # snapshots kept per model (aliased ones are never deleted)
    # A live source writes its client's counters (reconnects, gaps, …) to the offline
    # store's ingest_stats every this many seconds: 10 s resolves a reconnect storm
    # within a dashboard minute at ~8,600 tiny rows a day.
    stats_seconds: float = 10.0
    # the registry refuses (unread) a snapshot whose signed size is above this; online
    # River models are kB, a tuned XGBoost model a few MB
    registry_max_payload_mb: float = 256.0
    # the API's /health and /models answers are reused this long (per worker)
    api_cache_seconds: float = 2.0
    # every dashboard query is cut off by ClickHouse after this (max_execution_time)
    dashboard_query_seconds: float = 10.0
    # `tickcast train` promotes a model only if its pooled out-of-sample skill over
    # persistence (1 - MAE/MAE_persistence) reaches this; why this value: README, Training
    min_skill: float = 0.002
    # prediction-interval levels served by /predict and stored in predictions (pi1_*, pi2_*)
    interval_levels: tuple[float, ...] = (0.8, 0.95)
    # -- news pipeline (dataflows/news.py; README, News) --------------------------
    # "" = follow TICKCAST_SOURCE: sim -> the news simulator, replay:<file> -> off,
    # kraken/kafka -> rss: with tickcast.news.sources.DEFAULT_FEEDS
    news_source: str = ""
    news_scorer: str = "lexicon"  # tickcast.news.scoring.SCORERS
    # replays/backfills: an item is available at published_at + this. 300 s = the
    # default poll interval, the worst receive lag of the live pipeline (before the
    # feed's own lag): a backtest never uses an item earlier than live could have.
    news_delay_seconds: float = 300.0
    news_poll_seconds: float = 300.0  # each feed polled this often (polite: most update every few minutes)
    news_timeout_seconds: float = 10.0  # per HTTP request of a news source or the LLM scorer
    cryptopanic_token: str = field(default="", repr=False)
    cryptopanic_url: str = "https://cryptopanic.com/api/developer/v2/posts/"
    llm_url: str = ""  # OpenAI-compatible base URL (…/v1) of the llm scorer
    llm_key: str = field(default="", repr=False)
    llm_model: str = ""

    # -- derived ----------------------------------------------------------------
    @property
    def window_us(self) -> int:
        return self.window_seconds * 1_000_000

    @property
    def lateness_us(self) -> int:
        return int(round(self.allowed_lateness_seconds * 1_000_000))

    @property
    def offline_url(self) -> str:
        return self.clickhouse_url or f"chdb://{self.data_dir.resolve() / 'offline'}"

    @property
    def model_store_url(self) -> str:
        return self.model_store or f"file://{self.data_dir.resolve() / 'models'}"

    @property
    def news_source_resolved(self) -> str:
        """TICKCAST_NEWS_SOURCE, or what it follows from TICKCAST_SOURCE when empty."""
        if self.news_source:
            return self.news_source
        if self.source == "sim":
            return "sim"
        if self.source.startswith("replay:"):
            return "off"
        from tickcast.news.sources import DEFAULT_FEEDS

        return "rss:" + ",".join(DEFAULT_FEEDS)

    @property
    def replay_path(self) -> Path | None:
        return Path(self.source[len("replay:") :]) if self.source.startswith("replay:") else None

    def with_(self, **changes: Any) -> Settings:
        return replace(self, **changes)

    # -- reading ----------------------------------------------------------------
    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        d = cls()

        def get(name: str) -> str | None:
            v = env.get(PREFIX + name)
            return None if v is None or v.strip() == "" else v.strip()

        def integer(name: str, default: int, minimum: int, unit: str = "seconds", maximum: float = math.inf) -> int:
            raw = get(name)
            return default if raw is None else int(parse_number(
                PREFIX + name, raw, minimum, maximum, whole=True,
                accepted=f"a whole number{' of ' + unit if unit else ''} >= {minimum}"))

        def number(name: str, default: float, minimum: float, accepted: str = "", above: bool = False,
                   maximum: float = math.inf) -> float:
            raw = get(name)
            return default if raw is None else parse_number(
                PREFIX + name, raw, minimum, maximum, above=above,
                accepted=accepted or f"a finite number >= {minimum}")

        def flag(name: str, default: bool, accepted: str) -> bool:
            raw = get(name)
            if raw is None:
                return default
            if raw.lower() in ("0", "false", "no"):
                return False
            if raw.lower() in ("1", "true", "yes"):
                return True
            raise _bad(name, raw.lower(), accepted)

        source = get("SOURCE") or d.source
        if source not in ("kraken", "kafka", "sim") and not (
            source.startswith("replay:") and len(source) > len("replay:")
        ):
            raise _bad("SOURCE", source, "kraken, kafka, sim or replay:<path to a .jsonl file>")

        raw_symbols = get("SYMBOLS")
        symbols = d.symbols
        if raw_symbols is not None:
            symbols = tuple(s.strip() for s in raw_symbols.split(",") if s.strip())
            bad = [s for s in symbols if not _SYMBOL_RE.match(s)]
            if not symbols or bad:
                raise _bad(
                    "SYMBOLS",
                    raw_symbols,
                    "comma-separated Kraken v2 symbols like BTC/USD,ETH/USD"
                    + (f" ({bad[0]!r} is not one)" if bad else ""),
                )
            symbols = tuple(dict.fromkeys(symbols))

        data_dir = Path(get("DATA_DIR") or d.data_dir)

        ch = get("CLICKHOUSE_URL") or ""
        if ch and not re.match(r"^(chdb:///.+|https?://.+)$", ch):
            raise _bad("CLICKHOUSE_URL", ch, "chdb:///absolute/path or http(s)://user:pass@host:port/db")
        redis_url = get("REDIS_URL") or ""
        if redis_url and not re.match(r"^(rediss?|unix)://.+$", redis_url):
            raise _bad("REDIS_URL", redis_url, "redis://host:port[/db], rediss://… or unix:///path.sock")
        model_store = get("MODEL_STORE") or ""
        if model_store and not re.match(r"^(file:///.+|s3://[^/]+(/.*)?)$", model_store):
            raise _bad("MODEL_STORE", model_store, "file:///absolute/path or s3://bucket/prefix")
        for name in ("KRAKEN_WS_URL",):
            v = get(name)
            if v is not None and not re.match(r"^wss?://.+$", v):
                raise _bad(name, v, "a ws:// or wss:// URL")
        v = get("KRAKEN_REST_URL")
        if v is not None and not re.match(r"^https?://.+$", v):
            raise _bad("KRAKEN_REST_URL", v, "an http:// or https:// URL")
        brokers = get("KAFKA_BROKERS") or d.kafka_brokers
        if not re.match(r"^[^,\s:]+:\d+(,[^,\s:]+:\d+)*$", brokers):
            raise _bad("KAFKA_BROKERS", brokers, "host:port[,host:port…]")
        topic = get("TRADES_TOPIC") or d.trades_topic
        if not re.match(r"^[A-Za-z0-9._-]{1,249}$", topic):
            raise _bad("TRADES_TOPIC", topic, "a Kafka topic name (letters, digits, . _ -)")

        window = integer("WINDOW_SECONDS", d.window_seconds, 1)
        horizon = integer("HORIZON_SECONDS", d.horizon_seconds, 1)
        if horizon % window:
            raise _bad(
                "HORIZON_SECONDS",
                str(horizon),
                f"a multiple of TICKCAST_WINDOW_SECONDS={window} (labels are candle closes)",
            )
        api_port = integer("API_PORT", 0, 0)
        if api_port > 65535:
            raise _bad("API_PORT", get("API_PORT") or "", "a TCP port 1-65535 (or 0 for a free one)")

        online_model = get("ONLINE_MODEL") or d.online_model
        from tickcast.learner import MODEL_KINDS

        if online_model not in (*MODEL_KINDS, "off"):
            raise _bad("ONLINE_MODEL", online_model, f"{', '.join(MODEL_KINDS)} or off")

        min_skill = number("MIN_SKILL", d.min_skill, 0)
        if min_skill >= 1:
            raise _bad("MIN_SKILL", get("MIN_SKILL") or "", "a skill in [0, 1), e.g. 0.002")

        levels_raw = get("INTERVAL_LEVELS")
        interval_levels = d.interval_levels
        if levels_raw is not None:
            try:
                interval_levels = tuple(sorted({float(x) / 100 for x in levels_raw.split(",") if x.strip()}))
            except ValueError:
                interval_levels = ()
            if not 1 <= len(interval_levels) <= 2 or not all(0 < x < 1 for x in interval_levels):
                raise _bad("INTERVAL_LEVELS", levels_raw, "one or two percentages in (0, 100), e.g. 80,95")
        news_source = get("NEWS_SOURCE") or ""
        if news_source and news_source not in ("cryptopanic", "sim", "off") and not (
                news_source.startswith(("replay:", "rss:")) and news_source.split(":", 1)[1].strip()):
            raise _bad("NEWS_SOURCE", news_source, "replay:<file>, rss:<url>[,<url>…], cryptopanic, sim or off")
        if news_source.startswith("rss:") and not all(
                re.match(r"^https?://\S+$", u.strip()) for u in news_source[4:].split(",")):
            raise _bad("NEWS_SOURCE", news_source, "rss: followed by comma-separated http(s):// feed URLs")
        news_scorer = get("NEWS_SCORER") or d.news_scorer
        if news_scorer not in ("lexicon", "lm", "vader", "llm"):
            raise _bad("NEWS_SCORER", news_scorer, "lexicon, lm, vader or llm")
        token = get("CRYPTOPANIC_TOKEN") or ""
        if news_source == "cryptopanic" and not token:
            raise _bad("NEWS_SOURCE", news_source, "a token in TICKCAST_CRYPTOPANIC_TOKEN for the cryptopanic source")
        llm_url = get("LLM_URL") or ""
        if news_scorer == "llm" and not re.match(r"^https?://.+$", llm_url):
            raise _bad("LLM_URL", llm_url, "the http(s):// base URL of an OpenAI-compatible API for "
                       "TICKCAST_NEWS_SCORER=llm")
        for name in ("CRYPTOPANIC_URL",):
            v = get(name)
            if v is not None and not re.match(r"^https?://.+$", v):
                raise _bad(name, v, "an http:// or https:// URL")

        return cls(
            news_source=news_source,
            news_scorer=news_scorer,
            news_delay_seconds=number("NEWS_DELAY_SECONDS", d.news_delay_seconds, 0),
            news_poll_seconds=number("NEWS_POLL_SECONDS", d.news_poll_seconds, 1),
            news_timeout_seconds=number("NEWS_TIMEOUT_SECONDS", d.news_timeout_seconds, 0.1),
            cryptopanic_token=token,
            cryptopanic_url=get("CRYPTOPANIC_URL") or d.cryptopanic_url,
            llm_url=llm_url,
            llm_key=get("LLM_KEY") or "",
            llm_model=get("LLM_MODEL") or "",
            source=source,
            min_skill=min_skill,
            interval_levels=interval_levels,
            online_model=online_model,
            snapshot_every=integer("SNAPSHOT_EVERY", d.snapshot_every, 1, "samples"),
            registry_keep=integer("REGISTRY_KEEP", d.registry_keep, 1, "snapshots"),
            symbols=symbols,
            data_dir=data_dir,
            clickhouse_url=ch,
            redis_url=redis_url,
            kraken_ws_url=get("KRAKEN_WS_URL") or d.kraken_ws_url,
            kraken_rest_url=get("KRAKEN_REST_URL") or d.kraken_rest_url,
            kafka_brokers=brokers,
            trades_topic=topic,
            kafka_partitions=integer("KAFKA_PARTITIONS", d.kafka_partitions, 1, "partitions", maximum=10_000),
            kafka_timeout_seconds=number("KAFKA_TIMEOUT_SECONDS", d.kafka_timeout_seconds, 0, "seconds > 0",
                                         above=True, maximum=3600),
            kafka_stop_at_end=flag("KAFKA_STOP_AT_END", d.kafka_stop_at_end,
                                   "1 (stop at the end seen at start) or 0"),
            kraken_silence_seconds=number("KRAKEN_SILENCE_SECONDS", d.kraken_silence_seconds, 0.1,
                                          "a number of seconds >= 0.1"),
            kraken_backoff_seconds=number("KRAKEN_BACKOFF_SECONDS", d.kraken_backoff_seconds, 0,
                                          "a number of seconds >= 0"),
            model_store=model_store,
            **registry_keys(env),
            window_seconds=window,
            horizon_seconds=horizon,
            allowed_lateness_seconds=number("ALLOWED_LATENESS_SECONDS", d.allowed_lateness_seconds, 0),
            max_ahead_seconds=number("MAX_AHEAD_SECONDS", d.max_ahead_seconds, 0.001),
            max_feature_age_seconds=number("MAX_FEATURE_AGE_SECONDS", d.max_feature_age_seconds, 0),
            feature_cache_seconds=number("FEATURE_CACHE_SECONDS", d.feature_cache_seconds, 0),
            api_port=api_port,
            online_ttl_seconds=integer("ONLINE_TTL_SECONDS", d.online_ttl_seconds, 1),
            sim_seed=integer("SIM_SEED", d.sim_seed, 0, ""),
            sim_rate=number("SIM_RATE", d.sim_rate, 0.001),
            stats_seconds=number("STATS_SECONDS", d.stats_seconds, 0.1),
            registry_max_payload_mb=number("REGISTRY_MAX_PAYLOAD_MB", d.registry_max_payload_mb, 0.001),
            api_cache_seconds=number("API_CACHE_SECONDS", d.api_cache_seconds, 0),
            dashboard_query_seconds=number("DASHBOARD_QUERY_SECONDS", d.dashboard_query_seconds, 0.1),
        )
