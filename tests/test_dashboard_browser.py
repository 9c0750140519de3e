"""The built-in dashboard in a real browser: Debian's chromium, headless, driven over the
Chrome DevTools protocol (a WebSocket, with the ``websockets`` package the live client
already uses).

After a real replay through the feature flow (``python -m bytewax.run
dataflows.features``, a simulated session that ends now, one garbage line, plus rows of
``ingest_stats``), the API serves ``/dashboard`` on a real HTTP server; the test loads it,
waits for two polls of ``/dashboard/data``, and asserts that the browser logged no console
error or exception and that every chart drew data inside its plot area (pixels in the
series colours, which an empty chart never has). It saves a screenshot to the test's
temporary directory and, with ``TICKCAST_DASHBOARD_SCREENSHOT=PATH``, to PATH (how
``docs/dashboard.png`` is made).

chromium: used when on PATH. Otherwise, as root on a Debian-like system, the test
installs Debian's package (``apt-get update && apt-get install -y --no-install-recommends
chromium``: 38 s on the development machine, so a fresh ``make test`` pays it once);
``TICKCAST_TEST_INSTALL_CHROMIUM=0`` forbids that. Where it cannot install (not root, no
apt-get, no network) the test skips with a message saying why.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from tests.helpers import free_port

REPO = Path(__file__).resolve().parents[1]
INSTALL_ENV = "TICKCAST_TEST_INSTALL_CHROMIUM"
SCREENSHOT_ENV = "TICKCAST_DASHBOARD_SCREENSHOT"
HOSTILE = "<img src=x onerror=alert(1)>"
CHARTS = ("c-price", "c-news", "c-pred", "c-mae", "c-served", "c-fresh", "c-tput", "c-dead", "c-ingest")


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if os.environ.get(INSTALL_ENV) == "0":
        pytest.skip(f"chromium is not installed and {INSTALL_ENV}=0 forbids installing it")
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip("chromium is not installed and cannot be: apt-get needs root on a Debian-like system")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in (["apt-get", "update"], ["apt-get", "install", "-y", "--no-install-recommends", "chromium"]):
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
        if r.returncode != 0:
            lines = (r.stderr or r.stdout).strip().splitlines() or ["?"]
            pytest.skip(f"could not install chromium ({' '.join(cmd)}; no network?): {lines[-1]}")
    found = shutil.which("chromium")
    if not found:
        pytest.skip("apt-get installed chromium but it is not on PATH")
    return found


class DevTools:
    """A minimal Chrome DevTools protocol client over one page's WebSocket."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.next_id = 0
        self.events: list[dict[str, Any]] = []

    def call(self, method: str, timeout: float = 30, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        me = self.next_id
        self.ws.send(json.dumps({"id": me, "method": method, "params": params}))
        deadline = time.monotonic() + timeout
        while True:
            msg = json.loads(self.ws.recv(timeout=max(0.1, deadline - time.monotonic())))
            if msg.get("id") == me:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})  # type: ignore[no-any-return]
            if "method" in msg:
                self.events.append(msg)

    def evaluate(self, expression: str) -> Any:
        res = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in res:
            raise RuntimeError(f"page script failed: {res['exceptionDetails']}")
        return res["result"].get("value")

    def errors(self) -> list[str]:
        out = []
        for e in self.events:
            m, p = e["method"], e.get("params", {})
            if m == "Runtime.exceptionThrown":
                out.append(f"exception: {p['exceptionDetails'].get('text')} "
                           f"{p['exceptionDetails'].get('exception', {}).get('description', '')}")
            elif m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                out.append("console." + p["type"] + ": " + " ".join(str(a.get("value", a.get("description")))
                                                                     for a in p.get("args", [])))
            elif m == "Log.entryAdded" and p["entry"].get("level") == "error":
                out.append(f"log: {p['entry'].get('text')} {p['entry'].get('url', '')}")
        return out



@pytest.fixture
def browser(tmp_path: Path) -> Iterator[DevTools]:
    exe = chromium()
    proc = subprocess.Popen(
        [exe, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
         "--hide-scrollbars", "--remote-debugging-port=0", f"--user-data-dir={tmp_path / 'profile'}",
         "about:blank"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        port = None
        deadline = time.monotonic() + 30
        assert proc.stderr is not None
        while port is None and time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line and proc.poll() is not None:
                pytest.fail(f"chromium exited with {proc.returncode} before DevTools started")
            if "DevTools listening on ws://" in line:
                port = int(line.split("ws://", 1)[1].split("/", 1)[0].rsplit(":", 1)[1])
        assert port, "chromium did not print its DevTools address within 30 s"
        threading.Thread(target=proc.stderr.read, daemon=True).start()  # keep its pipe drained
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as r:
            pages = [t for t in json.load(r) if t.get("type") == "page"]
        from websockets.sync.client import connect

        with connect(pages[0]["webSocketDebuggerUrl"], max_size=None, open_timeout=10) as ws:
            yield DevTools(ws)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def replayed(tmp: Path, redis_url: str) -> dict[str, str]:
    """A ~25-minute simulated session that ended a minute or two ago, through the real
    feature flow (so feature freshness is a positive number of seconds)."""
    from tickcast.sim import SimParams, write_replay

    now_s = time.time_ns() // 1_000_000_000
    replay = tmp / "session.jsonl"
    write_replay(replay, 15_000, ["BTC/USD", "ETH/USD"], seed=11, start_us=(now_s - 27 * 60) * 1_000_000,
                 params=SimParams(rate=5.0))
    with replay.open("ab") as f:
        f.write(b"{this is not a Kraken message\n")  # a dead letter, stamped now
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TICKCAST_", "BYTEWAX_"))}
    env.update(TICKCAST_DATA_DIR=str(tmp), TICKCAST_REDIS_URL=redis_url, TICKCAST_SYMBOLS="BTC/USD,ETH/USD",
               TICKCAST_CLICKHOUSE_URL=f"chdb://{tmp / 'offline'}", TICKCAST_MODEL_STORE=f"file://{tmp / 'models'}",
               TICKCAST_SOURCE=f"replay:{replay}", TICKCAST_MAX_FEATURE_AGE_SECONDS="0")
    r = subprocess.run([sys.executable, "-m", "bytewax.run", "dataflows.features"], env=env, cwd=REPO,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return env


def test_dashboard_in_chromium_draws_every_chart_without_errors(browser: DevTools, tmp_path: Path,
                                                                 valkey_url: str) -> None:
    from werkzeug.serving import make_server

    from api import create_app
    from tickcast.config import Settings
    from tickcast.news.items import NewsItem
    from tickcast.news.publish import publish_news
    from tickcast.stores.offline import open_offline
    from tickcast.stores.tables import INGEST_COUNTERS

    env = replayed(tmp_path, valkey_url)
    store = open_offline(env["TICKCAST_CLICKHOUSE_URL"])
    now_us = time.time_ns() // 1000
    ts = [now_us - k * 10_000_000 for k in range(30, 0, -1)]  # what a live client writes every 10 s
    store.insert("ingest_stats", pa.table({
        "source": ["kraken"] * len(ts), "session": ["s1"] * len(ts),
        "ts": pa.array(ts, pa.int64()).cast(pa.timestamp("us", tz="UTC")), "interval_seconds": [10.0] * len(ts),
        **{c: pa.array([int(k % (3 + i) == i) for k in range(len(ts))], pa.uint64())
           for i, c in enumerate(INGEST_COUNTERS)}}))
    # news through the news flow's hand-over point (news + news_features), inside the session;
    # one hostile title, which must arrive as text
    start_us = (now_us // 1_000_000 - 27 * 60) * 1_000_000
    publish_news([NewsItem(f"n{k}", start_us + k * 60_000_000, start_us + k * 60_000_000, "sim",
                           HOSTILE if k == 9 else f"Bitcoin story {k}", "", f"https://example.org/{k}",
                           ("BTC/USD",), ((-1) ** k * 0.05 * k,), "lexicon") for k in range(2, 16)], store)
    store.close()

    app = create_app({"settings": Settings.from_env(env)})
    port = free_port()
    server = make_server("127.0.0.1", port, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        for domain in ("Runtime", "Log", "Page"):
            browser.call(f"{domain}.enable")
        browser.call("Emulation.setDeviceMetricsOverride", width=1280, height=1220, deviceScaleFactor=1,
                     mobile=False)
        browser.call("Page.navigate", url=f"http://127.0.0.1:{port}/dashboard")
        deadline = time.monotonic() + 45
        ready = "typeof state !== 'undefined' && state.data !== null && Object.keys(state.fresh).length === 2 " \
                "&& Object.values(state.fresh).every((p) => p.length >= 2)"
        while not browser.evaluate(ready):  # two polls: freshness is a line the page draws itself
            assert time.monotonic() < deadline, f"the page never got two answers: {browser.errors()}"
            time.sleep(0.5)
        drawn = browser.evaluate("""(() => {
          const cols = COLORS.map((h) => [1, 3, 5].map((i) => parseInt(h.slice(i, i + 2), 16)));
          const out = {};
          for (const c of document.querySelectorAll("canvas")) {
            const dpr = window.devicePixelRatio || 1, top = Math.ceil(20 * dpr);  // below the legend
            const d = c.getContext("2d").getImageData(0, top, c.width, c.height - top).data;
            let n = 0;
            for (let i = 0; i < d.length; i += 4) {
              if (d[i + 3] < 128) continue;
              if (cols.some(([r, g, b]) => Math.abs(d[i] - r) + Math.abs(d[i + 1] - g) + Math.abs(d[i + 2] - b) < 90)) n++;
            }
            out[c.id] = n;
          }
          return out;
        })()""")
        data = browser.evaluate("state.data")
        heads = browser.evaluate("""(() => Array.from(document.querySelectorAll("#headlines tr"), (tr) => ({
          title: tr.cells[3].textContent, href: tr.querySelector("a") && tr.querySelector("a").href,
          score: tr.cells[1].className})))()""")
        injected = browser.evaluate("document.querySelectorAll('#headlines img').length")
        status = browser.evaluate("document.getElementById('status').textContent")
        shot = base64.b64decode(browser.call("Page.captureScreenshot", format="png")["data"])
        (tmp_path / "dashboard.png").write_bytes(shot)
        if os.environ.get(SCREENSHOT_ENV):
            Path(os.environ[SCREENSHOT_ENV]).write_bytes(shot)
        errors = browser.errors()
    finally:
        server.shutdown()
    assert errors == [], errors
    assert status.startswith("updated"), status
    assert set(drawn) == set(CHARTS), drawn
    # a line in every plot area; freshness is the page's own history (two polls, 5 s apart, at
    # the right edge of a 60-minute axis): a short segment per symbol
    assert all(n >= (4 if c == "c-fresh" else 50) for c, n in drawn.items()), drawn
    assert all(v is not None and v > 0 for v in data["freshness_seconds"].values()), data["freshness_seconds"]
    s = data["series"]
    assert all(s[k] for k in ("price", "predicted", "realised", "mae_online", "mae_persistence", "throughput"))
    assert sum(v for _, v in s["dead_letters"]) > 0 and sum(v for _, v in s["ingest_reconnects"]) > 0
    assert s["news_sentiment"] and len(heads) == len(data["headlines"]) == 14, heads
    assert heads[0]["title"] == "Bitcoin story 15" and heads[0]["href"] == "https://example.org/15"
    assert heads[6]["title"] == HOSTILE and injected == 0  # inserted as text, not markup
    assert {h["score"] for h in heads} == {"score pos", "score neg"}
    assert shot[:8] == b"\x89PNG\r\n\x1a\n" and len(shot) > 20_000
