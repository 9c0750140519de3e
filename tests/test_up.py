"""`tickcast up` as a user runs it: fully offline with the simulator, answered on
/predict, stopped by Ctrl-C with nothing left behind, and recovered after SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.helpers import free_port, leftovers

REPO = Path(__file__).resolve().parents[1]


def start(data: Path, port: int, *extra: str) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TICKCAST_")}
    env.update(TICKCAST_API_PORT=str(port), TICKCAST_WINDOW_SECONDS="2", TICKCAST_ALLOWED_LATENESS_SECONDS="0.5",
               TICKCAST_SIM_RATE="20")
    return subprocess.Popen([sys.executable, "-m", "tickcast.cli", "up", "--source", "sim", "--data-dir", str(data),
                             "--train-every", "0", *extra], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)


def predict(port: int, symbol: str) -> dict | None:  # type: ignore[type-arg]
    try:
        url = f"http://127.0.0.1:{port}/predict?symbol={symbol.replace('/', '%2F')}"
        return json.loads(urllib.request.urlopen(url, timeout=2).read())  # type: ignore[no-any-return]
    except Exception:  # noqa: BLE001
        return None


def wait_for_predictions(port: int, proc: subprocess.Popen[bytes], timeout: float = 120) -> dict:  # type: ignore[type-arg]
    deadline = time.monotonic() + timeout
    got: dict = {}  # type: ignore[type-arg]
    while time.monotonic() < deadline and len(got) < 2:
        assert proc.poll() is None, proc.stdout.read().decode()[-2000:]  # type: ignore[union-attr]
        for sym in ("BTC/USD", "ETH/USD"):
            r = predict(port, sym)
            if r and "predicted_price" in r:
                got[sym] = r
        time.sleep(0.5)
    assert len(got) == 2, f"no prediction for every symbol within {timeout} s"
    return got


@pytest.mark.parametrize("kafka", [False, True], ids=["direct", "kafka"])
def test_up_sim_answers_then_ctrl_c_leaves_nothing(tmp_path: Path, kafka: bool) -> None:
    """Direct, and with --kafka: ingest -> embedded tansu (on embedded SeaweedFS) -> features."""
    data, port = tmp_path / "data", free_port()
    proc = start(data, port, *(["--kafka"] if kafka else []))
    try:
        got = wait_for_predictions(port, proc)
        assert got["BTC/USD"]["horizon_seconds"] == 60
    finally:
        proc.send_signal(signal.SIGINT)
        out = proc.communicate(timeout=60)[0].decode()
    assert proc.returncode == 0, out[-2000:]
    assert "tickcast up" in out and "stopped." in out and ("-> Kafka" in out) == kafka
    time.sleep(0.5)
    assert leftovers(data) == []
    assert (data / "offline" / "predictions").exists() and list((data / "offline" / "features").glob("*.parquet"))


def test_up_recovers_after_sigkill(tmp_path: Path) -> None:
    data, port = tmp_path / "data", free_port()
    proc = start(data, port)
    try:
        wait_for_predictions(port, proc)
        time.sleep(8)  # a recovery snapshot (every 5 s) holds some learning
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        deadline = time.monotonic() + 20  # children die with their parent (PR_SET_PDEATHSIG)
        while time.monotonic() < deadline and [x for x in leftovers(data) if "valkey" not in x]:
            time.sleep(0.2)
        assert [x for x in leftovers(data) if "valkey" not in x] == []
        proc = start(data, port)
        got = wait_for_predictions(port, proc)
        # auto serves the live choice: persistence until a model beats it (hours of labels, never here)
        assert got["BTC/USD"]["model"]["name"] == "persistence", got
        assert got["BTC/USD"]["model"]["reason"].startswith("default: no candidate")
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=60)
    time.sleep(0.5)
    assert leftovers(data) == []


def test_up_without_network_fails_fast_with_one_line(tmp_path: Path) -> None:
    """The default source is the live Kraken socket; unreachable (as on these machines),
    `up` ends within seconds with one line that names the way to run offline."""
    data, port = tmp_path / "data", free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TICKCAST_")}
    env.update(TICKCAST_API_PORT=str(port), TICKCAST_KRAKEN_WS_URL=f"ws://127.0.0.1:{free_port()}/v2",
               TICKCAST_KRAKEN_REST_URL=f"http://127.0.0.1:{free_port()}")
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "tickcast.cli", "up", "--data-dir", str(data), "--train-every", "0"],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 1, r.stdout[-2000:] + r.stderr[-2000:]
    errors = [x for x in r.stderr.splitlines() if x.startswith("tickcast up:")]
    assert len(errors) == 1 and "cannot reach Kraken" in errors[0] and "--source sim" in errors[0], r.stderr
    assert "Traceback" not in r.stderr
    assert time.monotonic() - t0 < 60
    time.sleep(0.5)
    assert leftovers(data) == []


def test_up_replay_keeps_serving_after_the_file_ends(tmp_path: Path) -> None:
    """`make run ARGS="--source replay:FILE"`: the flow reads the file, closes every window
    and exits 0; `up` keeps the API serving what it wrote until Ctrl-C."""
    from tickcast.sim import write_replay

    replay = tmp_path / "r.jsonl"
    write_replay(replay, 4000, ["BTC/USD", "ETH/USD"], seed=5)
    data, port = tmp_path / "data", free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TICKCAST_")}
    env.update(TICKCAST_API_PORT=str(port), TICKCAST_MAX_FEATURE_AGE_SECONDS="0")
    proc = subprocess.Popen([sys.executable, "-m", "tickcast.cli", "up", "--source", f"replay:{replay}",
                             "--data-dir", str(data), "--train-every", "0"], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        got = wait_for_predictions(port, proc)
        assert all(r["model"]["name"] == "persistence" for r in got.values()), got  # the live choice (4 labels)
        time.sleep(3)  # the flow has long finished 4,000 trades: up is still serving
        assert proc.poll() is None
        assert predict(port, "BTC/USD") is not None
    finally:
        proc.send_signal(signal.SIGINT)
        out = proc.communicate(timeout=60)[0].decode()
    assert proc.returncode == 0, out[-2000:]
    assert leftovers(data) == []
