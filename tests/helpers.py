"""Helpers shared by test modules (fixtures live in ``conftest.py``). Test modules import
helpers from here, never from one another; heavy imports happen inside the helpers, so
importing this module is cheap.

* ports and waiting: :func:`free_port` (the project's one port helper, from
  :mod:`tickcast.embedded`), :func:`wait_until`, :func:`leftovers`;
* the feature flow as users run it: :func:`flow_env`, :func:`run_flow`,
  :func:`batch_expected`, :func:`offline_rows`, :func:`assert_matches_batch`,
  :func:`kill_9_mid_run_then_recover`;
* the API's registry and features: :data:`SIGNER`, :func:`predictor`,
  :func:`feature_row`, :func:`publish`;
* the live Kraken source against :mod:`tickcast.testing.fake_kraken`:
  :func:`kraken_settings`, :func:`pump_source`;
* deploy: :func:`compose_binary`.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from models.signing import SigningKey
from tickcast.embedded import free_port

if TYPE_CHECKING:
    from models.predictor import Predictor
    from models.registry import ModelRegistry
    from tickcast.config import Settings
    from tickcast.pipeline import StepOutput
    from tickcast.schema import FeatureRow, Trade
    from tickcast.testing.fake_kraken import FakeKraken

__all__ = [
    "REPO", "SHARED", "SIGNER", "WINDOW", "assert_matches_batch", "batch_expected", "compose_binary",
    "feature_row", "flow_env", "free_port", "kill_9_mid_run_then_recover", "kraken_settings", "leftovers", "offline_rows", "predictor",
    "publish", "pump_source", "run_flow", "wait_until",
]

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
WINDOW = 10  # candle seconds of flow_env and batch_expected


# -- ports, waiting, processes ---------------------------------------------------------------------


def wait_until(predicate, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not ready within {timeout} s")
        time.sleep(0.05)


def leftovers(data: Path) -> list[str]:
    """Processes of this data dir: named in their arguments (Valkey, SeaweedFS) or started
    by `up` (every child has TICKCAST_DATA_DIR=<data> in its environment, e.g. tansu)."""
    mine = f"TICKCAST_DATA_DIR={data}".encode()
    out = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            args = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            environ = (proc / "environ").read_bytes().split(b"\0")
        except OSError:
            continue  # gone, or not ours to read
        if "pytest" not in args and (str(data) in args or mine in environ):
            out.append(args)
    return out


# -- the feature flow ------------------------------------------------------------------------------


def flow_env(replay: Path, lake: Path, redis_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TICKCAST_", "BYTEWAX_"))}
    env.update(
        TICKCAST_SOURCE=f"replay:{replay}",
        TICKCAST_SYMBOLS="BTC/USD,ETH/USD",
        TICKCAST_DATA_DIR=str(lake.parent),
        TICKCAST_CLICKHOUSE_URL=f"chdb://{lake}",
        TICKCAST_REDIS_URL=redis_url,
        TICKCAST_WINDOW_SECONDS=str(WINDOW),
        TICKCAST_ALLOWED_LATENESS_SECONDS="0",
    )
    env.update(extra)
    return env


def run_flow(env: dict[str, str], *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "bytewax.run", "dataflows.features", *args]
    return subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout)


def batch_expected(replay: Path) -> StepOutput:
    from tickcast.kraken import parse_message
    from tickcast.pipeline import run_batch

    trades = []
    for line in replay.read_bytes().splitlines():
        if line.strip():
            trades.extend(parse_message(line, "x", 0)[0])
    return run_batch(trades, WINDOW, 0.0, horizon_seconds=60, online_model="linear", snapshot_every=360)


def offline_rows(lake: Path) -> tuple[list[tuple], list[tuple]]:
    from tickcast.stores.offline import open_offline

    store = open_offline(f"chdb://{lake}", read_only=True)
    try:
        candles = store.query(
            "SELECT symbol, toUnixTimestamp64Micro(window_start), toUnixTimestamp64Micro(window_end), "
            "open, high, low, close, volume, vwap, trades, buy_volume, sell_volume "
            "FROM candles ORDER BY symbol, window_start").result_rows
        features = store.query(
            "SELECT * EXCEPT ts, toUnixTimestamp64Micro(ts) AS ts_us FROM features ORDER BY symbol, ts"
        )
        cols = features.column_names
        frows = [dict(zip(cols, r, strict=True)) for r in features.result_rows]
    finally:
        store.close()
    return candles, frows


def assert_matches_batch(lake: Path, expected: StepOutput) -> None:
    from tickcast.stores.offline import open_offline

    candles, features = offline_rows(lake)
    store = open_offline(f"chdb://{lake}", read_only=True)
    preds = store.query("SELECT symbol, toUnixTimestamp64Micro(ts), model_version, predicted_price, samples_seen, "
                        "pi1_lower, pi2_upper FROM predictions ORDER BY symbol, ts, model_version").result_rows
    store.close()
    exp_p = sorted((p.symbol, p.ts_us, p.model_version, p.predicted_price, p.samples_seen, p.pi1_lower, p.pi2_upper)
                   for p in expected.predictions)
    preds = [tuple(-1.0 if isinstance(x, float) and math.isnan(x) else x for x in r) for r in preds]
    exp_p = [tuple(-1.0 if isinstance(x, float) and math.isnan(x) else x for x in r) for r in exp_p]
    assert len(exp_p) > 0
    assert [tuple(r) for r in preds] == exp_p
    exp_c = sorted(
        (c.symbol, c.window_start_us, c.window_end_us, c.open, c.high, c.low, c.close, c.volume, c.vwap,
          c.trades, c.buy_volume, c.sell_volume) for c in expected.candles)
    assert len(candles) == len(exp_c)
    assert [tuple(r) for r in candles] == exp_c
    exp_f = sorted(expected.features, key=lambda f: (f.symbol, f.ts_us))
    assert len(features) == len(exp_f)
    for got, exp in zip(features, exp_f, strict=True):
        assert (got["symbol"], got["ts_us"], got["close"]) == (exp.symbol, exp.ts_us, exp.close)
        assert got["feature_set_version"] == exp.feature_set_version
        for name, v in exp.values.items():
            g = got[name]
            assert (math.isnan(v) and math.isnan(g)) or g == v, (name, g, v)


def kill_9_mid_run_then_recover(env: dict[str, str], lake: Path, expected: StepOutput, rec: Path) -> None:
    """Run the feature flow with recovery, SIGKILL it once it has written part of the
    offline store, run it again to the end: the store must equal ``expected`` exactly."""
    rec.mkdir()
    subprocess.run([sys.executable, "-m", "bytewax.recovery", str(rec), "1"], check=True)
    args = ["-r", str(rec), "-s", "1", "-b", "0"]
    cmd = [sys.executable, "-m", "bytewax.run", "dataflows.features", *args]
    p = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    # wait until the flow has written part of the offline store, then kill it hard
    while time.monotonic() < deadline and p.poll() is None and not list((lake / "candles").glob("*.parquet")):
        time.sleep(0.02)
    assert p.poll() is None, f"the flow ended before it could be killed: {p.stderr.read().decode()[-2000:]}"
    time.sleep(0.5)
    p.send_signal(signal.SIGKILL)
    p.wait()
    from tickcast.stores.offline import open_offline

    store = open_offline(f"chdb://{lake}", read_only=True)
    partial = store.query("SELECT count() FROM candles").result_rows[0][0]
    store.close()
    assert 0 < partial < len(expected.candles), "the kill must land mid-run"
    r = run_flow(env, *args)
    assert r.returncode == 0, r.stderr[-3000:]
    assert_matches_batch(lake, expected)


# -- the API's registry and features ---------------------------------------------------------------


SIGNER = SigningKey.generate()  # the trainer's key; the API gets only its public half


def predictor(bias_bps: float, version: str = "fs1-w10s") -> Predictor:
    """A scikit-learn Ridge that predicts exactly ``bias_bps`` for any input."""
    import numpy as np
    from sklearn.linear_model import Ridge

    from models.predictor import Predictor
    from tickcast.features import FEATURE_NAMES
    from tickcast.model_inputs import model_inputs

    inputs = list(model_inputs(100.0, {n: 1.0 for n in FEATURE_NAMES}) or {})
    X = np.zeros((10, len(inputs)))
    est = Ridge().fit(X, np.full(10, bias_bps))  # predicts exactly bias_bps
    return Predictor("ridge", "sklearn", inputs, est, version, 60)


def feature_row(symbol: str = "BTC/USD", age_s: float = 1.0, close: float = 60000.0) -> FeatureRow:
    from tickcast.features import FEATURE_NAMES
    from tickcast.schema import FeatureRow

    vals = {n: 0.001 for n in FEATURE_NAMES}
    vals.update(ema_12=close, ema_26=close, rsi_14=55.0)
    return FeatureRow(symbol, int((time.time() - age_s) * 1e6), close, vals, "fs1-w10s")


def publish(reg: ModelRegistry, p: Predictor, symbol: str = "BTC/USD") -> str:
    name = "batch-" + symbol.replace("/", "_")
    v = reg.save(name, p, {"model": p.name})
    reg.set_alias("production-" + symbol.replace("/", "_"), name, v, "test")
    return v


# -- the live Kraken source ------------------------------------------------------------------------


def kraken_settings(fk: FakeKraken, tmp: Path, **kw: Any) -> Settings:
    """Settings of the live source pointed at ``fk``: fast reconnects, a 1-s silence timeout."""
    from tickcast.config import Settings

    return Settings(source="kraken", symbols=tuple(fk.symbols), kraken_ws_url=fk.ws_url,
                    kraken_rest_url=fk.rest_url, data_dir=tmp, clickhouse_url=f"chdb://{tmp / 'offline'}",
                    kraken_backoff_seconds=0.02, kraken_silence_seconds=1,
                    **kw)


def pump_source(part, fk: FakeKraken, got: list[Trade], until_all: bool = True,  # type: ignore[no-untyped-def]
                timeout: float = 15.0) -> None:
    """Call the source partition's next_batch as Bytewax's worker would (every 5 ms when
    idle), parsing what it emits into ``got``, until every server trade arrived (or for
    ``timeout`` seconds when ``until_all`` is false)."""
    from tickcast.kraken import parse_message

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for _, msgs in part.next_batch():
            for pos, raw in msgs:
                got.extend(parse_message(raw, "kraken", 0, pos)[0])
        if until_all and len(got) >= len(fk.all_trades()):
            return
        time.sleep(0.005)
    assert not until_all, f"{len(fk.all_trades()) - len(got)} trades never arrived"


# -- deploy ----------------------------------------------------------------------------------------


def compose_binary() -> Path:
    import compose

    return Path(compose.__file__).parent / "docker-compose"
