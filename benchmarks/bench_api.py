"""Load test of GET /predict with real load generators, against a reference.

Starts, on this machine: an embedded Valkey, a file registry with a production model
(scikit-learn Ridge behind the same Predictor the training pipeline publishes), fresh
features in the online store, then two gunicorn servers with the same settings
(``-w 2`` sync workers): the tickcast API and ``benchmarks/minimal_app.py`` (constant
JSON). Measures in the same run:

  * throughput: ``wrk -t2 -c16 -d{D}s`` on both -> req/s and the ratio (target >= 0.6),
    and on a third server with the feature micro-cache off (Redis on every request);
  * latency at 200 req/s: ``hey -z {D}s -c 4 -q 50`` on /predict -> p50/p99 (target
    p99 < 10 ms) and the error count (target 0);
  * the news case beside it: ETH/USD's production model needs the ``news`` group too,
    whose online state holds 180 items (6 h at 30 items/h, the most the group keeps at
    that rate): /predict reads it and computes the news features at the price row's time
    on every request (cached for TICKCAST_FEATURE_CACHE_SECONDS like the price row;
    with the cache off, a second Redis read per request). Same throughput and latency
    measurements, same servers.

    python benchmarks/bench_api.py [--duration 10]
Needs ``wrk`` and ``hey`` (Debian packages of those names; installed if missing and root).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None and os.geteuid() == 0:
        subprocess.run(["apt-get", "install", "-y", "-qq", tool], check=False, capture_output=True)
        path = shutil.which(tool)
    if path is None:
        raise SystemExit(f"{tool} is needed: apt-get install {tool}")
    return path


def serve(app: str, port: int, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    gunicorn = str(Path(sys.executable).parent / "gunicorn")
    p = subprocess.Popen([gunicorn, "-w", "2", "-b", f"127.0.0.1:{port}", app], cwd=REPO, env=env,
                         stdout=log.open("wb"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/predict?symbol=BTC/USD", timeout=1).read()
            return p
        except Exception:  # noqa: BLE001
            time.sleep(0.2)
    p.kill()
    raise SystemExit(f"{app} did not start; see {log}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=int, default=10)
    args = ap.parse_args()
    wrk, hey = need("wrk"), need("hey")

    import numpy as np
    from sklearn.linear_model import Ridge

    from models.predictor import Predictor
    from models.registry import ModelRegistry
    from tickcast.embedded import ensure_valkey, free_port, stop_valkey
    from tickcast.features import FEATURE_NAMES
    from tickcast.model_inputs import model_inputs
    from tickcast.schema import FeatureRow
    from tickcast.stores.online import OnlineStore

    work = Path(tempfile.mkdtemp(prefix="tickcast-apibench-"))
    redis_url = ensure_valkey(work)
    from models.signing import SigningKey

    key = SigningKey.generate()
    reg = ModelRegistry(f"file://{work / 'models'}", signer=key)
    inputs = list(model_inputs(100.0, {n: 1.0 for n in FEATURE_NAMES}) or {})
    rng = np.random.default_rng(0)
    est = Ridge().fit(rng.normal(size=(500, len(inputs))), rng.normal(size=500))
    v = reg.save("batch-BTC_USD", Predictor("ridge", "sklearn", inputs, est, "fs1-w10s", 60), {"model": "ridge"})
    reg.set_alias("production-BTC_USD", "batch-BTC_USD", v)
    vals = {n: 0.001 for n in FEATURE_NAMES}
    vals.update(ema_12=60000.0, ema_26=60000.0, rsi_14=50.0)
    now_us = int(time.time() * 1e6)
    online = OnlineStore(redis_url)
    online.put_features([FeatureRow("BTC/USD", now_us, 60000.0, vals, "fs1-w10s"),
                         FeatureRow("ETH/USD", now_us, 60000.0, vals, "fs1-w10s")])
    # the news case: a model needing price + news, and a full online news group for ETH/USD
    from tickcast.groups import group
    from tickcast.news.features import NEWS_FEATURE_NAMES
    from tickcast.news.sim import simulate_news

    news_inputs = inputs + list(NEWS_FEATURE_NAMES)
    est_n = Ridge().fit(rng.normal(size=(500, len(news_inputs))), rng.normal(size=500))
    vn = reg.save("batch-ETH_USD", Predictor("ridge", "sklearn", news_inputs, est_n, "fs1-w10s", 60,
                                             groups=("price", "news"), group_versions=(("news", "nf1"),)),
                  {"model": "ridge"})
    reg.set_alias("production-ETH_USD", "batch-ETH_USD", vn)
    items = simulate_news(["ETH/USD"], now_us - 6 * 3_600_000_000 + 1, now_us, seed=0, rate_per_hour=30)
    online.write(group("news"), items)
    print(f"news case: {len(online.read(group('news'), 'ETH/USD'))} items online for ETH/USD")
    # the live scoreboard the feature flow writes (tickcast.scoreboard.LiveBoard.state's shape): auto -> production
    cand = {"mae": 36.5, "n": 720, "p_value": 0.2, "margin": 0.01, "intervals_bps": {"80": 10.2, "95": 19.7}}
    online.put_selections([{
        "symbol": "BTC/USD", "ts_us": now_us, "as_of": "", "choice": "production", "name": "ridge", "version": v,
        "reason": "production ridge@" + v + " promoted by the training gate (walk-forward test vs persistence); "
                  "no live record yet", "since": "", "switches": 1, "labels": 5000, "window": 720, "alpha": 0.01,
        "candidates": {k: {**cand, "name": k, "version": k} for k in ("production", "online", "persistence")}}])
    env = {k: val for k, val in os.environ.items() if not k.startswith("TICKCAST_")}
    env.update(TICKCAST_DATA_DIR=str(work), TICKCAST_REDIS_URL=redis_url, TICKCAST_REGISTRY_PUBLIC_KEYS=key.public.to_text(),
               TICKCAST_MODEL_STORE=f"file://{work / 'models'}", TICKCAST_MAX_FEATURE_AGE_SECONDS="0")
    procs = []
    try:
        api_port, ref_port, raw_port = free_port(), free_port(), free_port()
        procs.append(serve("api:create_app()", api_port, env, work / "api.log"))
        procs.append(serve("benchmarks.minimal_app:create_app()", ref_port, env, work / "ref.log"))
        # the same API reading Redis on every request (no feature micro-cache)
        procs.append(serve("api:create_app()", raw_port, dict(env, TICKCAST_FEATURE_CACHE_SECONDS="0"),
                           work / "api-nocache.log"))
        d = f"{args.duration}s"

        def rps(port: int, symbol: str = "BTC/USD") -> tuple[float, str]:
            out = subprocess.run([wrk, "-t2", "-c16", f"-d{d}", "--latency",
                                  f"http://127.0.0.1:{port}/predict?symbol={symbol}"],
                                 capture_output=True, text=True).stdout
            m = re.search(r"Requests/sec:\s+([\d.]+)", out)
            bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
            return float(m.group(1)) if m else 0.0, (bad.group(1) if bad else "0")

        ref, ref_bad = rps(ref_port)
        api, api_bad = rps(api_port)
        raw, raw_bad = rps(raw_port)
        print(f"throughput  /predict {api:8.0f} req/s  (non-2xx: {api_bad}; default feature cache "
              f"TICKCAST_FEATURE_CACHE_SECONDS=0.1)")
        print(f"            /predict {raw:8.0f} req/s  (non-2xx: {raw_bad}; cache off: Redis on every request)")
        print(f"            minimal  {ref:8.0f} req/s  (constant JSON, same gunicorn settings)")
        print(f"            ratio    {api / ref:.2f}   (target >= 0.6); cache off: {raw / ref:.2f}")
        news, news_bad = rps(api_port, "ETH/USD")
        news_raw, news_raw_bad = rps(raw_port, "ETH/USD")
        print(f"news case   /predict {news:8.0f} req/s  (non-2xx: {news_bad}; price + news groups, "
              f"ratio {news / ref:.2f}, vs price-only {news / api:.2f})")
        print(f"            /predict {news_raw:8.0f} req/s  (non-2xx: {news_raw_bad}; cache off, "
              f"ratio {news_raw / ref:.2f}, vs price-only cache off {news_raw / raw:.2f})")

        def latency(symbol: str, label: str) -> None:
            out = subprocess.run([hey, "-z", d, "-c", "4", "-q", "50",
                                  f"http://127.0.0.1:{api_port}/predict?symbol={symbol}"],
                                 capture_output=True, text=True).stdout
            p50 = re.search(r"50% in ([\d.]+) secs", out)
            p99 = re.search(r"99% in ([\d.]+) secs", out)
            total = re.search(r"Requests/sec:\s+([\d.]+)", out)
            codes = re.findall(r"\[(\d{3})\]\s+(\d+) responses", out)
            errors = sum(int(n) for c, n in codes if c != "200")
            print(f"{label} at ~200 req/s (hey -c 4 -q 50): {float(total.group(1)) if total else 0:.0f} req/s, "
                  f"p50 {float(p50.group(1)) * 1e3 if p50 else float('nan'):.2f} ms, "
                  f"p99 {float(p99.group(1)) * 1e3 if p99 else float('nan'):.2f} ms (target < 10 ms), "
                  f"errors {errors} (responses by status: {codes})")

        latency("BTC/USD", "price-only")
        latency("ETH/USD", "price + news")
    finally:
        for p in procs:
            p.terminate()
            p.wait(10)
        stop_valkey(work)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
