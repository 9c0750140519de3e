"""Feature groups and the news group: point-in-time join, training/serving skew, the
ablation on a planted news effect and on a control, and /predict without news.

Real parts: chdb (the lake), Valkey (the online store), the registry on files, the
Flask app. The news is simulated (tickcast.news.sim) with a known truth."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.linear_model import Ridge

from models.dataset import build_dataset, input_columns, join_groups, load_features
from models.predictor import Predictor
from models.registry import ModelRegistry
from models.signing import SigningKey
from models.train import TrainConfig, train_symbol
from tickcast.config import Settings
from tickcast.groups import extra_groups, group
from tickcast.news.features import NEWS_FEATURE_NAMES, NO_NEWS, last_available, publish_news
from tickcast.news.items import NewsItem
from tickcast.news.sim import planted_drift, simulate_news
from tickcast.pipeline import run_batch
from tickcast.schema import FeatureRow, us_to_iso
from tickcast.sim import DEFAULT_START_US, MarketSimulator, SimParams
from tickcast.stores.offline import LakeStore
from tickcast.stores.online import OnlineStore
from tickcast.stores.tables import features_to_arrow, rows_to_arrow

HOUR_US = 3_600_000_000
SIGNER = SigningKey.generate()
# small and fast: 2 Optuna trials; the ablation decision, not XGBoost's tuning, is under test
CFG = TrainConfig(horizon_seconds=60, window_seconds=10, n_trials=2, progress=False)
EFFECT_BPS = 40.0  # total move per item of sentiment 1 (README: the planted effect)
RATE = 30.0  # news items per hour


def news_rows(items: list[NewsItem]) -> list[dict[str, Any]]:
    """NewsItems as `news` table rows (CONTRACT §8)."""
    return [{"id": it.id, "published_at": it.published_at_us, "available_at": it.available_at_us,
             "source": it.source, "title": it.title, "summary": it.summary, "url": it.url,
             "symbols": ",".join(it.symbols), "sentiment": it.sentiment,
             "sentiments": json.dumps(dict(zip(it.symbols, it.sentiments, strict=True))), "scorer": it.scorer}
            for it in items]


def news_market(root: Path, *, planted: bool, seed: int, hours: float,
                symbols: tuple[str, ...] = ("BTC/USD",)) -> tuple[LakeStore, list[NewsItem], list[FeatureRow]]:
    """A lake holding simulated prices and BTC/USD news; with ``planted`` the prices drift
    with the news' sentiment; otherwise (control) they drift just as much with the news of
    another seed, which the lake does not hold: the news it holds is unrelated to prices."""
    end = DEFAULT_START_US + int(hours * HOUR_US)
    items = simulate_news(["BTC/USD"], DEFAULT_START_US, end, seed=seed, rate_per_hour=RATE)
    movers = items if planted else simulate_news(["BTC/USD"], DEFAULT_START_US, end, seed=seed + 10_000,
                                                 rate_per_hour=RATE)
    sim = MarketSimulator(list(symbols), seed=seed, params=SimParams(rate=5, spread_bps=0.0),
                          drift=planted_drift(movers, EFFECT_BPS))
    feats = run_batch(sim.until(end), 10, 0.0).features
    store = LakeStore(root / "lake")
    store.ensure_schema()
    store.insert("features", features_to_arrow(feats))
    store.insert("news", rows_to_arrow("news", news_rows(items)))
    return store, items, feats


def registry(tmp_path: Path) -> ModelRegistry:
    return ModelRegistry(f"file://{tmp_path / 'models'}", signer=SIGNER)


def test_planted_news_effect_is_found_and_the_news_model_promoted(tmp_path: Path) -> None:
    store, _, _ = news_market(tmp_path, planted=True, seed=1, hours=7)
    reg = registry(tmp_path)
    rep = train_symbol(store, reg, "BTC/USD", None, None, CFG)
    abl = {a["model"]: a for a in rep["ablation"]}
    assert set(abl) == {"lasso", "xgboost", "online"} and abl["online"]["mae_with"] is None
    assert abl["lasso"]["groups"] == ["price", "news"]
    assert abl["lasso"]["mae_with"] < abl["lasso"]["mae_without"] and abl["lasso"]["dm_p_holm"] < CFG.alpha
    promoted = rep["promoted"]
    assert promoted["name"] is not None and promoted["name"].endswith("+news"), promoted
    assert promoted["feature_groups"] == ["price", "news"]
    predictor, manifest = reg.load_alias("production-BTC_USD")
    assert predictor.groups == ("price", "news") and dict(predictor.group_versions) == {"news": "nf1"}
    assert manifest["meta"]["feature_groups"] == {"price": "fs1-w10s", "news": "nf1"}
    assert set(NEWS_FEATURE_NAMES) <= set(predictor.input_names)


def test_control_news_unrelated_to_prices_gives_no_significant_gain(tmp_path: Path) -> None:
    store, _, _ = news_market(tmp_path, planted=False, seed=1, hours=7)
    rep = train_symbol(store, registry(tmp_path), "BTC/USD", None, None, CFG)
    learned = [a for a in rep["ablation"] if a["mae_with"] is not None]
    assert learned and not any(a["significant"] for a in learned), learned
    assert "news" not in (rep["promoted"].get("feature_groups") or []) or rep["promoted"]["name"] is None
    for m in rep["models"]:
        if m["name"].endswith("+news"):
            assert not m["gate"]["promotable"]


@pytest.fixture(scope="module")
def small_market(tmp_path_factory: pytest.TempPathFactory) -> tuple[LakeStore, list[NewsItem], list[FeatureRow]]:
    return news_market(tmp_path_factory.mktemp("small"), planted=True, seed=3, hours=3,
                       symbols=("BTC/USD", "ETH/USD"))


def news_predictor(ds: Any, cols: list[str]) -> Predictor:
    """A linear model on price + news inputs (fitted on the data; its exact quality is irrelevant)."""
    est = Ridge(alpha=1.0).fit(ds[cols].to_numpy(), ds["y_bps"].to_numpy())
    return Predictor("ridge", "sklearn", [c[2:] for c in cols], est, "fs1-w10s", 60,
                     groups=("price", "news"), group_versions=(("news", "nf1"),))


def test_training_and_serving_compute_the_same_news_values(small_market: Any, redis_db_url: str,
                                                           tmp_path: Path) -> None:
    """The skew test: on the same data, what /predict uses at t equals what the training
    join produced at t — the group's values and the prediction made from them."""
    from api import create_app

    store, items, feats = small_market
    online = OnlineStore(redis_db_url)
    written = publish_news(items, store, online)
    assert written == len(items)  # one news_features row per (symbol, item time); one symbol here
    nf = store.query_df("SELECT count() AS n, countDistinct(symbol, ts) AS k FROM news_features")
    assert int(nf["n"][0]) == int(nf["k"][0]) == len({it.available_at_us for it in items})

    raw = load_features(store, ["BTC/USD"], None, None)
    ds = build_dataset(raw, 60_000_000, 10_000_000)
    price_cols = input_columns(ds)
    ds, gcols = join_groups(ds, store, "BTC/USD", extra_groups(["news"]), None, None)
    assert gcols == {"news": [f"x_{n}" for n in NEWS_FEATURE_NAMES]}
    news = group("news")
    state = online.read(news, "BTC/USD")
    # the online group keeps the last 6 h before the newest item: every time after the first
    # item is served from it; compare the last 200 rows and rows right at item times
    rows = ds.tail(200)
    for _, r in rows.iterrows():
        served, as_of = news.values_at(state, int(r["ts_us"]))
        assert served == {n: r[f"x_{n}"] for n in NEWS_FEATURE_NAMES}
        avail = sorted(a for a, _ in state.values())
        assert as_of == last_available(avail, int(r["ts_us"]))

    # through the API: a production model needing news, the price row at t in Valkey
    pred = news_predictor(ds, price_cols + gcols["news"])
    reg = registry(tmp_path)
    v = reg.save("batch-BTC_USD", pred, {"model": "ridge"})
    reg.set_alias("production-BTC_USD", "batch-BTC_USD", v, "test")
    settings = Settings.from_env({"TICKCAST_REDIS_URL": redis_db_url, "TICKCAST_DATA_DIR": str(tmp_path),
                                  "TICKCAST_MODEL_STORE": f"file://{tmp_path / 'models'}",
                                  "TICKCAST_MAX_FEATURE_AGE_SECONDS": "0", "TICKCAST_FEATURE_CACHE_SECONDS": "0",
                                  "TICKCAST_SYMBOLS": "BTC/USD,ETH/USD",
                                  "TICKCAST_REGISTRY_PUBLIC_KEYS": SIGNER.public.to_text()})
    app = create_app({"settings": settings, "env": {"TICKCAST_REGISTRY_PUBLIC_KEYS": SIGNER.public.to_text()},
                      "model_refresh_seconds": 0.0}).test_client()
    by_ts = {f.ts_us: f for f in feats if f.symbol == "BTC/USD"}
    for _, r in ds.tail(5).iterrows():
        t = int(r["ts_us"])
        online.put_features([by_ts[t]])
        got = app.get("/predict?symbol=BTC/USD")
        assert got.status_code == 200, got.json
        body = got.json
        extra = {n: float(r[f"x_{n}"]) for n in NEWS_FEATURE_NAMES}
        want, _ = pred.predict_price(by_ts[t].close, dict(by_ts[t].values), extra)
        assert body["predicted_price"] == want
        assert body["groups"]["news"]["version"] == "nf1"
        assert body["groups"]["news"]["as_of"] == us_to_iso(last_available(sorted(a for a, _ in state.values()), t))
        assert body["groups"]["price"]["as_of"] == body["as_of"] == us_to_iso(t)

    # a symbol that never had news still answers, with the "no news" values
    eth = [f for f in feats if f.symbol == "ETH/USD"][-1]
    reg.set_alias("production-ETH_USD", "batch-BTC_USD", v, "test")
    online.put_features([eth])
    got = app.get("/predict?symbol=ETH/USD")
    assert got.status_code == 200, got.json
    assert got.json["groups"]["news"] == {"version": "nf1", "as_of": None, "age_seconds": None}
    assert got.json["predicted_price"] == pred.predict_price(eth.close, dict(eth.values), dict(NO_NEWS))[0]


def test_online_news_group_is_idempotent_and_bounded(redis_db_url: str) -> None:
    news = group("news")
    online = OnlineStore(redis_db_url)
    t0 = DEFAULT_START_US
    items = [NewsItem(f"n{i}", t0 + i * HOUR_US, t0 + i * HOUR_US + 5, "s", "BTC up", "", "", ("BTC/USD",),
                      (0.5,), "sim") for i in range(10)]
    online.write(news, items[:4])
    online.write(news, items[:4])  # a replayed batch: the same members
    assert sorted(online.read(news, "BTC/USD")) == ["n0", "n1", "n2", "n3"]
    online.write(news, items[4:])
    kept = online.read(news, "BTC/USD")
    # newest at 9 h: items older than 6 h before it are gone, the rest kept
    assert sorted(kept) == [f"n{i}" for i in range(4, 10)]
    assert online.read(news, "ETH/USD") is None
    assert news.values_at(None, t0) == (NO_NEWS, None)


def test_news_values_ignore_items_not_yet_available() -> None:
    """Point-in-time: an item counts from its available_at on, never before."""
    news = group("news")
    a = DEFAULT_START_US
    state = {"x": (a, 1.0)}
    before, as_of = news.values_at(state, a - 1)
    assert before == NO_NEWS and as_of is None
    at, as_of = news.values_at(state, a)
    assert at["news_count_5m"] == 1.0 and at["news_sent_decay_2m"] == 1.0 and as_of == a
    rows = news.join(state, np.array([a - 1, a]))
    assert rows.iloc[0].to_dict() == NO_NEWS and rows.iloc[1].to_dict() == at


def test_publish_news_in_batches_equals_one_batch(redis_db_url: str, tmp_path: Path) -> None:
    """The news flow publishes poll by poll: the news_features rows of a later batch count
    the items of earlier ones (read back from the online group), so two batches write what
    one batch would."""
    from tickcast.news.features import feature_rows

    items = simulate_news(["BTC/USD", "ETH/USD"], DEFAULT_START_US, DEFAULT_START_US + 2 * HOUR_US, seed=5,
                          rate_per_hour=20)
    store = LakeStore(tmp_path / "lake")
    store.ensure_schema()
    online = OnlineStore(redis_db_url)
    half = len(items) // 2
    n = publish_news(items[:half], store, online) + publish_news(items[half:], store, online)
    assert n == len(feature_rows(items))
    got = store.query_df("SELECT symbol, toUnixTimestamp64Micro(ts) AS ts_us, news_count_1h, news_sent_decay_30m "
                         "FROM news_features ORDER BY symbol, ts_us")
    want = sorted(feature_rows(items), key=lambda r: (r["symbol"], r["ts_us"]))
    assert len(got) == len(want)
    for (_, g), w in zip(got.iterrows(), want, strict=True):
        assert (g["symbol"], int(g["ts_us"])) == (w["symbol"], w["ts_us"])
        assert g["news_count_1h"] == w["news_count_1h"] and g["news_sent_decay_30m"] == w["news_sent_decay_30m"]
    store.close()
