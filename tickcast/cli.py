"""tickcast — predicts crypto prices 60 s ahead from Kraken trades: features, training, serving."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from tickcast.command import EPILOG, Command, parse_time
from tickcast.config import ConfigError, Settings
from tickcast.embedded import EmbeddedError


def _settings(env_overrides: dict[str, str] | None = None) -> Settings:
    env = dict(os.environ)
    env.update(env_overrides or {})
    return Settings.from_env(env)


def cmd_sql(args: argparse.Namespace) -> int:
    from tickcast.stores.offline import open_offline

    s = _settings()
    store = open_offline(s.offline_url, read_only=not args.write)
    try:
        if args.write:
            store.ensure_schema()  # a read never creates or alters anything
        out = store.raw(args.query, args.format, readonly=not args.write)
    except Exception as e:  # noqa: BLE001 - a query error is the user's, show it plainly
        from tickcast.stores.errors import redact

        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if not args.write and ("READONLY" in first or "readonly mode" in first):
            first += (" — tickcast sql is read-only: writes, schema changes, settings and table functions "
                      "(file, url, s3, …) need --write")
        print(f"tickcast sql: {redact(first)[:700]}", file=sys.stderr)
        return 1
    finally:
        store.close()
    text = out.decode() if isinstance(out, bytes) else out
    sys.stdout.write(text if text.endswith("\n") or not text else text + "\n")
    return 0


def cmd_stop(args: argparse.Namespace) -> int:
    from tickcast.embedded import stop_valkey

    s = _settings({"TICKCAST_DATA_DIR": args.data_dir} if args.data_dir else None)
    stopped = stop_valkey(s.data_dir)
    print(f"tickcast stop: {'stopped the' if stopped else 'no'} embedded Valkey of {s.data_dir.resolve()}",
          file=sys.stderr)
    return 0


def cmd_sim(args: argparse.Namespace) -> int:
    from tickcast.sim import SimParams, write_replay

    symbols = [s.strip() for s in args.symbols.split(",") if s.strip()]
    env = {"TICKCAST_SYMBOLS": ",".join(symbols)}
    _settings(env)  # validates the symbols with the same rules as everywhere else
    params = SimParams(rate=args.rate, spread_bps=args.spread_bps, flow_impact=args.flow_impact)
    t0 = time.perf_counter()
    n = write_replay(Path(args.out), args.trades, symbols, seed=args.seed, params=params)
    print(f"wrote {n} trades for {','.join(symbols)} to {args.out} in {time.perf_counter() - t0:.1f} s",
          file=sys.stderr)
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    import json
    import time as _time

    from models.registry import registry_from_settings
    from models.train import TrainConfig, format_table, record_run, train
    from tickcast.stores.offline import open_offline

    env = {"TICKCAST_SYMBOLS": args.symbols} if args.symbols else {}
    if args.min_skill is not None:
        try:
            ok = 0 <= float(args.min_skill) < 1
        except ValueError:
            ok = False
        if not ok:
            raise SystemExit(f"tickcast train: --min-skill {args.min_skill} is not accepted: use a skill in [0, 1)")
        env["TICKCAST_MIN_SKILL"] = args.min_skill
    s = _settings(env)
    since = parse_time(args.since) if args.since else None
    until = parse_time(args.until) if args.until else None
    if since is not None and until is not None and since >= until:
        raise SystemExit("tickcast: --since must be before --until")
    for flag, value, ok, accepted in (("--folds", args.folds, args.folds >= 1, "a whole number >= 1"),
                                      ("--trials", args.trials, args.trials >= 1, "a whole number >= 1"),
                                      ("--test-fraction", args.test_fraction, 0 < args.test_fraction < 1,
                                       "a number in (0, 1)")):
        if not ok:
            raise SystemExit(f"tickcast train: {flag} {value} is not accepted: use {accepted}")
    store = open_offline(s.offline_url, read_only=True)
    store.ensure_schema()
    window = args.window or _detect_window(store, s)
    cfg = TrainConfig(horizon_seconds=s.horizon_seconds, window_seconds=window, n_trials=args.trials,
                      n_folds=args.folds, seed=args.seed, test_fraction=args.test_fraction,
                      min_skill=s.min_skill, online_model=s.online_model if s.online_model != "off" else "linear",
                      progress=not args.quiet)
    if cfg.horizon_seconds % window:
        raise SystemExit(f"tickcast: the horizon ({cfg.horizon_seconds} s) is not a multiple of the "
                         f"candle length in the store ({window} s); set TICKCAST_HORIZON_SECONDS")
    registry = None if args.no_registry else registry_from_settings(s, writer=True)
    started = int(_time.time() * 1e6)
    reports, skipped = train(store, registry, list(s.symbols), since, until, cfg)
    for r in reports:
        print(format_table(r))
        print()
    for sym, why in skipped.items():
        print(f"{sym}: skipped, not trained: {why}")
    if not reports:
        store.close()
        raise SystemExit("tickcast train: nothing to train: "
                         + "; ".join(f"{sym}: {why}" for sym, why in skipped.items()))
    if args.report:
        payload = reports[0] if len(reports) == 1 else reports
        Path(args.report).write_text(json.dumps(payload, indent=2, default=str) + "\n")
        print(f"report written to {args.report}", file=sys.stderr)
    try:
        record_run(store, reports, started)
    finally:
        store.close()
    return 0


def _detect_window(store: object, s: Settings) -> int:
    """The candle length of the stored features (from feature_set_version 'fsN-w<S>s')."""
    rows = store.query(  # type: ignore[attr-defined]
        "SELECT feature_set_version, count() FROM features WHERE symbol IN {s:Array(String)} "
        "GROUP BY feature_set_version ORDER BY count() DESC", parameters={"s": list(s.symbols)}).result_rows
    if not rows:
        raise SystemExit(f"tickcast train: no features for {','.join(s.symbols)} in {s.offline_url}; "
                         "run the feature flow or `tickcast load-candles` first")
    version = rows[0][0]
    try:
        return int(version.rsplit("-w", 1)[1].rstrip("s"))
    except (IndexError, ValueError):
        return s.window_seconds


def cmd_load_candles(args: argparse.Namespace) -> int:
    from tickcast.features import compute_features
    from tickcast.history import read_candles_csv
    from tickcast.stores.offline import open_offline
    from tickcast.stores.tables import candles_to_arrow, features_to_arrow

    s = _settings({"TICKCAST_SYMBOLS": args.symbol})
    symbol = s.symbols[0]
    candles, window = read_candles_csv(Path(args.file), symbol, args.format)
    feats = compute_features(candles, window)
    store = open_offline(s.offline_url)
    store.ensure_schema()
    store.insert("candles", candles_to_arrow(candles))
    store.insert("features", features_to_arrow(feats))
    store.close()
    print(f"loaded {len(candles):,} {window}-s candles and {len(feats):,} feature rows for {symbol} "
          f"into {s.offline_url}", file=sys.stderr)
    return 0


def _stop_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", help="the data dir (default: $TICKCAST_DATA_DIR or ./data)")


def _sql_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("query", help='e.g. "SELECT symbol, count() FROM candles GROUP BY symbol"')
    p.add_argument("--format", default="Pretty",
                   help="ClickHouse output format: CSV, JSONEachRow, Pretty (default), TSV, ...")
    p.add_argument("--write", action="store_true",
                   help="allow writes, schema changes, settings and table functions (file, url, s3, ...); "
                   "without it the query runs with ClickHouse's readonly = 1")


def _sim_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--trades", type=int, default=100_000, help="number of trades (default 100000)")
    p.add_argument("--out", required=True, help="output .jsonl path")
    p.add_argument("--symbols", default="BTC/USD,ETH/USD", help="comma-separated symbols")
    p.add_argument("--seed", type=int, default=42, help="random seed (same seed, same file)")
    p.add_argument("--rate", type=float, default=50.0, help="mean trades/s per symbol")
    p.add_argument("--spread-bps", type=float, default=1.0, help="bid-ask spread in basis points")
    p.add_argument("--flow-impact", type=float, default=0.0,
                   help="planted dependence of future returns on order flow (0 = none)")


def _train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--since", help="start of the history (RFC 3339, date, or unix seconds)")
    p.add_argument("--until", help="end of the history, exclusive")
    p.add_argument("--symbols", help="comma-separated symbols (default: $TICKCAST_SYMBOLS)")
    p.add_argument("--report", help="write the JSON report (one object per trained symbol; a list if several; "
                   "fields described in the README's Training section) to this file")
    p.add_argument("--trials", type=int, default=12, help="Optuna trials for XGBoost, per fold (default 12)")
    p.add_argument("--folds", type=int, default=3, help="walk-forward folds (default 3)")
    p.add_argument("--seed", type=int, default=42, help="random seed (same data + seed = same report)")
    p.add_argument("--test-fraction", type=float, default=0.3,
                   help="share of rows in the out-of-sample span, cut into --folds blocks (default 0.3)")
    p.add_argument("--min-skill", help="minimum pooled skill over persistence to promote "
                   "(default: $TICKCAST_MIN_SKILL or 0.002)")
    p.add_argument("--window", type=int, default=0,
                   help="candle length of the stored features (default: detected)")
    p.add_argument("--no-registry", action="store_true", help="evaluate only; store nothing")
    p.add_argument("--quiet", action="store_true", help="no progress output")


def _load_candles_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", help="CSV file, e.g. ../shared/data/candles/binanceus_BTCUSD_1m_20230301_20230321.csv")
    p.add_argument("--symbol", required=True, help="Kraken v2 symbol to store it under, e.g. BTC/USD")
    p.add_argument("--format", default="auto", choices=["auto", "binance", "kraken"])


STOP = Command(
    "stop", cmd_stop, _stop_args,
    help="stop the embedded servers a killed `up` or flow left running for a data dir", epilog=EPILOG,
    description="`tickcast up` stops everything it started, and a flow run on its own stops "
    "the embedded Valkey it started, when they end normally (Ctrl-C, end of a replay). After a "
    "kill -9, the Valkey daemon of the data dir stays up (the next `up` or flow reuses it); this "
    "stops it (its data is saved and reloaded at the next start).")
SQL = Command(
    "sql", cmd_sql, _sql_args, help="run SQL (read-only unless --write) on the configured offline store",
    epilog="Tables: candles, features, predictions, dead_letters (one row per key). " + EPILOG)
SIM = Command("sim", cmd_sim, _sim_args, help="write a replay file of N simulated Kraken v2 trades")
TRAIN = Command(
    "train", cmd_train, _train_args,
    help="train and evaluate models on the offline store; promote only through a tested gate",
    description="Reads features from the offline store, builds a point-in-time dataset (label = close "
    "at t + TICKCAST_HORIZON_SECONDS by as-of lookup) and evaluates persistence, the mean of the last 10 "
    "prices, Lasso, tuned XGBoost and the online model (River-style, progressive) walk-forward: the last --test-fraction of the "
    "rows is cut into --folds test blocks; each fold trains and tunes only on the rows whose labels mature "
    "one horizon (the embargo) before its block. Prints per model the pooled out-of-sample MAE, RMSE, "
    "directional accuracy, skill over persistence, Diebold-Mariano p (raw and Holm-corrected over the "
    "candidates), the folds it wins, and the break-even cost in bps per trade of trading the sign of its "
    "prediction. The best candidate becomes the registry alias production-<SYMBOL> only if its "
    "Holm-corrected p < 0.05, it beats persistence in most folds, its skill is at least "
    "TICKCAST_MIN_SKILL (default 0.002), and it does not predict a constant; the output says, per "
    "candidate, why or why not. A symbol without enough data is reported and skipped.", epilog=EPILOG)
LOAD_CANDLES = Command(
    "load-candles", cmd_load_candles, _load_candles_args,
    help="load a candle CSV into the offline store and derive features",
    description="Formats: binance (open_time,open,high,low,close,volume) or kraken "
    "(OHLCVT archive). Features come from the same code as the stream.")


def commands() -> list[Command]:
    """The one table of commands, in the order of ``tickcast --help``. A new command is
    a :class:`~tickcast.command.Command` next to its handler, and one entry here."""
    from tickcast.convert import CONVERT
    from tickcast.live.commands import BACKFILL, RECORD
    from tickcast.up import UP

    return [UP, STOP, SQL, SIM, TRAIN, LOAD_CANDLES, RECORD, BACKFILL, CONVERT]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tickcast", description=__doc__, epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in commands():
        command.add_to(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as e:
        print(f"tickcast: {e}", file=sys.stderr)
        return 2
    except EmbeddedError as e:
        print(f"tickcast: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
