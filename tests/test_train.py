"""The training pipeline on data the suite simulates, and on real minute candles."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

from models.dataset import build_dataset, load_features
from models.evaluation import diebold_mariano, holm, train_test_split_embargo, walk_forward_folds
from models.gate import Candidate, GateConfig, decide
from models.registry import ModelRegistry
from models.train import Phases, TrainConfig, train_symbol
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


def check_report_shape(rep: dict, n_folds: int) -> None:
    """Walk-forward folds, corrected p-values, the gate's checks and the break-even cost."""
    names = [m["name"] for m in rep["models"]]
    assert names == ["persistence", "mean_last_10", "lasso", "xgboost", "online"]  # CONTRACT §6
    assert len(rep["folds"]) == n_folds and rep["gate"]["correction"] == "holm"
    h = rep["horizon_seconds"] * 1_000_000
    prev_rows = 0
    for f in rep["folds"]:
        train_to = datetime.fromisoformat(f["train"]["to"].replace("Z", "+00:00"))
        test_from = datetime.fromisoformat(f["test"]["from"].replace("Z", "+00:00"))
        # the last training label (train end + horizon) matures at least one horizon before the block
        assert (test_from - train_to).total_seconds() * 1e6 >= 2 * h
        assert f["train"]["rows"] > prev_rows  # expanding window
        prev_rows = f["train"]["rows"]
        assert [m["name"] for m in f["models"]] == names
    assert sum(f["test"]["rows"] for f in rep["folds"]) == rep["test"]["rows"]
    assert rep["train"] == rep["folds"][-1]["train"]
    for m in rep["models"][2:]:
        assert m["dm_p_holm"] >= m["dm_p_value"]
        assert isinstance(m["gate"]["promotable"], bool) and m["gate"]["reason"]
        assert m["gate"]["min_skill_ok"] == (m["skill_vs_persistence"] >= rep["gate"]["min_skill"])
        assert m["trades"] > 0 and m["break_even_bps"] is not None
    assert rep["models"][0]["name"] == "persistence" and "break_even_bps" not in rep["models"][0]


def test_random_walk_nothing_is_promoted(rw_store: LakeStore, tmp_path: Path) -> None:
    reg = registry(tmp_path)
    rep = train_symbol(rw_store, reg, "BTC/USD", None, None, CFG)
    check_report_shape(rep, CFG.n_folds)
    for m in rep["models"][2:]:
        assert m["skill_vs_persistence"] < 0.02, m  # no clear skill on a random walk
        assert not m["gate"]["promotable"]
    assert rep["promoted"]["name"] is None and "not promoted" in rep["promoted"]["reason"]
    assert reg.get_alias("production-BTC_USD") is None
    assert reg.list_versions("batch-BTC_USD")  # stored as a candidate


def test_planted_signal_is_found_and_promoted(planted_store: LakeStore, tmp_path: Path) -> None:
    reg = registry(tmp_path)
    rep = train_symbol(planted_store, reg, "BTC/USD", None, None, CFG)
    check_report_shape(rep, CFG.n_folds)
    best = min((m for m in rep["models"] if m["name"] in ("lasso", "xgboost", "online")), key=lambda m: m["mae"])
    assert best["skill_vs_persistence"] > 0.02 and best["dm_p_holm"] < 0.05
    assert best["folds_better"] == CFG.n_folds and best["gate"]["promotable"]
    assert best["break_even_bps"] > 0  # trading its sign earns something before costs
    assert rep["promoted"]["name"] == best["name"]
    alias = reg.get_alias("production-BTC_USD")
    assert alias is not None and alias["version"] == rep["promoted"]["version"]
    predictor, manifest = reg.load_alias("production-BTC_USD")
    assert manifest["meta"]["data_fingerprint"] == rep["data_fingerprint"]
    assert manifest["meta"]["train"] == rep["train"] and predictor.feature_set_version == "fs1-w10s"


def test_pinned_walk_the_old_gate_promoted_is_refused(tmp_path: Path) -> None:
    """benchmarks/bench_gate.py, random walk seed 1020, BTC/USD: the best candidate is a
    Lasso with every coefficient zero (a constant drift bet) that happened to be right on
    the out-of-sample span: skill 0.02, uncorrected DM p 0.03. The old rule (best of three
    at p < 0.05) promoted it; the gate must not."""
    from tickcast.sim import DEFAULT_START_US

    trades = MarketSimulator(["BTC/USD"], seed=1020, params=SimParams(rate=5, spread_bps=0.0, flow_impact=0.0)
                             ).until(DEFAULT_START_US + 6 * 3600 * 1_000_000)
    store = LakeStore(tmp_path / "lake")
    store.ensure_schema()
    store.insert("features", features_to_arrow(run_batch(trades, 10, 0.0).features))
    reg = registry(tmp_path)
    rep = train_symbol(store, reg, "BTC/USD", None, None, CFG)
    cands = {m["name"]: m for m in rep["models"] if m["name"] in ("lasso", "xgboost", "online")}
    lasso = cands["lasso"]
    assert min(cands.values(), key=lambda m: m["mae"]) is lasso  # the old gate's pick ...
    assert lasso["skill_vs_persistence"] > 0 and lasso["dm_p_value"] < 0.05  # ... and its old verdict: promote
    assert lasso["constant"] and "degenerate" in lasso["gate"]["reason"]
    assert lasso["dm_p_holm"] >= 0.05 and not any(m["gate"]["promotable"] for m in cands.values())
    assert rep["promoted"]["name"] is None and reg.get_alias("production-BTC_USD") is None


def test_same_data_same_seed_same_report(planted_store: LakeStore) -> None:
    cfg = TrainConfig(horizon_seconds=60, window_seconds=10, n_trials=2, progress=False)
    phases = Phases()
    t0 = time.perf_counter()
    a = train_symbol(planted_store, None, "BTC/USD", None, None, cfg, phases)
    wall = time.perf_counter() - t0
    b = train_symbol(planted_store, None, "BTC/USD", None, None, cfg)
    assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
    # the timings stay out of the report; every phase is timed and they add up to the wall time
    sec = phases.seconds
    top = {"read", "dataset", "lasso", "xgboost", "online", "report"}
    assert top <= set(sec) and all(sec[k] > 0 for k in top) and 0 < sec["xgboost final fit"] < sec["xgboost"]
    assert 0.9 * wall < sum(sec[k] for k in top) <= wall


def test_a_long_phase_prints_a_heartbeat(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from models import train

    monkeypatch.setattr(train, "HEARTBEAT_SECONDS", 0.05)
    phases = Phases()
    token = train._PHASES.set(phases)
    try:
        with train._phase(TrainConfig(progress=True), "online"):
            time.sleep(0.3)
        with train._phase(TrainConfig(progress=False), "quiet"):
            time.sleep(0.2)
    finally:
        train._PHASES.reset(token)
    err = capsys.readouterr().err
    assert err.count("… online:") >= 3 and "quiet" not in err
    assert phases.seconds["online"] >= 0.3 and phases.seconds["quiet"] >= 0.2


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


def test_walk_forward_folds_expand_and_embargo_every_block() -> None:
    ts = np.arange(1000) * 10_000_000
    h = 60_000_000
    folds = walk_forward_folds(ts, 4, 0.4, h, h)
    assert [f.test_start for f in folds] == [600, 700, 800, 900] and folds[-1].test_end == 1000
    for a, b in zip(folds, folds[1:], strict=False):
        assert a.test_end == b.test_start and a.train_end < b.train_end  # blocks tile, training expands
    for f in folds:
        last_label = ts[f.train_end - 1] + h
        assert ts[f.test_start] - last_label >= h  # no training label within one horizon of the block
        assert ts[f.train_end] + h > ts[f.test_start] - h  # and the training span is as long as allowed
    with pytest.raises(ValueError):
        walk_forward_folds(ts[:5], 10, 0.5, h, h)


def test_gate_corrects_for_candidates_and_flags_constants() -> None:
    assert holm([0.02, 0.03, 0.5]) == [0.06, 0.06, 0.5]
    cfg = GateConfig(alpha=0.05, min_skill=0.002)
    # each p < 0.05 on its own would have promoted the best under the old rule; Holm does not
    d = decide([Candidate("lasso", 0.02, 0.01, 3, 3, False), Candidate("xgboost", 0.03, 0.01, 3, 3, False),
                Candidate("online", 0.5, 0.0, 1, 3, False)], cfg)
    assert not any(x.promotable for x in d) and "Holm-adjusted DM p = 0.06" in d[0].reason
    # a constant model is never promoted, however good its luck
    d = decide([Candidate("lasso", 1e-6, 0.05, 3, 3, True), Candidate("xgboost", 0.9, -0.01, 0, 3, False),
                Candidate("online", 0.9, -0.01, 0, 3, False)], cfg)
    assert not d[0].promotable and "degenerate" in d[0].reason
    # an edge in one fold only, or below the minimum skill, is not enough
    d = decide([Candidate("lasso", 1e-6, 0.05, 1, 3, False), Candidate("xgboost", 1e-6, 0.001, 3, 3, False),
                Candidate("online", 1e-6, 0.01, 2, 3, False)], cfg)
    assert [x.promotable for x in d] == [False, False, True]
    assert "1 of 3 folds (needs 2)" in d[0].reason and "skill 0.0010 < minimum 0.002" in d[1].reason


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


def test_cli_skips_a_symbol_without_data_and_trains_the_rest(rw_store: LakeStore, tmp_path: Path) -> None:
    env = clean_env(TICKCAST_DATA_DIR=str(tmp_path), TICKCAST_CLICKHOUSE_URL=f"chdb://{rw_store.root}",
                    TICKCAST_SYMBOLS="ETH/USD,BTC/USD")
    report = tmp_path / "r.json"
    r = subprocess.run([sys.executable, "-m", "tickcast.cli", "train", "--report", str(report), "--trials", "1",
                        "--quiet"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    assert "ETH/USD: skipped, not trained: no feature rows for ETH/USD" in r.stdout
    assert "BTC/USD  horizon 60 s" in r.stdout and "lasso: not promotable" in r.stdout
    rep = json.loads(report.read_text())
    assert rep["symbol"] == "BTC/USD" and len(rep["folds"]) == 3


def test_train_help_names_no_document_users_lack() -> None:
    r = subprocess.run([sys.executable, "-m", "tickcast.cli", "train", "--help"], cwd=REPO, env=clean_env(),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "TICKCAST_MIN_SKILL" in r.stdout and "--folds" in r.stdout
    assert "CONTRACT" not in r.stdout and "GUIDE" not in r.stdout


@pytest.mark.skipif(not (SHARED / "candles").exists(), reason="../shared/data/candles is absent")
def test_real_minute_candles_readme_command(tmp_path: Path) -> None:
    """The README's command as written (default symbols: ETH/USD has no data and is skipped)."""
    env = clean_env(TICKCAST_DATA_DIR=str(tmp_path))
    csv = SHARED / "candles" / "binanceus_BTCUSD_1m_20230301_20230321.csv"
    r = subprocess.run([sys.executable, "-m", "tickcast.cli", "load-candles", str(csv), "--symbol", "BTC/USD"],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    report = tmp_path / "report.json"
    r = subprocess.run([sys.executable, "-m", "tickcast.cli", "train", "--report", str(report), "--trials", "2",
                        "--quiet"], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    rep = json.loads(report.read_text())
    assert rep["symbol"] == "BTC/USD" and rep["horizon_seconds"] == 60 and rep["window_seconds"] == 60
    assert {m["name"] for m in rep["models"]} >= {"persistence", "mean_last_10", "lasso", "xgboost", "online"}
    assert "promoted" in rep and rep["promoted"]["reason"]
    assert "persistence" in r.stdout and "ETH/USD: skipped" in r.stdout  # the comparison table
    store = LakeStore(tmp_path / "offline", read_only=True)
    rows = store.query("SELECT symbol, report FROM training_runs").result_rows
    assert [row[0] for row in rows] == ["BTC/USD"]
    stored = json.loads(rows[0][1])
    assert len(stored["folds"]) == 3 and stored["gate"]["min_skill"] == rep["gate"]["min_skill"]


def test_a_training_candidate_is_one_table_entry(planted_store: LakeStore, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's contributor example: a ridge regression added to BATCH_CANDIDATES is
    fitted per fold, scored, judged by the gate and reported — nothing else edited."""
    from models import train as train_mod

    def fit_ridge(X, y, cfg, gap, label=""):  # type: ignore[no-untyped-def]
        from sklearn.linear_model import RidgeCV
        m = RidgeCV().fit(X, y)
        return m, {"alpha": float(m.alpha_), "constant": not m.coef_.any()}

    monkeypatch.setitem(train_mod.BATCH_CANDIDATES, "ridge", fit_ridge)
    rep = train_symbol(planted_store, registry(tmp_path), "BTC/USD", None, None, CFG)
    ridge = next(m for m in rep["models"] if m["name"] == "ridge")
    assert "ridge" in rep["gate"]["candidates"] and ridge["gate"]["reason"]
    assert all(any(m["name"] == "ridge" for m in f["models"]) for f in rep["folds"])
    assert ridge["mae"] > 0 and rep["params"]["ridge"]["alpha"] > 0
