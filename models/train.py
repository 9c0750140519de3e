"""The training pipeline: history from the offline store -> point-in-time dataset ->
baselines, Lasso, tuned XGBoost and the River online model, all scored on the same
test rows -> report -> gated promotion in the registry.

Evaluation protocol (GUIDE §6):

* rows in time order; the last ``test_fraction`` is the test span; training rows
  end so that their **labels** mature at least one horizon (the embargo) before
  the first test row;
* Lasso's alpha and XGBoost's hyper-parameters are tuned with time-series
  cross-validation *inside the training span only* (Optuna TPE for XGBoost);
* the River model is scored progressively: it predicts every row and learns a row
  only when its label matures, through the training span (warm-up) and the test
  span (scored);
* every model predicts the log-return and is scored in price units: MAE, RMSE,
  directional accuracy, skill = 1 - MAE/MAE_persistence, and a one-sided
  Diebold–Mariano test against persistence;
* the best model becomes ``production-<SYMBOL>`` only if it beats persistence with
  p < ``alpha`` (default 0.05); otherwise it is stored as a candidate and the report
  says why. Same data + same seed => same report.
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd

from models.dataset import DatasetError, build_dataset, fingerprint, input_columns, load_features
from models.evaluation import diebold_mariano, score, train_test_split_embargo
from models.predictor import Predictor
from tickcast.schema import FeatureRow, us_to_iso

MIN_ROWS = 300
PROMOTABLE = ("lasso", "xgboost", "online")


@dataclass(frozen=True)
class TrainConfig:
    horizon_seconds: int = 60
    window_seconds: int = 10
    test_fraction: float = 0.2
    n_trials: int = 12  # Optuna trials for XGBoost
    cv_folds: int = 3
    seed: int = 42
    alpha: float = 0.05  # significance needed to promote
    online_model: str = "linear"
    progress: bool = True


def alias_for(symbol: str) -> str:
    return "production-" + symbol.replace("/", "_")


def _log(cfg: TrainConfig, msg: str) -> None:
    if cfg.progress:
        print(msg, file=sys.stderr, flush=True)


def fit_lasso(X: np.ndarray, y: np.ndarray, cfg: TrainConfig, gap: int) -> tuple[Any, dict[str, Any]]:
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LassoCV
    from sklearn.model_selection import TimeSeriesSplit
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), LassoCV(cv=TimeSeriesSplit(cfg.cv_folds, gap=gap), alphas=30,
                                                    random_state=cfg.seed, max_iter=5000))
    with warnings.catch_warnings():  # weak signals leave tiny alphas unconverged; the CV still chooses
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(X, y)
    lasso = model[-1]
    return model, {"alpha": float(lasso.alpha_), "nonzero_coefs": int(np.count_nonzero(lasso.coef_))}


def fit_xgboost(X: np.ndarray, y: np.ndarray, cfg: TrainConfig, gap: int) -> tuple[Any, dict[str, Any]]:
    import optuna
    import xgboost as xgb
    from sklearn.model_selection import TimeSeriesSplit

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    folds = list(TimeSeriesSplit(cfg.cv_folds, gap=gap).split(X))

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

    def make(p: dict[str, Any]) -> Any:
        return xgb.XGBRegressor(objective="reg:absoluteerror", tree_method="hist", n_jobs=2,
                                random_state=cfg.seed, **p)

    def objective(trial: optuna.Trial) -> float:
        p = params_of(trial)
        losses = []
        for i, (tr, va) in enumerate(folds):
            m = make(p).fit(X[tr], y[tr])
            losses.append(float(np.mean(np.abs(m.predict(X[va]) - y[va]))))
            trial.report(float(np.mean(losses)), i)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return float(np.mean(losses))

    study = optuna.create_study(direction="minimize", sampler=optuna.samplers.TPESampler(seed=cfg.seed),
                                pruner=optuna.pruners.MedianPruner(n_startup_trials=3))
    bar = None
    if cfg.progress:
        from tqdm import tqdm

        bar = tqdm(total=cfg.n_trials, desc="  xgboost tuning", file=sys.stderr, leave=False)
    study.optimize(objective, n_trials=cfg.n_trials,
                   callbacks=[lambda s, t: bar.update(1)] if bar is not None else None)
    if bar is not None:
        bar.close()
    best = dict(study.best_params)
    model = make(best).fit(X, y)
    return model, {**best, "cv_mae_bps": float(study.best_value), "trials": cfg.n_trials}


def run_online(df_all: pd.DataFrame, test_ts: np.ndarray, symbol: str, cfg: TrainConfig) -> tuple[dict[int, float], Any]:
    """Progressive (prequential) River scoring over all rows in time order."""
    from tickcast.features import FEATURE_NAMES
    from tickcast.online import OnlineLearner

    learner = OnlineLearner(symbol, cfg.horizon_seconds, cfg.online_model, seed=cfg.seed, snapshot_every=0)
    wanted = set(int(t) for t in test_ts)
    preds: dict[int, float] = {}
    names = list(FEATURE_NAMES)
    ts_arr = df_all["ts_us"].to_numpy()
    close = df_all["close"].to_numpy(dtype=float)
    vals = df_all[names].to_numpy(dtype=float)
    for i in range(len(df_all)):
        row = FeatureRow(symbol, int(ts_arr[i]), float(close[i]), dict(zip(names, vals[i].tolist(), strict=True)))
        out = learner.on_row(row)
        if out.predictions and row.ts_us in wanted:
            preds[row.ts_us] = out.predictions[0]["predicted_price"]
    return preds, learner


def train_symbol(store: Any, registry: Any, symbol: str, since_us: int | None, until_us: int | None,
                 cfg: TrainConfig) -> dict[str, Any]:
    t0 = time.perf_counter()
    raw = load_features(store, [symbol], since_us, until_us)
    if raw.empty:
        raise DatasetError(f"no feature rows for {symbol} in the requested range")
    versions = raw["feature_set_version"].unique().tolist()
    if len(versions) != 1:
        raise DatasetError(f"{symbol}: mixed feature_set_version {versions}; pick a range with one")
    h_us, w_us = cfg.horizon_seconds * 1_000_000, cfg.window_seconds * 1_000_000
    ds = build_dataset(raw, h_us, w_us)
    if len(ds) < MIN_ROWS:
        raise DatasetError(f"{symbol}: only {len(ds)} labelled rows with warm features (need {MIN_ROWS})")
    t_build = time.perf_counter() - t0
    split = train_test_split_embargo(ds["ts_us"].to_numpy(), cfg.test_fraction, h_us, h_us)
    train, test = ds.iloc[: split.train_end], ds.iloc[split.test_start :]
    if len(train) < MIN_ROWS // 2:
        raise DatasetError(f"{symbol}: training span too short ({len(train)} rows)")
    cols = input_columns(ds)
    Xtr, ytr = train[cols].to_numpy(), train["y_bps"].to_numpy()
    Xte = test[cols].to_numpy()
    gap = max(1, h_us // w_us)
    _log(cfg, f"{symbol}: {len(ds):,} rows ({len(train):,} train, {len(test):,} test), "
              f"dataset built in {t_build:.1f} s")

    price, actual = test["price"].to_numpy(), test["label_price"].to_numpy()
    preds: dict[str, np.ndarray] = {"persistence": price, "mean_last_10": test["mean10"].to_numpy()}
    fitted: dict[str, tuple[Any, dict[str, Any]]] = {}
    _log(cfg, "  lasso …")
    fitted["lasso"] = fit_lasso(Xtr, ytr, cfg, gap)
    preds["lasso"] = price * np.exp(fitted["lasso"][0].predict(Xte) / 1e4)
    _log(cfg, "  xgboost …")
    fitted["xgboost"] = fit_xgboost(Xtr, ytr, cfg, gap)
    preds["xgboost"] = price * np.exp(fitted["xgboost"][0].predict(Xte) / 1e4)
    _log(cfg, f"  river {cfg.online_model} (progressive) …")
    online_preds, learner = run_online(raw, test["ts_us"].to_numpy(), symbol, cfg)
    # the online model warms up on its own; score every model on the rows it predicted too
    have = np.array([int(t) in online_preds for t in test["ts_us"]])
    if not have.all():
        keep = have
        price, actual = price[keep], actual[keep]
        preds = {k: v[keep] for k, v in preds.items()}
        test = test[keep]
    preds["online"] = np.array([online_preds[int(t)] for t in test["ts_us"]])
    fitted["online"] = (learner.model, {"kind": cfg.online_model, "samples_seen": learner.samples_seen})

    h_steps = max(1, h_us // w_us)
    p_err = price - actual
    p_mae = float(np.mean(np.abs(p_err)))
    rows: list[dict[str, Any]] = []
    for name, pred in preds.items():
        s = score(pred, actual, price, persistence_mae=p_mae)
        dm = diebold_mariano(pred - actual, p_err, h_steps) if name != "persistence" else {"dm_stat": 0.0, "p_value": 1.0}
        rows.append({"name": name, **s, "dm_stat": dm["dm_stat"], "dm_p_value": dm["p_value"]})
    best = min((r for r in rows if r["name"] in PROMOTABLE), key=lambda r: r["mae"])
    significant = best["skill_vs_persistence"] > 0 and best["dm_p_value"] < cfg.alpha

    fp = fingerprint(ds)
    est, params = fitted[best["name"]]
    predictor = Predictor(
        name="river-" + cfg.online_model if best["name"] == "online" else best["name"],
        kind="river" if best["name"] == "online" else "sklearn",
        input_names=[c[2:] for c in cols], estimator=est, feature_set_version=versions[0],
        horizon_seconds=cfg.horizon_seconds, params=params,
    )
    report: dict[str, Any] = {
        "symbol": symbol,
        "horizon_seconds": cfg.horizon_seconds,
        "window_seconds": cfg.window_seconds,
        "feature_set_version": versions[0],
        "train": {"from": us_to_iso(int(train["ts_us"].iloc[0])), "to": us_to_iso(int(train["ts_us"].iloc[-1])),
                  "rows": len(train)},
        "test": {"from": us_to_iso(int(test["ts_us"].iloc[0])), "to": us_to_iso(int(test["ts_us"].iloc[-1])),
                 "rows": len(test)},
        "embargo_seconds": cfg.horizon_seconds,
        "models": rows,
        "params": {k: v[1] for k, v in fitted.items()},
        "seed": cfg.seed,
        "data_fingerprint": fp,
    }
    meta = {"symbol": symbol, "model": best["name"], "params": params, "metrics": best,
            "train": report["train"], "test": report["test"], "features": predictor.input_names,
            "feature_set_version": versions[0], "horizon_seconds": cfg.horizon_seconds,
            "data_fingerprint": fp, "seed": cfg.seed, "model_kind": "batch:" + best["name"]}
    name = "batch-" + symbol.replace("/", "_")
    if registry is not None:
        version = registry.save(name, predictor, meta)
        if significant:
            reason = (f"{best['name']} beats persistence on the test span: skill "
                      f"{best['skill_vs_persistence']:.4f}, Diebold–Mariano p = {best['dm_p_value']:.3g} < {cfg.alpha}")
            registry.set_alias(alias_for(symbol), name, version, reason)
            report["promoted"] = {"name": best["name"], "version": version, "reason": reason}
        else:
            reason = (f"not promoted: best model {best['name']} has skill {best['skill_vs_persistence']:.4f} "
                      f"with Diebold–Mariano p = {best['dm_p_value']:.3g} (needs skill > 0 and p < {cfg.alpha}); "
                      f"stored as candidate {name}@{version}")
            report["promoted"] = {"name": None, "version": None, "candidate": version, "reason": reason}
    else:
        report["promoted"] = {"name": None, "version": None, "reason": "no registry configured"}
    _log(cfg, f"  done in {time.perf_counter() - t0:.1f} s")
    return json_safe(report)  # type: ignore[no-any-return]


def json_safe(obj: Any) -> Any:
    """NaN/inf are not JSON: report them as null."""
    if isinstance(obj, float):
        return obj if np.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.generic):
        return json_safe(obj.item())
    return obj


def format_table(report: dict[str, Any]) -> str:
    lines = [f"{report['symbol']}  horizon {report['horizon_seconds']} s  test {report['test']['from']} → "
             f"{report['test']['to']} ({report['test']['rows']:,} rows)",
             f"{'model':<14}{'MAE':>12}{'RMSE':>12}{'dir.acc':>9}{'skill':>9}{'DM p':>9}"]
    for r in report["models"]:
        dacc = r["directional_accuracy"]
        dtxt = f"{dacc:>9.3f}" if dacc is not None and np.isfinite(dacc) else f"{'—':>9}"
        lines.append(f"{r['name']:<14}{r['mae']:>12.4f}{r['rmse']:>12.4f}{dtxt}"
                     f"{r['skill_vs_persistence']:>9.4f}{r['dm_p_value']:>9.3g}")
    lines.append(f"→ {report['promoted']['reason']}")
    return "\n".join(lines)


def train(store: Any, registry: Any, symbols: list[str], since_us: int | None, until_us: int | None,
          cfg: TrainConfig) -> list[dict[str, Any]]:
    reports = []
    for sym in symbols:
        reports.append(train_symbol(store, registry, sym, since_us, until_us, cfg))
    return reports


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
