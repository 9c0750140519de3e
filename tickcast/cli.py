"""tickcast — predicts crypto prices 60 s ahead from Kraken trades: features, training, serving."""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tickcast.config import ConfigError, Settings
from tickcast.embedded import EmbeddedError

EPILOG = """Configuration comes from TICKCAST_* environment variables (see README);
flags of a command override them for that command."""


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


def parse_time(text: str) -> int:
    """RFC 3339 / ISO date or unix seconds -> µs since the epoch (UTC)."""
    from datetime import UTC, datetime

    from tickcast.schema import dt_to_us

    try:
        return int(round(float(text) * 1_000_000))
    except ValueError:
        pass
    try:
        ts = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise SystemExit(f"tickcast: {text!r} is not a time: use RFC 3339 (2026-01-01T00:00:00Z), "
                         "a date (2026-01-01) or unix seconds") from None
    return dt_to_us(ts if ts.tzinfo else ts.replace(tzinfo=UTC))


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


def flow_command(workers: int = 1) -> list[str]:
    cmd = [sys.executable, "-m", "bytewax.run", "dataflows.features"]
    if workers > 1:
        cmd += ["-w", str(workers)]
    return cmd


def _die_with_parent() -> None:
    """In a child: get SIGTERM when `tickcast up` dies, even by SIGKILL (Linux)."""
    import ctypes

    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _stop(proc: subprocess.Popen[bytes], sig: int, timeout: float) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, sig)
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    except ProcessLookupError:
        pass


def _last_line(log: Path) -> str:
    """The last non-empty line of a child's log (its one-line error, when it failed)."""
    try:
        lines = [x for x in log.read_text(errors="replace").splitlines() if x.strip()]
    except FileNotFoundError:
        return ""
    return lines[-1].strip() if lines else ""


def cmd_up(args: argparse.Namespace) -> int:
    """Everything on one machine: embedded Valkey, the feature + online-learning flow
    (with Bytewax recovery under the data dir, so `up` again resumes), the API on
    gunicorn, and periodic training with gated promotion. With ``--kafka``: ingestion
    into Kafka and the feature flow reading it, on TICKCAST_KAFKA_BROKERS or an embedded
    tansu broker whose log is kept durably on an embedded SeaweedFS S3.

    Why Kafka is opt-in locally: tansu 0.6 on SeaweedFS is slow and heavy at live rates
    (benchmarks/bench_kafka_lag.py at 100 trades/s: consumer lag p99 1.7-6.9 s, a whole
    core for the broker pair); a lagging consumer no longer makes trades late (the
    feature flow's clock follows the ingest's heartbeats) but delays every candle. tansu
    in memory would be fast but loses the topic on restart, breaking exact resumption."""
    import urllib.request

    overrides: dict[str, str] = {}
    if args.source:
        overrides["TICKCAST_SOURCE"] = args.source
    if args.symbols:
        overrides["TICKCAST_SYMBOLS"] = args.symbols
    if args.data_dir:
        overrides["TICKCAST_DATA_DIR"] = args.data_dir
    s = _settings(overrides)
    data_dir = s.data_dir.resolve()
    logs = data_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    # every child carries TICKCAST_DATA_DIR: `ps e`/`/proc/*/environ` tell which `up` they belong to
    env = {**os.environ, **overrides, "TICKCAST_DATA_DIR": str(data_dir)}
    via_kafka = s.source == "kafka" or args.kafka
    embedded_kafka = via_kafka and s.source != "kafka" and not os.environ.get("TICKCAST_KAFKA_BROKERS")
    children: dict[str, subprocess.Popen[bytes]] = {}
    started_valkey = False
    s3 = broker = None
    stop = {"now": False}

    def _on_signal(signum: int, frame: object) -> None:
        stop["now"] = True

    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)

    def spawn(name: str, cmd: list[str], **extra: str) -> subprocess.Popen[bytes]:
        log = (logs / f"{name}.log").open("ab")
        children[name] = subprocess.Popen(cmd, env={**env, **extra}, stdout=log, stderr=subprocess.STDOUT,
                                          start_new_session=True, preexec_fn=_die_with_parent)
        return children[name]

    def source_slug(source: str) -> str:
        import hashlib

        if source in ("kraken", "kafka", "sim"):
            return source
        return "replay-" + hashlib.sha1(str(Path(source[7:]).resolve()).encode()).hexdigest()[:10]

    def recovery(flow_name: str, source: str) -> str:
        """The flow's Bytewax recovery directory, one per source (a replay file, the
        simulator and the live feed are different histories: sharing window state
        between them would fill years of empty candles or make every trade late).
        Initialised in a temporary directory and renamed, so it exists only complete."""
        d = data_dir / "recovery" / f"{flow_name}-{source_slug(source)}"
        if not d.exists():
            tmp = d.with_name(d.name + ".init")
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            r = subprocess.run([sys.executable, "-m", "bytewax.recovery", str(tmp), "1"], capture_output=True,
                               text=True)
            if r.returncode != 0:
                raise EmbeddedError(f"could not initialise Bytewax recovery in {d}: {r.stderr.strip()[-300:]}")
            tmp.rename(d)
        return str(d)

    def failed(name: str) -> str | None:
        """Why child ``name`` is gone, or None while it runs (or ended as it should: the
        flow reading a replay file exits 0 at its end; the API keeps serving)."""
        p = children.get(name)
        reads_replay = s.replay_path is not None and (name == "ingest" or (name == "features" and not via_kafka))
        if p is None or p.poll() is None or (p.returncode == 0 and reads_replay):
            return None
        why = _last_line(logs / f"{name}.log")
        return f"the {name} process exited with {p.returncode}: {why} (log: {logs / f'{name}.log'})"

    rc = 0
    trainer: subprocess.Popen[bytes] | None = None
    try:
        redis_url = s.redis_url
        if not redis_url:
            from tickcast.embedded import ensure_valkey

            redis_url = ensure_valkey(data_dir)
            started_valkey = True
        env["TICKCAST_REDIS_URL"] = redis_url
        brokers = s.kafka_brokers
        if embedded_kafka:
            from tickcast.embedded import SeaweedS3
            from tickcast.tansu import TansuBroker

            popen = {"start_new_session": True, "preexec_fn": _die_with_parent}
            s3 = SeaweedS3(data_dir / "kafka", buckets=("tansu",), env={"TICKCAST_DATA_DIR": str(data_dir)},
                           **popen).start()
            broker = TansuBroker.start(storage="s3://tansu/", s3=s3.creds, log_path=logs / "kafka.log",
                                       env={"TICKCAST_DATA_DIR": str(data_dir)}, popen=popen)
            brokers = broker.bootstrap
            env["TICKCAST_KAFKA_BROKERS"] = brokers
        flow = [sys.executable, "-m", "bytewax.run"]
        snap = ["-s", "5", "-b", "0"]  # a recovery snapshot every 5 s, none kept longer than needed
        if via_kafka and s.source != "kafka":
            if not os.environ.get("TICKCAST_TRADES_TOPIC"):
                # one topic per source: the Kafka reader drops a trade whose id is not above
                # the last of its symbol, so histories must not share a topic
                env["TICKCAST_TRADES_TOPIC"] = f"{s.trades_topic}-{source_slug(s.source)}"
            spawn("ingest", [*flow, "dataflows.ingest", "-r", recovery("ingest", s.source), *snap])
            spawn("features", [*flow, "dataflows.features", "-r",
                               recovery("features-via-kafka", s.source), *snap], TICKCAST_SOURCE="kafka")
        else:
            spawn("features", [*flow, "dataflows.features", "-r", recovery("features", s.source), *snap])
        # the news flow beside the price flow (README, News); one recovery dir per news source spec
        news = s.news_source_resolved
        if news != "off":
            spawn("news", [*flow, "dataflows.news", "-r", recovery("news", news if news in ("sim",) else
                                                                     "replay:" + news), *snap])
        port = s.api_port or _free_port()
        gunicorn = str(Path(sys.executable).parent / "gunicorn")
        spawn("api", [gunicorn, "-w", "2", "-b", f"127.0.0.1:{port}", "--access-logfile", "-",
                      "api:create_app()"])
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while not stop["now"]:
            why = next((w for n in ("ingest", "features", "api") if (w := failed(n))), None)
            if why:
                print(f"tickcast up: {why}", file=sys.stderr)
                return 1
            try:
                urllib.request.urlopen(url + "/openapi.json", timeout=1).read()
                break
            except Exception:  # noqa: BLE001 - not up yet
                if time.monotonic() > deadline:
                    print(f"tickcast up: the API did not start within 60 s; see {logs / 'api.log'}",
                          file=sys.stderr)
                    return 1
                time.sleep(0.2)
        if stop["now"]:
            return 0
        path = f"{s.source} -> Kafka ({brokers}) -> features" if via_kafka and s.source != "kafka" else (
            f"Kafka ({brokers}) -> features" if via_kafka else f"{s.source} -> features")
        print("tickcast up")
        print(f"  API         {url}/predict?symbol={s.symbols[0]}   (/dashboard, /health, /metrics, /models)")
        print(f"  source      {path}")
        print(f"  news        {news if len(news) < 90 else news[:87] + '...'}   (log: {logs / 'news.log'})")
        print(f"  symbols     {','.join(s.symbols)}")
        print(f"  data dir    {data_dir}")
        print(f"  offline     {s.offline_url}   (tickcast sql \"SELECT ...\")")
        print(f"  online      {redis_url}")
        print(f"  logs        {logs}")
        print("Ctrl-C stops everything.", flush=True)
        next_train = time.monotonic() + args.train_every
        next_status = 0.0
        from tickcast.stores.offline import open_offline

        store = open_offline(s.offline_url, read_only=True)
        while not stop["now"]:
            time.sleep(0.25)
            why = next((w for n in ("ingest", "features", "api") if (w := failed(n))), None)
            if why:
                rc = 1
                print(f"\ntickcast up: {why}", file=sys.stderr)
                break
            now = time.monotonic()
            if args.train_every and now >= next_train and (trainer is None or trainer.poll() is not None):
                trainer = spawn("train", [sys.executable, "-m", "tickcast.cli", "train", "--quiet"])
                next_train = now + args.train_every
            if now >= next_status:
                next_status = now + 2.0
                print("\r" + _status_line(store, url, s.symbols[0])[:150].ljust(150), end="", flush=True)
    finally:
        print("\nstopping …", flush=True)
        if trainer is not None:
            _stop(trainer, signal.SIGTERM, 10)
        if "api" in children:
            _stop(children["api"], signal.SIGTERM, 15)
        for name in ("news", "ingest", "features"):  # sources first, so the flows see no half-sent data
            if name in children:
                _stop(children[name], signal.SIGINT, 30)
        if broker is not None:
            broker.stop()
        if s3 is not None:
            s3.stop()
        if started_valkey:
            from tickcast.embedded import stop_valkey

            stop_valkey(data_dir)
        print("stopped.")
    return rc


def _status_line(store: Any, url: str, symbol: str) -> str:
    """trades/s over the newest minute of candles, candles written, the last prediction."""
    import json
    import urllib.parse
    import urllib.request

    n_candles, rate, last = 0, 0.0, "no prediction yet"
    try:
        n_candles, last_min = store.query(
            "SELECT count(), sumIf(trades, window_start >= (SELECT max(window_start) FROM candles) "
            "- INTERVAL 60 SECOND) FROM candles").result_rows[0]
        rate = float(last_min or 0) / 60.0
        q = urllib.parse.urlencode({"symbol": symbol})
        pr = json.loads(urllib.request.urlopen(f"{url}/predict?{q}", timeout=1).read())
        last = f"{symbol} {pr['predicted_price']:.2f} by {pr['model']['name']}@{pr['model']['version'][:24]}"
    except Exception:  # noqa: BLE001 - the status line is best effort
        pass
    return f"  {rate:7.1f} trades/s | {n_candles:>7} candles | {last}"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tickcast", description=__doc__, epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    up = sub.add_parser(
        "up", help="run the whole system locally (what `make run` starts)", epilog=EPILOG,
        description="Starts, under the data dir: Valkey, dataflows.features (source -> candles, features, "
        "online learning -> stores), the API on gunicorn and periodic training. With --kafka: ingestion into "
        "Kafka (dataflows.ingest) and the feature flow reading the topic, on TICKCAST_KAFKA_BROKERS or an "
        "embedded broker (tansu on SeaweedFS S3). Prints the URLs and a live status line; logs go to "
        "DATA_DIR/logs. Ctrl-C stops everything; `up` again resumes from Bytewax recovery. --source kafka reads "
        "an existing topic.")
    up.add_argument("--source", help="kraken | kafka | sim | replay:FILE (default: $TICKCAST_SOURCE or kraken)")
    up.add_argument("--symbols", help="comma-separated Kraken v2 symbols (default: BTC/USD,ETH/USD)")
    up.add_argument("--data-dir", help="directory for every embedded store (default: ./data)")
    up.add_argument("--kafka", action="store_true",
                    help="put Kafka between ingestion and the feature flow: TICKCAST_KAFKA_BROKERS if set, else an "
                    "embedded tansu broker on an embedded SeaweedFS S3 (durable and exact, but slow: consumer lag of "
                    "seconds at 100 trades/s; for demos of the Kafka path)")
    up.add_argument("--train-every", type=float, default=600.0,
                    help="seconds between training runs (gated promotion; 0 = never; default 600)")
    up.set_defaults(func=cmd_up)

    st = sub.add_parser("stop", help="stop the embedded servers a killed `up` or flow left running for a data dir",
                        epilog=EPILOG,
                        description="`tickcast up` stops everything it started, and a flow run on its own stops "
                        "the embedded Valkey it started, when they end normally (Ctrl-C, end of a replay). After a "
                        "kill -9, the Valkey daemon of the data dir stays up (the next `up` or flow reuses it); this "
                        "stops it (its data is saved and reloaded at the next start).")
    st.add_argument("--data-dir", help="the data dir (default: $TICKCAST_DATA_DIR or ./data)")
    st.set_defaults(func=cmd_stop)

    sql = sub.add_parser("sql", help="run SQL (read-only unless --write) on the configured offline store",
                         epilog="Tables: candles, features, predictions, dead_letters (one row per key). "
                         + EPILOG)
    sql.add_argument("query", help='e.g. "SELECT symbol, count() FROM candles GROUP BY symbol"')
    sql.add_argument("--format", default="Pretty",
                     help="ClickHouse output format: CSV, JSONEachRow, Pretty (default), TSV, ...")
    sql.add_argument("--write", action="store_true",
                     help="allow writes, schema changes, settings and table functions (file, url, s3, ...); "
                     "without it the query runs with ClickHouse's readonly = 1")
    sql.set_defaults(func=cmd_sql)

    sim = sub.add_parser("sim", help="write a replay file of N simulated Kraken v2 trades")
    sim.add_argument("--trades", type=int, default=100_000, help="number of trades (default 100000)")
    sim.add_argument("--out", required=True, help="output .jsonl path")
    sim.add_argument("--symbols", default="BTC/USD,ETH/USD", help="comma-separated symbols")
    sim.add_argument("--seed", type=int, default=42, help="random seed (same seed, same file)")
    sim.add_argument("--rate", type=float, default=50.0, help="mean trades/s per symbol")
    sim.add_argument("--spread-bps", type=float, default=1.0, help="bid-ask spread in basis points")
    sim.add_argument("--flow-impact", type=float, default=0.0,
                     help="planted dependence of future returns on order flow (0 = none)")
    sim.set_defaults(func=cmd_sim)

    tr = sub.add_parser(
        "train", help="train and evaluate models on the offline store; promote only through a tested gate",
        description="Reads features from the offline store, builds a point-in-time dataset (label = close "
        "at t + TICKCAST_HORIZON_SECONDS by as-of lookup) and evaluates persistence, the mean of the last 10 "
        "prices, Lasso, tuned XGBoost and the River online model walk-forward: the last --test-fraction of the "
        "rows is cut into --folds test blocks; each fold trains and tunes only on the rows whose labels mature "
        "one horizon (the embargo) before its block. Prints per model the pooled out-of-sample MAE, RMSE, "
        "directional accuracy, skill over persistence, Diebold-Mariano p (raw and Holm-corrected over the "
        "candidates), the folds it wins, and the break-even cost in bps per trade of trading the sign of its "
        "prediction. The best candidate becomes the registry alias production-<SYMBOL> only if its "
        "Holm-corrected p < 0.05, it beats persistence in most folds, its skill is at least "
        "TICKCAST_MIN_SKILL (default 0.002), and it does not predict a constant; the output says, per "
        "candidate, why or why not. A symbol without enough data is reported and skipped.", epilog=EPILOG)
    tr.add_argument("--since", help="start of the history (RFC 3339, date, or unix seconds)")
    tr.add_argument("--until", help="end of the history, exclusive")
    tr.add_argument("--symbols", help="comma-separated symbols (default: $TICKCAST_SYMBOLS)")
    tr.add_argument("--report", help="write the JSON report (one object per trained symbol; a list if several; "
                    "fields described in the README's Training section) to this file")
    tr.add_argument("--trials", type=int, default=12, help="Optuna trials for XGBoost, per fold (default 12)")
    tr.add_argument("--folds", type=int, default=3, help="walk-forward folds (default 3)")
    tr.add_argument("--seed", type=int, default=42, help="random seed (same data + seed = same report)")
    tr.add_argument("--test-fraction", type=float, default=0.3,
                    help="share of rows in the out-of-sample span, cut into --folds blocks (default 0.3)")
    tr.add_argument("--min-skill", help="minimum pooled skill over persistence to promote "
                    "(default: $TICKCAST_MIN_SKILL or 0.002)")
    tr.add_argument("--window", type=int, default=0,
                    help="candle length of the stored features (default: detected)")
    tr.add_argument("--no-registry", action="store_true", help="evaluate only; store nothing")
    tr.add_argument("--quiet", action="store_true", help="no progress output")
    tr.set_defaults(func=cmd_train)

    lc = sub.add_parser("load-candles", help="load a candle CSV into the offline store and derive features",
                        description="Formats: binance (open_time,open,high,low,close,volume) or kraken "
                        "(OHLCVT archive). Features come from the same code as the stream.")
    lc.add_argument("file", help="CSV file, e.g. ../shared/data/candles/binanceus_BTCUSD_1m_20230301_20230321.csv")
    lc.add_argument("--symbol", required=True, help="Kraken v2 symbol to store it under, e.g. BTC/USD")
    lc.add_argument("--format", default="auto", choices=["auto", "binance", "kraken"])
    lc.set_defaults(func=cmd_load_candles)

    # commands contributed by other modules: each has register(subparsers)
    import importlib

    for mod in ("tickcast.live.commands", "tickcast.convert"):
        try:
            module = importlib.import_module(mod)
        except ModuleNotFoundError as e:
            if e.name is None or not (mod == e.name or mod.startswith(e.name + ".")):
                raise
            continue
        module.register(sub)
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
