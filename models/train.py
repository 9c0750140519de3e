"""The training pipeline: history from the offline store -> point-in-time dataset ->
baselines, Lasso, tuned XGBoost and the River online model, all scored on the same
out-of-sample rows of several walk-forward folds -> report -> gated promotion in the
registry.

Evaluation protocol (GUIDE §6):

* rows in time order; the last ``test_fraction`` of them is cut into ``n_folds``
  consecutive test blocks (expanding-window walk-forward); fold ``k`` trains on every
  row whose **label** matures at least one horizon (the embargo) before its block;
* in every fold, Lasso's alpha and XGBoost's hyper-parameters are tuned with
  time-series cross-validation *inside that fold's training span only* (Optuna TPE
  for XGBoost), then refitted on the span and scored on the block;
* the River model is scored progressively: it predicts every row and learns a row
  only when its label matures, through the whole history; its predictions on the
  test blocks are scored like the others';
* every model predicts the log-return and is scored in price units, per fold and
  pooled over the folds: MAE, RMSE, directional accuracy, skill = 1 -
  MAE/MAE_persistence, a one-sided Diebold–Mariano test against persistence, and the
  break-even cost of trading the sign of its predicted move;
* the gate (:mod:`models.gate`) promotes the best *promotable* candidate — Holm-
  corrected significance over all candidates, an edge in most folds, a minimum
  skill, not a constant — as ``production-<SYMBOL>``; the artefact is the model of the
  last fold (trained on the longest span, scored on the last block). Otherwise the
  best candidate is stored as a candidate and the report says, per candidate, why
  not. Same data + same seed => same report.

Feature groups (:mod:`tickcast.groups`): the candidates above use the ``price`` group.
For every other group with data for the symbol (``news``), :func:`ablation_fits` refits
each batch model with that group's inputs added, on the same folds, and scores it on
the same rows: the report's ``ablation`` (CONTRACT §6) gives MAE with and without and a
one-sided Diebold–Mariano p of "with is better" (Holm-corrected over the ablation
family as ``dm_p_holm``). The variant (``xgboost+news``) is a candidate of the gate like
the others, and is promotable only if it **also** beats the same model without the
group (Holm p < alpha); ``promoted.feature_groups`` names what the model needs. The
River online model stays price-only: it learns inside the price flow, where joining
a stream of news arriving from another flow would make its state depend on the two
flows' relative progress, i.e. on timing, not on data (replays would not be
deterministic); it is listed in ``ablation`` as not evaluated.
"""

from __future__ import annotations

import json
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd

from models.dataset import (
    DatasetError,
    build_dataset,
    fingerprint,
    input_columns,
    join_groups,
    load_features,
)
from models.evaluation import break_even_cost, diebold_mariano, holm, score, walk_forward_folds
from models.gate import DEFAULT_MIN_SKILL, Candidate, GateConfig, decide, folds_needed
from models.predictor import Predictor
from models.registry import batch_model_name, production_alias
from tickcast.groups import REGISTRY, extra_groups, group
from tickcast.schema import json_safe, us_to_iso

MIN_ROWS = 300


@dataclass(frozen=True)
class TrainConfig:
    horizon_seconds: int = 60
    window_seconds: int = 10
    test_fraction: float = 0.3  # share of rows in the out-of-sample span, cut into n_folds blocks
    n_folds: int = 3  # walk-forward folds (expanding training window)
    n_trials: int = 12  # Optuna trials for XGBoost, per fold
    cv_folds: int = 3  # time-series CV folds for tuning, inside each fold's training span
    # XGBoost's Optuna study cross-validates on the most recent tune_rows rows of each
    # fold's training span (the chosen parameters are then fitted on the whole span):
    # tuning cost stays bounded however long the history (30 days of 10-s candles = 259k rows)
    tune_rows: int = 60_000
    seed: int = 42
    alpha: float = 0.05  # family-wise error rate of the gate over the candidates
    min_skill: float = DEFAULT_MIN_SKILL  # minimum pooled skill to promote (TICKCAST_MIN_SKILL)
    online_model: str = "linear"
    progress: bool = True
    # feature groups to join and ablate (tickcast.groups); those without data are skipped
    groups: tuple[str, ...] = field(default_factory=lambda: tuple(REGISTRY))


def _log(cfg: TrainConfig, msg: str) -> None:
    if cfg.progress:
        from tqdm import tqdm

        tqdm.write(msg, file=sys.stderr)  # above any progress bar, which is redrawn below it
        sys.stderr.flush()


#: With ``progress``, a phase running longer than this prints a line every this many seconds.
HEARTBEAT_SECONDS = 20.0


@dataclass
class Phases:
    """Wall-clock seconds per phase of :func:`train_symbol`, summed over folds (and over
    symbols when one instance is passed to several calls): ``read`` (offline store),
    ``dataset`` (labels, inputs, folds, group joins), one entry per batch candidate
    (tuning + fits + predictions over all folds; ``xgboost final fit`` is the part of
    ``xgboost`` spent fitting the tuned parameters on whole training spans), one per
    ablation variant (``xgboost+news`` …), ``online`` (the River progressive pass) and
    ``report`` (scores, tests, gate, registry)."""

    seconds: dict[str, float] = field(default_factory=dict)


_PHASES: ContextVar[Phases | None] = ContextVar("train_phases", default=None)


@contextmanager
def _phase(cfg: TrainConfig, name: str, heartbeat: bool = True) -> Iterator[None]:
    """Time a phase into the current :class:`Phases`; with ``cfg.progress`` and
    ``heartbeat``, print ``… <name>: N s`` every :data:`HEARTBEAT_SECONDS` while it runs,
    so no long step (reading a year, a fit on millions of rows, the online pass) is silent."""
    t0 = time.perf_counter()
    stop = threading.Event()
    beat = None
    if cfg.progress and heartbeat:
        def run() -> None:
            while not stop.wait(HEARTBEAT_SECONDS):
                _log(cfg, f"    … {name}: {time.perf_counter() - t0:.0f} s")

        beat = threading.Thread(target=run, name="train-heartbeat", daemon=True)
        beat.start()
    try:
        yield
    finally:
        stop.set()
        if beat is not None:
            beat.join()
        phases = _PHASES.get()
        if phases is not None:
            phases.seconds[name] = phases.seconds.get(name, 0.0) + time.perf_counter() - t0


def fit_lasso(X: np.ndarray, y: np.ndarray, cfg: TrainConfig, gap: int,
              label: str = "") -> tuple[Any, dict[str, Any]]:
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LassoCV
    from sklearn.model_selection import TimeSeriesSplit
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    # precompute=True: the final refit on the whole span also works on the Gram matrix
    # (the CV paths already do: "auto" means a Gram matrix there but none for the refit,
    # which then sweeps all rows per coordinate-descent pass). Same problem, same alpha,
    # same tolerance; coefficients agree to the solver's tolerance, not bit for bit.
    model = make_pipeline(StandardScaler(), LassoCV(cv=TimeSeriesSplit(cfg.cv_folds, gap=gap), alphas=30,
                                                    random_state=cfg.seed, max_iter=5000, precompute=True))
    with warnings.catch_warnings():  # weak signals leave tiny alphas unconverged; the CV still chooses
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(X, y)
    lasso = model[-1]
    nonzero = int(np.count_nonzero(lasso.coef_))
    return model, {"alpha": float(lasso.alpha_), "nonzero_coefs": nonzero, "constant": nonzero == 0}


def xgboost_splits(model: Any) -> int:
    """Split nodes over all trees (0 = the model predicts one constant)."""
    dump = model.get_booster().get_dump()
    return sum(line.count("[") for line in dump)


def fit_xgboost(X: np.ndarray, y: np.ndarray, cfg: TrainConfig, gap: int,
                label: str = "") -> tuple[Any, dict[str, Any]]:
    import optuna
    import xgboost as xgb
    from sklearn.model_selection import TimeSeriesSplit

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    full_X, full_y = X, y
    X, y = X[-cfg.tune_rows:], y[-cfg.tune_rows:]  # the most recent part of the training span
    folds = list(TimeSeriesSplit(cfg.cv_folds, gap=gap).split(X))
    # measured: on small spans a second thread costs more than it saves (OpenMP
    # synchronisation per boosting round; 2x slower on 1,000 rows on a busy 2-core machine)
    def threads(rows: int) -> int:
        return 1 if rows < 50_000 else 2

    def params_of(trial: optuna.Trial) -> dict[str, Any]:
        return {
            "max_depth": trial.suggest_int("max_depth", 2, 6),
            "learning_rate": trial.suggest_float("learning_rate", 0.01, 0.3, log=True),
            "n_estimators": trial.suggest_int("n_estimators", 50, 300, step=50),
            "subsample": trial.suggest_float("subsample", 0.5, 1.0),
            "colsample_bytree": trial.suggest_float("colsample_bytree", 0.5, 1.0),
            "min_child_weight": trial.suggest_float("min_child_weight", 1.0, 100.0, log=True),
            "reg_lambda": trial.suggest_float("reg_lambda", 1e-3, 10.0, log=True),
        }

    def make(p: dict[str, Any], rows: int) -> Any:
        return xgb.XGBRegressor(objective="reg:absoluteerror", tree_method="hist", n_jobs=threads(rows),
                                random_state=cfg.seed, **p)

    # one quantised matrix per CV split, shared by all trials: what XGBRegressor.fit
    # would rebuild for every trial (same data, same bins, same threads, so the same
    # boosters, checked bit for bit against XGBRegressor when this was written)
    mats = [(xgb.QuantileDMatrix(X[tr], y[tr], nthread=threads(len(tr))), len(tr), X[va], y[va]) for tr, va in folds]

    def objective(trial: optuna.Trial) -> float:
        p = params_of(trial)
        losses = []
        for i, (dtrain, rows, Xva, yva) in enumerate(mats):
            m = make(p, rows)
            booster = xgb.train(m.get_xgb_params(), dtrain, m.get_num_boosting_rounds())
            losses.append(float(np.mean(np.abs(booster.inplace_predict(Xva) - yva))))
            trial.report(float(np.mean(losses)), i)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return float(np.mean(losses))

    study = optuna.create_study(direction="minimize", sampler=optuna.samplers.TPESampler(seed=cfg.seed),
                                pruner=optuna.pruners.MedianPruner(n_startup_trials=3))
    bar = None
    if cfg.progress:
        from tqdm import tqdm

        bar = tqdm(total=cfg.n_trials, desc=f"  xgboost tuning{label}", file=sys.stderr, leave=False)
    study.optimize(objective, n_trials=cfg.n_trials,
                   callbacks=[lambda s, t: bar.update(1)] if bar is not None else None)
    if bar is not None:
        bar.close()
    best = dict(study.best_params)
    _log(cfg, f"  xgboost{label}: fitting the tuned parameters on {len(full_X):,} rows …")
    with _phase(cfg, "xgboost final fit", heartbeat=False):  # the caller's phase beats
        model = make(best, len(full_X)).fit(full_X, full_y)
    splits = xgboost_splits(model)
    return model, {**best, "cv_mae_bps": float(study.best_value), "trials": cfg.n_trials, "splits": splits,
                   "constant": splits == 0, "tuned_on_rows": len(X)}


#: The batch training candidates: name -> ``fit(X, y, cfg, gap, label) -> (estimator,
#: params)``. ``X`` holds the model inputs of one fold's training span, ``y`` the labels
#: (log-return to the horizon, bps); ``gap`` is the embargo in rows for any inner
#: cross-validation; the estimator needs ``predict(X) -> bps`` and pickles, and
#: ``params["constant"]`` says whether it predicts one constant. Each is tuned and fitted
#: inside every walk-forward fold, scored on its block and judged by the gate, so a new
#: candidate is one entry here.
BATCH_CANDIDATES: dict[str, Callable[..., tuple[Any, dict[str, Any]]]] = {
    "lasso": fit_lasso,
    "xgboost": fit_xgboost,
}


def gate_family() -> tuple[str, ...]:
    """The gate's candidates (its Holm family): every batch candidate and the online model."""
    return (*BATCH_CANDIDATES, "online")


def run_online(df_all: pd.DataFrame, test_ts: np.ndarray, symbol: str, cfg: TrainConfig) -> tuple[dict[int, float], Any]:
    """Progressive (prequential) scoring of the online model over all rows in time order, in blocks."""
    from tickcast.features import FEATURE_NAMES
    from tickcast.learner import OnlineLearner

    learner = OnlineLearner(symbol, cfg.horizon_seconds, cfg.online_model, seed=cfg.seed, snapshot_every=0)
    wanted = set(int(t) for t in test_ts)
    preds: dict[int, float] = {}
    names = list(FEATURE_NAMES)
    ts_arr = df_all["ts_us"].to_numpy()
    close = df_all["close"].to_numpy(dtype=float)
    vals = df_all[names].to_numpy(dtype=float)
    step = 4096  # rows per call: the learner's outputs do not depend on it
    for lo in range(0, len(df_all), step):
        out = learner.on_arrays(ts_arr[lo:lo + step].tolist(), close[lo:lo + step].tolist(), vals[lo:lo + step], names)
        for p in out.predictions:
            if p.ts_us in wanted:
                preds[p.ts_us] = p.predicted_price
    return preds, learner


def ablation_fits(ds: pd.DataFrame, folds: list[Any], base_cols: list[str], group_cols: dict[str, list[str]],
                  cfg: TrainConfig, gap: int) -> dict[str, tuple[np.ndarray, tuple[Any, dict[str, Any]], list[str]]]:
    """Every batch model refitted with each extra group's inputs added, fold by fold
    exactly like the price-only fits (same rows, same tuning budget, same seed).
    Returns ``{"<model>+<group>": (predicted prices on the out-of-sample rows of all
    folds, (last fold's model, params), input columns)}``."""
    out: dict[str, tuple[np.ndarray, tuple[Any, dict[str, Any]], list[str]]] = {}
    price = ds["price"].to_numpy()
    y = ds["y_bps"].to_numpy()
    n_oos = len(ds) - folds[0].test_start
    for gname, gcols in group_cols.items():
        cols = base_cols + gcols
        X = ds[cols].to_numpy()
        for model, fit_model in BATCH_CANDIDATES.items():
            pred = np.empty(n_oos)
            consts = 0
            fit: tuple[Any, dict[str, Any]] = (None, {})
            for k, f in enumerate(folds):
                with _phase(cfg, f"{model}+{gname}"):
                    fit = fit_model(X[: f.train_end], y[: f.train_end], cfg, gap,
                                    f" +{gname} fold {k + 1}/{len(folds)}")
                    sl = slice(f.test_start - folds[0].test_start, f.test_end - folds[0].test_start)
                    pred[sl] = price[f.test_start: f.test_end] * np.exp(
                        fit[0].predict(X[f.test_start: f.test_end]) / 1e4)
                consts += int(bool(fit[1]["constant"]))
            out[f"{model}+{gname}"] = (pred, (fit[0], {**fit[1], "constant_in_folds": consts}), cols)
    return out


def ablation(preds: dict[str, np.ndarray], variants: list[str], actual: np.ndarray, h_steps: int,
             alpha: float, groups: list[str]) -> list[dict[str, Any]]:
    """The ``ablation`` rows of the report (CONTRACT §6): for each ``<model>+<group>`` in
    ``variants``, MAE with and without the group on the same rows and the one-sided
    Diebold–Mariano p of "with is better" (small = the group helps), Holm-adjusted over
    the family (``dm_p_holm``; ``significant`` = below ``alpha``). The River online model
    is listed as not evaluated (module docstring)."""
    rows: list[dict[str, Any]] = []
    for v in variants:
        model, _, gname = v.partition("+")
        e_with, e_without = preds[v] - actual, preds[model] - actual
        dm = diebold_mariano(e_with, e_without, h_steps)
        rows.append({"model": model, "groups": ["price", gname], "mae_with": float(np.mean(np.abs(e_with))),
                     "mae_without": float(np.mean(np.abs(e_without))), "dm_stat": dm["dm_stat"],
                     "dm_p_value": dm["p_value"]})
    for r, p in zip(rows, holm([r["dm_p_value"] for r in rows]), strict=True):
        r["dm_p_holm"] = p
        r["significant"] = p < alpha
    for gname in groups:
        rows.append({"model": "online", "groups": ["price", gname], "mae_with": None, "mae_without": None,
                     "dm_p_value": None, "note": "not evaluated: the River model learns in the price flow and "
                     "stays price-only, so replays stay deterministic"})
    return rows


def _span(df: pd.DataFrame) -> dict[str, Any]:
    return {"from": us_to_iso(int(df["ts_us"].iloc[0])), "to": us_to_iso(int(df["ts_us"].iloc[-1])),
            "rows": len(df)}


def _model_row(name: str, pred: np.ndarray, actual: np.ndarray, price: np.ndarray, h_steps: int) -> dict[str, Any]:
    """Scores of one model against persistence on the same rows."""
    p_err = price - actual
    s = score(pred, actual, price, persistence_mae=float(np.mean(np.abs(p_err))))
    dm = diebold_mariano(pred - actual, p_err, h_steps) if name != "persistence" else {"dm_stat": 0.0, "p_value": 1.0}
    return {"name": name, **s, "dm_stat": dm["dm_stat"], "dm_p_value": dm["p_value"]}


def train_symbol(store: Any, registry: Any, symbol: str, since_us: int | None, until_us: int | None,
                 cfg: TrainConfig, phases: Phases | None = None) -> dict[str, Any]:
    """Train, score and gate one symbol (module docstring); returns the report (CONTRACT
    §6). ``phases``, if given, gets the wall-clock seconds of each phase added
    (:class:`Phases`; not part of the report, which stays a function of data and seed)."""
    phases = phases if phases is not None else Phases()
    token = _PHASES.set(phases)
    try:
        return _train_symbol(store, registry, symbol, since_us, until_us, cfg, phases)
    finally:
        _PHASES.reset(token)


def _train_symbol(store: Any, registry: Any, symbol: str, since_us: int | None, until_us: int | None,
                  cfg: TrainConfig, phases: Phases) -> dict[str, Any]:
    t0 = time.perf_counter()
    before = dict(phases.seconds)
    _log(cfg, f"{symbol}: reading features …")
    with _phase(cfg, "read"):
        raw = load_features(store, [symbol], since_us, until_us)
    if raw.empty:
        raise DatasetError(f"no feature rows for {symbol} in the requested range")
    versions = raw["feature_set_version"].unique().tolist()
    if len(versions) != 1:
        raise DatasetError(f"{symbol}: mixed feature_set_version {versions}; pick a range with one")
    h_us, w_us = cfg.horizon_seconds * 1_000_000, cfg.window_seconds * 1_000_000
    _log(cfg, f"{symbol}: {len(raw):,} feature rows read in {time.perf_counter() - t0:.1f} s; building the dataset …")
    with _phase(cfg, "dataset"):
        ds = build_dataset(raw, h_us, w_us)
    if len(ds) < MIN_ROWS:
        raise DatasetError(f"{symbol}: only {len(ds)} labelled rows with warm features (need {MIN_ROWS})")
    try:
        folds = walk_forward_folds(ds["ts_us"].to_numpy(), cfg.n_folds, cfg.test_fraction, h_us, h_us)
    except ValueError as e:
        raise DatasetError(f"{symbol}: {e}") from None
    if folds[0].train_end < MIN_ROWS // 2:
        raise DatasetError(f"{symbol}: the first fold's training span is too short ({folds[0].train_end} rows; "
                           f"need {MIN_ROWS // 2}): use more history, fewer folds or a smaller test fraction")
    cols = input_columns(ds)  # the price group's inputs: the candidates' columns
    with _phase(cfg, "dataset"):
        ds, group_cols = join_groups(ds, store, symbol, extra_groups(cfg.groups), since_us, until_us)
        X, y = ds[cols].to_numpy(), ds["y_bps"].to_numpy()
    t_build = time.perf_counter() - t0
    gap = max(1, h_us // w_us)
    oos = ds.iloc[folds[0].test_start:].reset_index(drop=True)
    oos["fold"] = np.concatenate([np.full(f.test_end - f.test_start, k) for k, f in enumerate(folds)])
    _log(cfg, f"{symbol}: {len(ds):,} rows; {len(folds)} walk-forward folds, out-of-sample {len(oos):,} rows "
              f"(blocks of ~{len(oos) // len(folds):,}), dataset read and built in {t_build:.1f} s")

    # batch models: tuned and fitted inside each fold's training span, scored on its block
    batch_pred = {name: np.empty(len(oos)) for name in BATCH_CANDIDATES}
    fold_params: list[dict[str, dict[str, Any]]] = []
    fitted: dict[str, tuple[Any, dict[str, Any]]] = {}
    for k, f in enumerate(folds):
        label = f" fold {k + 1}/{len(folds)}"
        Xtr, ytr = X[: f.train_end], y[: f.train_end]
        Xte = X[f.test_start: f.test_end]
        price_k = ds["price"].to_numpy()[f.test_start: f.test_end]
        sl = slice(f.test_start - folds[0].test_start, f.test_end - folds[0].test_start)
        _log(cfg, f"  {label.strip()}: train {f.train_end:,} rows, test {f.test_end - f.test_start:,} rows")
        for name, fit_candidate in BATCH_CANDIDATES.items():
            with _phase(cfg, name):
                fitted[name] = fit_candidate(Xtr, ytr, cfg, gap, label)
                batch_pred[name][sl] = price_k * np.exp(fitted[name][0].predict(Xte) / 1e4)
        fold_params.append({name: fitted[name][1] for name in BATCH_CANDIDATES})
    last_train = ds.iloc[: folds[-1].train_end]
    with_groups = ablation_fits(ds, folds, cols, group_cols, cfg, gap) if group_cols else {}
    for v, (_, fit, _) in with_groups.items():
        fitted[v] = fit

    _log(cfg, f"  river {cfg.online_model} (progressive, {len(raw):,} rows) …")
    with _phase(cfg, "online"):
        online_preds, learner = run_online(raw, oos["ts_us"].to_numpy(), symbol, cfg)
    t_report = time.perf_counter()
    # the online model warms up on its own; score every model on the rows it predicted too
    have = np.array([int(t) in online_preds for t in oos["ts_us"]])
    preds: dict[str, np.ndarray] = {"persistence": oos["price"].to_numpy(), "mean_last_10": oos["mean10"].to_numpy(),
                                    **batch_pred, **{v: w[0] for v, w in with_groups.items()}}
    if not have.all():
        oos = oos[have].reset_index(drop=True)
        preds = {k: v[have] for k, v in preds.items()}
    if len(oos) < 10 * len(folds) or oos["fold"].nunique() < len(folds):
        raise DatasetError(f"{symbol}: the online model predicted too few out-of-sample rows ({len(oos)})")
    preds["online"] = np.array([online_preds[int(t)] for t in oos["ts_us"]])
    online_ret = np.log(preds["online"] / oos["price"].to_numpy())
    fitted["online"] = (learner.model, {"kind": cfg.online_model, "samples_seen": learner.samples_seen,
                                        "constant": bool(np.ptp(online_ret) == 0)})

    h_steps = max(1, h_us // w_us)
    price, actual = oos["price"].to_numpy(), oos["label_price"].to_numpy()
    fold_idx = oos["fold"].to_numpy()
    fold_reports: list[dict[str, Any]] = []
    for k, f in enumerate(folds):
        m = fold_idx == k
        blk = oos[m]
        fold_reports.append({
            "fold": k + 1,
            "train": _span(ds.iloc[: f.train_end]),
            "test": _span(blk),
            "models": [_model_row(name, p[m], actual[m], price[m], h_steps) for name, p in preds.items()],
            "params": fold_params[k],
        })
    rows: list[dict[str, Any]] = []
    family = gate_family()
    for name, pred in preds.items():
        row = _model_row(name, pred, actual, price, h_steps)
        row["folds_better"] = sum(
            1 for fr in fold_reports for r in fr["models"] if r["name"] == name and r["skill_vs_persistence"] > 0)
        if name != "persistence":
            row.update(break_even_cost(pred, actual, price))
        if name in family or name in with_groups:
            row["constant"] = bool(fitted[name][1]["constant"])
            row["constant_in_folds"] = (sum(1 for fp in fold_params if fp[name]["constant"])
                                        if name in BATCH_CANDIDATES
                                        else int(fitted[name][1].get("constant_in_folds", row["constant"])))
        rows.append(row)

    gate_cfg = GateConfig(alpha=cfg.alpha, min_skill=cfg.min_skill)
    abl = ablation(preds, list(with_groups), actual, h_steps, cfg.alpha, list(group_cols)) if group_cols else []
    cands = [r for r in rows if r["name"] in family or r["name"] in with_groups]
    decisions = decide([Candidate(r["name"], r["dm_p_value"], r["skill_vs_persistence"], r["folds_better"],
                                  len(folds), r["constant"]) for r in cands], gate_cfg)
    passing = []
    for r, d in zip(cands, decisions, strict=True):
        r["dm_p_holm"] = d.p_holm
        promotable, reason = d.promotable, d.reason
        if r["name"] in with_groups:  # must also beat the same model without the group
            a = next(a for a in abl if f"{a['model']}+{a['groups'][-1]}" == r["name"])
            if not a["significant"]:
                why = (f"does not beat {a['model']} without {a['groups'][-1]} (ablation Holm p = "
                       f"{a['dm_p_holm']:.3g} >= {cfg.alpha})")
                reason = ("not promotable: " + why + ("" if promotable else "; " + reason.removeprefix(
                    "not promotable: ")))
                promotable = False
        r["gate"] = {"promotable": promotable, "significant": d.significant, "consistent": d.consistent,
                     "min_skill_ok": d.large_enough, "reason": reason}
        if promotable:
            passing.append(r)
    best = min(passing or cands, key=lambda r: r["mae"])

    fp = fingerprint(ds)
    est, params = fitted[best["name"]]
    base_name, _, extra = best["name"].partition("+")
    best_groups = ("price", extra) if extra else ("price",)
    group_versions = {g: group(g).version for g in best_groups}
    group_versions["price"] = versions[0]
    predictor = Predictor(
        name=learner.model_name if best["name"] == "online" else base_name,
        kind="river" if best["name"] == "online" else "sklearn",
        input_names=[c[2:] for c in (with_groups[best["name"]][2] if extra else cols)], estimator=est,
        feature_set_version=versions[0], horizon_seconds=cfg.horizon_seconds, params=params,
        groups=best_groups, group_versions=tuple((g, v) for g, v in group_versions.items() if g != "price"),
    )
    report: dict[str, Any] = {
        "symbol": symbol,
        "horizon_seconds": cfg.horizon_seconds,
        "window_seconds": cfg.window_seconds,
        "feature_set_version": versions[0],
        # the batch models' artefacts are the last fold's: trained on this span
        "train": _span(last_train),
        # the pooled out-of-sample span: every fold's test block
        "test": _span(oos),
        "embargo_seconds": cfg.horizon_seconds,
        "models": rows,
        "folds": fold_reports,
        "gate": {"alpha": cfg.alpha, "correction": "holm", "candidates": [r["name"] for r in cands],
                 "min_skill": cfg.min_skill, "folds_needed": folds_needed(len(folds)), "n_folds": len(folds)},
        "params": {k: v[1] for k, v in fitted.items()},
        "seed": cfg.seed,
        "data_fingerprint": fp,
        "feature_groups": {"price": versions[0], **{g: group(g).version for g in group_cols}},
    }
    if group_cols:
        report["ablation"] = abl
    meta = {"symbol": symbol, "model": best["name"], "params": params, "metrics": best,
            "train": report["train"], "test": report["test"], "features": predictor.input_names,
            "feature_set_version": versions[0], "horizon_seconds": cfg.horizon_seconds,
            "data_fingerprint": fp, "seed": cfg.seed, "model_kind": "batch:" + best["name"],
            "feature_groups": group_versions}
    name = batch_model_name(symbol)
    if passing:
        verdict = f"{best['name']} passes the gate: {best['gate']['reason'].removeprefix('promotable: ')}"
    else:
        verdict = (f"no candidate passes the gate (best {best['name']}: "
                   f"{best['gate']['reason'].removeprefix('not promotable: ')})")
    if registry is not None:
        version = registry.save(name, predictor, json_safe(meta))
        if passing:
            registry.set_alias(production_alias(symbol), name, version, verdict)
            report["promoted"] = {"name": best["name"], "version": version, "reason": verdict,
                                  "feature_groups": list(best_groups)}
        else:
            report["promoted"] = {"name": None, "version": None, "candidate": version,
                                  "reason": f"not promoted: {verdict}; stored as candidate {name}@{version}",
                                  "feature_groups": list(best_groups)}
    else:
        report["promoted"] = {"name": None, "version": None, "reason": f"no registry configured; {verdict}"}
    phases.seconds["report"] = phases.seconds.get("report", 0.0) + time.perf_counter() - t_report
    spent = {k: v - before.get(k, 0.0) for k, v in phases.seconds.items() if v - before.get(k, 0.0) > 0}
    _log(cfg, f"  done in {time.perf_counter() - t0:.1f} s (" + ", ".join(f"{k} {v:.0f} s" for k, v in spent.items())
         + ")")
    return json_safe(report)  # type: ignore[no-any-return]


def format_table(report: dict[str, Any]) -> str:
    """The pooled out-of-sample comparison, one line per model, then the gate's verdict per candidate."""
    def num(v: Any, fmt: str, width: int) -> str:
        return f"{v:>{width}{fmt}}" if isinstance(v, int | float) and np.isfinite(v) else f"{'—':>{width}}"

    lines = [f"{report['symbol']}  horizon {report['horizon_seconds']} s  out-of-sample {report['test']['from']} → "
             f"{report['test']['to']} ({report['test']['rows']:,} rows, {len(report['folds'])} walk-forward folds)",
             f"{'model':<14}{'MAE':>12}{'RMSE':>12}{'dir.acc':>9}{'skill':>9}{'DM p':>9}{'Holm p':>9}"
             f"{'folds+':>8}{'b/e bps':>9}"]
    n_folds = len(report["folds"])
    for r in report["models"]:
        folds = f"{r['folds_better']}/{n_folds}" if r["name"] != "persistence" else "—"
        lines.append(f"{r['name']:<14}{r['mae']:>12.4f}{r['rmse']:>12.4f}{num(r['directional_accuracy'], '.3f', 9)}"
                     f"{r['skill_vs_persistence']:>9.4f}{num(r['dm_p_value'], '.3g', 9)}"
                     f"{num(r.get('dm_p_holm'), '.3g', 9)}{folds:>8}{num(r.get('break_even_bps'), '.3f', 9)}")
    for r in report["models"]:
        if "gate" in r:
            lines.append(f"  {r['name']}: {r['gate']['reason']}")
    for a in report.get("ablation", []):
        if a["mae_with"] is None:
            lines.append(f"  ablation {a['model']} +{a['groups'][-1]}: {a['note']}")
        else:
            lines.append(f"  ablation {a['model']} +{a['groups'][-1]}: MAE {a['mae_with']:.4f} with, "
                         f"{a['mae_without']:.4f} without, DM p {a['dm_p_value']:.3g} (Holm {a['dm_p_holm']:.3g})")
    lines.append(f"→ {report['promoted']['reason']}")
    return "\n".join(lines)


def train(store: Any, registry: Any, symbols: list[str], since_us: int | None, until_us: int | None,
          cfg: TrainConfig) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Train every symbol that has data. Returns (reports, {skipped symbol: why}):
    a symbol without enough data is skipped with its reason, not an error for the others."""
    reports: list[dict[str, Any]] = []
    skipped: dict[str, str] = {}
    for sym in symbols:
        try:
            reports.append(train_symbol(store, registry, sym, since_us, until_us, cfg))
        except DatasetError as e:
            skipped[sym] = str(e)
            _log(cfg, f"{sym}: skipped: {e}")
    return reports, skipped


def record_run(store: Any, reports: list[dict[str, Any]], started_us: int) -> None:
    """One `training_runs` row per symbol (the whole report as JSON)."""
    import pyarrow as pa

    from tickcast.stores.tables import rows_to_arrow

    run_id = uuid.uuid4().hex[:12]
    finished = int(datetime.now(UTC).timestamp() * 1e6)
    rows = [{"run_id": run_id, "started_at": started_us, "finished_at": finished, "symbol": r["symbol"],
             "report": json.dumps(r, default=str)} for r in reports]
    table = rows_to_arrow("training_runs", rows)
    assert isinstance(table, pa.Table)
    store.insert("training_runs", table)
