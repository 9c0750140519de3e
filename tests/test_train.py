"""The training pipeline on data the suite simulates, and on real minute candles."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from models.dataset import build_dataset, load_features
from models.evaluation import diebold_mariano, train_test_split_embargo
from models.registry import ModelRegistry
from models.train import TrainConfig, train_symbol
from tickcast.pipeline import run_batch
from tickcast.sim import MarketSimulator, SimParams
from tickcast.stores.offline import LakeStore
from tickcast.stores.tables import features_to_arrow

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
CFG = TrainConfig(horizon_seconds=60, window_seconds=10, n_trials=4, progress=False)


def lake_with(tmp_path: Path, params: SimParams, n: int = 150_000, seed: int = 4) -> LakeStore:
    trades = MarketSimulator(["BTC/USD"], seed=seed, params=params).next_trades(n)
    out = run_batch(trades, 10, 0.0)
    store = LakeStore(tmp_path / "lake")
    store.ensure_schema()
    store.insert("features", features_to_arrow(out.features))
    return store


@pytest.fixture(scope="module")
def rw_store(tmp_path_factory: pytest.TempPathFactory) -> LakeStore:
    return lake_with(tmp_path_factory.mktemp("rw"), SimParams(rate=5, spread_bps=0.0, flow_impact=0.0))


@pytest.fixture(scope="module")
def planted_store(tmp_path_factory: pytest.TempPathFactory) -> LakeStore:
    return lake_with(tmp_path_factory.mktemp("pl"), SimParams(rate=5, spread_bps=1.0, flow_impact=0.5))


def registry(tmp_path: Path) -> ModelRegistry:
    from models.signing import SigningKey

    return ModelRegistry(f"file://{tmp_path / 'models'}", signer=SigningKey.generate())


def test_random_walk_nothing_is_promoted(rw_store: LakeStore, tmp_path: Path) -> None:
    reg = registry(tmp_path)
    rep = train_symbol(rw_store, reg, "BTC/USD", None, None, CFG)
    names = [m["name"] for m in rep["models"]]
    assert names == ["persistence", "mean_last_10", "lasso", "xgboost", "online"]
    for m in rep["models"][2:]:
        assert m["skill_vs_persistence"] < 0.02, m  # no clear skill on a random walk
    assert rep["promoted"]["name"] is None and "not promoted" in rep["promoted"]["reason"]
    assert reg.get_alias("production-BTC_USD") is None
    assert reg.list_versions("batch-BTC_USD")  # stored as a candidate


def test_planted_signal_is_found_and_promoted(planted_store: LakeStore, tmp_path: Path) -> None:
    reg = registry(tmp_path)
    rep = train_symbol(planted_store, reg, "BTC/USD", None, None, CFG)
    best = min((m for m in rep["models"] if m["name"] in ("lasso", "xgboost", "online")), key=lambda m: m["mae"])
    assert best["skill_vs_persistence"] > 0.02 and best["dm_p_value"] < 0.05
    assert rep["promoted"]["name"] == best["name"]
    alias = reg.get_alias("production-BTC_USD")
    assert alias is not None and alias["version"] == rep["promoted"]["version"]
    predictor, manifest = reg.load_alias("production-BTC_USD")
    assert manifest["meta"]["data_fingerprint"] == rep["data_fingerprint"]
    assert manifest["meta"]["train"] == rep["train"] and predictor.feature_set_version == "fs1-w10s"


def test_same_data_same_seed_same_report(planted_store: LakeStore) -> None:
    a = train_symbol(planted_store, None, "BTC/USD", None, None, CFG)
    b = train_symbol(planted_store, None, "BTC/USD", None, None, CFG)
    assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def test_labels_are_as_of_lookups_and_shuffled_future_changes_no_feature(planted_store: LakeStore) -> None:
    df = load_features(planted_store, ["BTC/USD"], None, None)
    h, w = 60_000_000, 10_000_000
    ds = build_dataset(df, h, w)
    close = dict(zip(df["ts_us"], df["close"], strict=True))
    assert all(close[t + h] == lab for t, lab in zip(ds["ts_us"], ds["label_price"], strict=True))
    # a gap: drop rows; labels across the gap must vanish, not shift
    gap = df.drop(index=range(1000, 1003)).reset_index(drop=True)
    ds2 = build_dataset(gap, h, w)
    assert all(close[t + h] == lab for t, lab in zip(ds2["ts_us"], ds2["label_price"], strict=True))
    assert len(ds2) < len(ds) - 3
    # shuffling future prices changes labels but no input at t
    cut = len(df) // 2
    shuffled = df.copy()
    rng = np.random.default_rng(0)
    shuffled.loc[cut:, "close"] = rng.permutation(shuffled.loc[cut:, "close"].to_numpy())
    a, b = build_dataset(df, h, w), build_dataset(shuffled, h, w)
    xs = [c for c in a.columns if c.startswith("x_")]
    early_a = a[a["ts_us"] < df["ts_us"][cut]]
    early_b = b[b["ts_us"] < df["ts_us"][cut]]
    # rows before the cut keep their inputs (x at t uses nothing after t)...
    np.testing.assert_array_equal(early_a[xs].to_numpy()[:-10], early_b[xs].to_numpy()[:-10])


def test_embargo_and_tuning_stay_inside_training_span() -> None:
    ts = np.arange(1000) * 10_000_000
    split = train_test_split_embargo(ts, 0.2, 60_000_000, 60_000_000)
    assert split.test_start == 800
    last_train_label = ts[split.train_end - 1] + 60_000_000
    assert ts[split.test_start] - last_train_label >= 60_000_000  # an embargo of one horizon
    from sklearn.model_selection import TimeSeriesSplit

    for tr, va in TimeSeriesSplit(3, gap=6).split(np.arange(split.train_end)):
        assert va.max() < split.train_end and tr.max() + 6 < va.min()


def test_diebold_mariano_detects_and_refuses() -> None:
    rng = np.random.default_rng(1)
    base = rng.normal(0, 1, 2000)
    assert diebold_mariano(base * 0.8, base, 1)["p_value"] < 0.01
    assert diebold_mariano(base * 1.2, base, 1)["p_value"] > 0.99
    same = rng.normal(0, 1, 2000)
    assert 0.01 < diebold_mariano(same, base, 6)["p_value"] < 0.99


def clean_env(**kw: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TICKCAST_")}
    env.update(kw)
    return env


def test_cli_bad_range_is_one_clear_message(tmp_path: Path) -> None:
    env = clean_env(TICKCAST_DATA_DIR=str(tmp_path), TICKCAST_SYMBOLS="BTC/USD")
    r = subprocess.run([sys.executable, "-m", "tickcast.cli", "train", "--quiet"], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert "no features for BTC/USD" in r.stderr


@pytest.mark.skipif(not (SHARED / "candles").exists(), reason="../shared/data/candles is absent")
def test_real_minute_candles_end_to_end(tmp_path: Path) -> None:
    env = clean_env(TICKCAST_DATA_DIR=str(tmp_path), TICKCAST_SYMBOLS="BTC/USD")
    csv = SHARED / "candles" / "binanceus_BTCUSD_1m_20230301_20230321.csv"
    r = subprocess.run([sys.executable, "-m", "tickcast.cli", "load-candles", str(csv), "--symbol", "BTC/USD"],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    report = tmp_path / "report.json"
    r = subprocess.run([sys.executable, "-m", "tickcast.cli", "train", "--report", str(report), "--trials", "3",
                        "--quiet"], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    rep = json.loads(report.read_text())
    assert rep["symbol"] == "BTC/USD" and rep["horizon_seconds"] == 60
    assert {m["name"] for m in rep["models"]} >= {"persistence", "mean_last_10", "lasso", "xgboost", "online"}
    assert "promoted" in rep and rep["promoted"]["reason"]
    assert "persistence" in r.stdout  # the comparison table
