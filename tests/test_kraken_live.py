"""Live ingestion against a fake Kraken (tickcast/testing/fake_kraken.py): no internet needed.

The promise under test: **every trade exactly once**. In each scenario — connections
dropped mid-stream (several times, during bursts), a silent connection, malformed
frames, an error ack, snapshots overlapping what was already delivered, a trade_id gap
while connected, a restart from a resume point — the trades delivered equal the fake
server's trades exactly: none missing, none twice, every field equal (REST-filled
trades included).

Most scenarios run against the client alone (fast); the end-to-end tests run the real
feature flow (``python -m bytewax.run dataflows.features``, TICKCAST_SOURCE=kraken) in
a subprocess and compare the offline store's candles with the server's trades.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest

from tests.helpers import free_port, kraken_settings, pump_source
from tickcast.kraken import KrakenError, parse_message
from tickcast.live.kraken_client import (
    ClientConfig,
    ClientThread,
    Event,
    NetworkUnavailable,
    RestClient,
    trades_of,
)
from tickcast.schema import Trade
from tickcast.stores.offline import open_offline
from tickcast.testing.fake_kraken import RECORDED_WS, FakeKraken, recorded_frames

REPO = Path(__file__).resolve().parents[1]
WINDOW_US = 1_000_000


# -- helpers -------------------------------------------------------------------------------------


@pytest.fixture
def fake() -> Iterator[FakeKraken]:
    with FakeKraken(heartbeat_s=0.2) as fk:
        yield fk


def config(fk: FakeKraken, **kw: object) -> ClientConfig:
    base: dict[str, object] = dict(ws_url=fk.ws_url, rest_url=fk.rest_url, symbols=tuple(fk.symbols),
                                   backoff_initial_s=0.02, backoff_max_s=0.2, rest_page_pause_s=0.0,
                                   silence_timeout_s=1.0, open_timeout_s=3.0, ack_timeout_s=3.0)
    base.update(kw)
    return ClientConfig(**base)  # type: ignore[arg-type]


class Run:
    """A client in its background thread, collecting events."""

    def __init__(self, fk: FakeKraken, resume: dict[str, tuple[int, int]] | None = None, **kw: object) -> None:
        self.fk = fk
        self.bg = ClientThread(config(fk, **kw), resume=resume).start()
        self.events: list[Event] = []
        assert self.bg.wait_ready(5), "the client did not subscribe"

    @property
    def stats(self):  # type: ignore[no-untyped-def]
        return self.bg.client.stats

    def collect(self) -> list[Event]:
        self.events.extend(self.bg.drain())
        return self.events

    def trades(self) -> list[Trade]:
        return trades_of(self.collect())

    def wait_exact(self, timeout: float = 10.0, since: Callable[[Trade], bool] | None = None) -> list[Trade]:
        """Wait until every server trade arrived; then assert nothing is missing or twice."""
        want = [t for t in self.fk.all_trades() if since is None or since(t)]
        deadline = time.monotonic() + timeout
        while True:
            got = self.trades()
            if len(got) >= len(want) or time.monotonic() > deadline:
                break
            time.sleep(0.02)
        time.sleep(0.1)  # anything extra (a duplicate) would arrive now
        got = self.trades()
        assert_exact(got, want)
        return got

    def stop(self) -> None:
        self.bg.stop()


@pytest.fixture
def run(fake: FakeKraken) -> Iterator[Callable[..., Run]]:
    runs: list[Run] = []

    def start(**kw: object) -> Run:
        r = Run(fake, **kw)  # type: ignore[arg-type]
        runs.append(r)
        return r

    yield start
    for r in runs:
        r.stop()


def assert_exact(got: list[Trade], want: list[Trade]) -> None:
    keys = Counter((t.symbol, t.trade_id) for t in got)
    twice = sorted(k for k, n in keys.items() if n > 1)
    missing = sorted({(t.symbol, t.trade_id) for t in want} - set(keys))
    extra = sorted(set(keys) - {(t.symbol, t.trade_id) for t in want})
    assert not twice, f"{len(twice)} trades delivered twice, e.g. {twice[:5]}"
    assert not missing, f"{len(missing)} trades missing, e.g. {missing[:5]}"
    assert not extra, f"{len(extra)} trades the server never had, e.g. {extra[:5]}"
    by_key = {(t.symbol, t.trade_id): t for t in got}
    assert all(by_key[(t.symbol, t.trade_id)] == t for t in want), "a delivered trade differs from the server's"
    for sym in {t.symbol for t in got}:  # per symbol in trade_id order
        ids = [t.trade_id for t in got if t.symbol == sym]
        assert ids == sorted(ids), f"{sym} out of order"


def reparse(events: list[Event]) -> tuple[list[Trade], list[str]]:
    """What the feature flow makes of the events: trades and dead-letter reasons."""
    trades: list[Trade] = []
    reasons: list[str] = []
    for ev in events:
        if ev.kind in ("trades", "malformed"):
            ts, dead = parse_message(ev.raw, "kraken", 0, ev.position)
            trades.extend(ts)
            reasons.extend(d.reason for d in dead)
    return trades, reasons


# -- the client against the fake -------------------------------------------------------------


def test_steady_stream_is_delivered_verbatim_once(fake: FakeKraken, run: Callable[..., Run]) -> None:
    r = run()
    fake.publish(fake.make_trades(300), per_msg=3)
    got = r.wait_exact()
    assert r.stats.gaps == r.stats.duplicates == r.stats.reconnects == 0
    # frames whose trades were all new are passed on as received (no re-encoding)
    assert sum(1 for e in r.events if e.kind == "trades") >= 100
    assert reparse(r.events)[0] == got
    assert all(e.position == f"{e.trades[0].symbol}#{e.trades[0].trade_id}" for e in r.events if e.kind == "trades")


def test_a_consumer_that_falls_behind_pauses_the_client_within_bounded_queues(
        fake: FakeKraken, run: Callable[..., Run], monkeypatch: pytest.MonkeyPatch) -> None:
    """Nobody drains the client while 3,000 messages arrive: its queue stops at its bound
    (the client pauses reading; backpressure counted), and once drained, every trade is
    there exactly once (what piled up in the socket is read, or refilled from REST)."""
    import tickcast.live.kraken_client as kc

    monkeypatch.setattr(kc, "_MAX_EVENTS_QUEUED", 500)
    r = run()
    fake.publish(fake.make_trades(3000), per_msg=1)
    deadline = time.monotonic() + 5
    while r.stats.backpressure == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert r.stats.backpressure > 0 and r.bg._q.qsize() <= 500
    time.sleep(0.3)
    assert r.bg._q.qsize() <= 500
    r.wait_exact(timeout=30)


@pytest.mark.skipif(not RECORDED_WS.exists(), reason="../shared/data/kraken_ws is absent")
def test_recorded_real_session_with_a_drop_in_the_middle() -> None:
    """Kraken's own v2 frames (heartbeats, multi-trade messages), dropped half-way: the
    trades sent while the client was away come from REST."""
    frames = recorded_frames()
    want = [t for f in frames for t in parse_message(f, "x", 0)[0]]
    assert len(want) == 17
    with FakeKraken(initial=0, heartbeat_s=0.2) as fk:
        r = Run(fk)
        try:
            half = len(frames) // 2
            for f in frames[:half]:
                fk.send_raw(f)
            time.sleep(0.2)
            fk.drop()
            for f in frames[half:]:  # nobody is connected for some of these
                fk.send_raw(f)
            fk.wait_subscribed(2)
            got = r.wait_exact()
            assert sorted(got, key=lambda t: (t.symbol, t.trade_id)) == sorted(
                want, key=lambda t: (t.symbol, t.trade_id))
            assert r.stats.reconnects == 1
        finally:
            r.stop()


def test_drops_mid_stream_and_during_bursts(fake: FakeKraken, run: Callable[..., Run]) -> None:
    r = run()
    fake.publish(fake.make_trades(100), per_msg=2)
    for i, cut in enumerate((5, 60, 150)):  # three drops, each in the middle of a burst
        fake.publish(fake.make_trades(400), per_msg=2, drop_after=cut)
        fake.wait_subscribed(2 + i)
        fake.publish(fake.make_trades(50), per_msg=1)
    r.wait_exact()
    assert r.stats.reconnects == 3 and r.stats.disconnects == 3
    assert r.stats.gaps >= 3 and r.stats.filled > 0  # > 50 trades missed each time: REST


def test_snapshot_overlapping_delivered_trades_is_deduplicated(fake: FakeKraken, run: Callable[..., Run]) -> None:
    r = run()
    fake.publish(fake.make_trades(120), per_msg=4)
    r.wait_exact()
    fake.send_snapshot("BTC/USD")  # up to 50 trades the client already has
    fake.drop()  # a short outage: the new snapshots overlap what was delivered
    fake.wait_subscribed(2)
    fake.publish(fake.make_trades(20), per_msg=2)
    r.wait_exact()
    new = Counter(t.symbol for t in r.trades()[-20:])  # published after the reconnect
    had = {s: len(fake.log[s]) - new[s] for s in fake.symbols}  # when the snapshots were sent
    # the unsolicited snapshot + one per symbol on reconnect: all of them duplicates
    assert r.stats.duplicates == min(50, had["BTC/USD"]) + sum(min(50, had[s]) for s in fake.symbols)
    assert r.stats.gaps == 0 and r.stats.filled == 0


def test_trade_id_gap_while_connected_is_filled_from_rest(fake: FakeKraken, run: Callable[..., Run]) -> None:
    r = run()
    fake.publish(fake.make_trades(40), per_msg=2)
    fake.withhold(fake.make_trades(30, ["BTC/USD"]))  # Kraken's socket skipped these
    fake.publish(fake.make_trades(40), per_msg=2)
    got = r.wait_exact()
    assert r.stats.gaps == 1 and r.stats.filled == 30 and r.stats.reconnects == 0
    assert reparse(r.events)[0] == got
    assert any("/0/public/Trades" in q for q in fake.rest_requests)


def test_gap_of_several_rest_pages_and_rest_errors(fake: FakeKraken, run: Callable[..., Run]) -> None:
    r = run()
    fake.publish(fake.make_trades(10))
    fake.withhold(fake.make_trades(2500, ["ETH/USD"]))
    fake.fail_rest(2)  # the first two REST calls fail: retried
    fake.publish(fake.make_trades(10, ["ETH/USD"]))
    r.wait_exact()
    assert r.stats.filled == 2500 and r.stats.unfilled == 0
    # 3 pages of 1000 + the 2 failed calls (AssetPairs, whose failure falls back to Kraken's
    # naming rule, and a Trades page, retried)
    assert sum("/0/public/Trades" in q for q in fake.rest_requests) >= 3 + 1
    assert len(fake.rest_requests) >= 3 + 2


def test_silent_connection_is_detected_and_replaced(fake: FakeKraken, run: Callable[..., Run]) -> None:
    r = run(silence_timeout_s=0.6)
    fake.publish(fake.make_trades(30))
    r.wait_exact()
    t0 = time.monotonic()
    fake.go_silent()  # open, but no heartbeat, no trade, no pong
    fake.publish(fake.make_trades(80), per_msg=2)  # happens while the client hears nothing
    fake.wait_subscribed(2, timeout=5)
    assert time.monotonic() - t0 < 3
    r.wait_exact()
    assert r.stats.pings >= 1 and r.stats.disconnects == 1 and r.stats.reconnects == 1


def test_malformed_frames_become_dead_letters_and_good_trades_stay_once(
        fake: FakeKraken, run: Callable[..., Run]) -> None:
    r = run()
    fake.publish(fake.make_trades(10))
    good = fake.make_trades(2, ["BTC/USD"])
    mixed = orjson.loads(orjson.dumps({"channel": "trade", "type": "update", "data": [
        {"symbol": t.symbol, "side": t.side, "price": t.price, "qty": t.qty, "ord_type": t.ord_type,
         "trade_id": t.trade_id, "timestamp": "2026-07-07T23:00:04.590753Z"} for t in good]}))
    mixed["data"].insert(1, {"symbol": "BTC/USD", "side": "sideways", "price": 1.0})
    for frame in ('{"channel":"trade","type":"update","data":[{"symbol":"BTC/', "[1,2,3]",
                  '{"channel":"trade","type":"bogus","data":[]}', orjson.dumps(mixed)):
        fake.send_raw(frame, "BTC/USD")
    fake.publish(fake.make_trades(10))
    got = r.wait_exact()
    _, reasons = reparse(r.events)
    assert r.stats.malformed == 4
    assert len(reasons) == 4
    assert any("not valid JSON" in x for x in reasons) and any("side" in x for x in reasons)
    assert reparse(r.events)[0] == got  # the mixed frame's good trades: once, not again with the bad one


def test_resume_fills_what_was_missed_and_drops_what_was_delivered(fake: FakeKraken, run: Callable[..., Run]) -> None:
    fake.withhold(fake.make_trades(300))  # happened while "the flow was down"
    log = fake.all_trades()
    resume = {}
    for sym in fake.symbols:
        t = [x for x in log if x.symbol == sym][100 if sym == "BTC/USD" else 10]
        resume[sym] = (t.trade_id, t.ts_us)
    r = run(resume=resume)
    fake.publish(fake.make_trades(20))
    r.wait_exact(since=lambda t: t.trade_id > resume[t.symbol][0])
    assert r.stats.gaps == 2 and r.stats.duplicates >= 0


def test_rest_pair_names_come_from_asset_pairs_or_the_fallback(fake: FakeKraken) -> None:
    rest = RestClient(fake.rest_url)
    assert rest.pair_for("BTC/USD") == "XBTUSD" and rest.pair_for("ETH/USD") == "ETHUSD"
    with FakeKraken(asset_pairs=False) as fk2:
        rest2 = RestClient(fk2.rest_url)
        assert rest2.pair_for("BTC/USD") == "XBTUSD"  # no AssetPairs: Kraken's naming rule
        trades, last = rest2.trades_page("XBTUSD", "BTC/USD", 0)
        assert [t.trade_id for t in trades] == [t.trade_id for t in fk2.log["BTC/USD"]] and last


def test_unknown_symbol_fails_at_start_naming_it(fake: FakeKraken) -> None:
    bg = ClientThread(config(fake, symbols=("BTC/USD", "XYZ/USD"))).start()
    t0 = time.monotonic()
    with pytest.raises(KrakenError, match=r"XYZ/USD") as e:
        bg.wait_ready(5)
    assert time.monotonic() - t0 < 2
    assert "\n" not in str(e.value) and not isinstance(e.value, NetworkUnavailable)
    bg.stop()


@pytest.mark.parametrize("url", ["closed-port", "ws://tickcast-no-such-host.invalid/v2"])
def test_no_network_fails_fast_with_the_offline_hint(fake: FakeKraken, url: str) -> None:
    if url == "closed-port":
        url = f"ws://127.0.0.1:{free_port()}/v2"
    bg = ClientThread(config(fake, ws_url=url)).start()
    t0 = time.monotonic()
    with pytest.raises(NetworkUnavailable) as e:
        bg.wait_ready(10)
    assert time.monotonic() - t0 < 5
    msg = str(e.value)
    assert "\n" not in msg and "--source sim" in msg and "replay:FILE" in msg and url in msg
    bg.stop()


# -- ingestion metrics: the source writes the client's counters to ingest_stats --------------------


STATS_SUMS = ("SELECT count(), uniqExact(session), any(source), sum(connects), sum(reconnects), sum(gaps), "
              "sum(filled), sum(unfilled), sum(duplicates), sum(malformed), sum(interval_seconds) FROM ingest_stats")
COUNTERS = ("connects", "reconnects", "gaps", "filled", "unfilled", "duplicates", "malformed")


def ingest_stats(lake: Path) -> dict[str, object]:
    store = open_offline(f"chdb://{lake}", read_only=True)
    try:
        row = store.query(STATS_SUMS).result_rows[0]
        rows = store.query("SELECT session, toUnixTimestamp64Micro(ts), interval_seconds FROM ingest_stats "
                           "ORDER BY ts").result_rows
    finally:
        store.close()
    return dict(zip(("rows", "sessions", "source", *COUNTERS, "seconds"), row, strict=True)) | {"list": rows}


def test_source_writes_ingest_stats_that_add_up_to_what_happened(
        fake: FakeKraken, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The real Bytewax source partition (driven by hand, as Bytewax's worker would): a drop
    during a burst, a gap while connected, an idle drop, a malformed frame. Rows every
    0.3 s plus one at close; their sums are exactly the client's counters, and the
    reconnects, connects and gap-filled trades are what the scenario caused."""
    from dataflows.kraken_source import _KrakenPartition

    t0 = time.monotonic()
    part = _KrakenPartition(kraken_settings(fake, tmp_path, stats_seconds=0.3), None)
    got: list[Trade] = []

    def pump(until_all: bool = True, timeout: float = 15.0) -> None:
        pump_source(part, fake, got, until_all, timeout)

    try:
        fake.publish(fake.make_trades(100), per_msg=2)
        pump()
        fake.publish(fake.make_trades(400), per_msg=2, drop_after=20)  # a drop during a burst
        fake.wait_subscribed(2)
        pump()
        fake.withhold(fake.make_trades(30, ["BTC/USD"]))  # a gap while connected: 30 trades from REST
        fake.publish(fake.make_trades(40), per_msg=2)
        pump()
        gap_filled = part._bg.client.stats.filled
        fake.drop()  # an idle drop: the new snapshots overlap, nothing to fill
        fake.wait_subscribed(3)
        fake.send_raw("not json", "BTC/USD")
        fake.publish(fake.make_trades(20), per_msg=2)
        pump()
        pump(until_all=False, timeout=1.0)  # a few more (empty) intervals
    finally:
        part.close()
    elapsed = time.monotonic() - t0
    assert_exact(got, fake.all_trades())
    client = part._bg.client.stats.as_dict()
    st = ingest_stats(tmp_path / "offline")
    # what the client counted, exactly: every delta was written, the final one at close
    assert {k: st[k] for k in COUNTERS} == {k: client[k] for k in COUNTERS}, (st, client)
    # what the scenario caused
    assert st["reconnects"] == 2 and st["connects"] == 3 == fake.connections
    assert st["malformed"] == 1 and st["unfilled"] == 0 and st["gaps"] >= 2
    assert gap_filled > 30 and st["filled"] == gap_filled  # the burst's tail beyond the snapshot + the 30
    assert st["duplicates"] >= 2 * 50  # the idle drop's snapshots: 50 trades per symbol already had
    # one session, a row per interval, the intervals add up to the partition's lifetime
    assert st["sessions"] == 1 and st["source"] == "kraken"
    assert st["rows"] >= elapsed / 0.3 - 2, (st["rows"], elapsed)
    ts = [r[1] for r in st["list"]]  # type: ignore[attr-defined]
    assert ts == sorted(ts) and len(set(ts)) == len(ts)
    assert abs(st["seconds"] - elapsed) < 0.5, (st["seconds"], elapsed)  # type: ignore[operator]
    intervals = sorted(r[2] for r in st["list"][:-1])  # type: ignore[attr-defined]
    assert all(x > 0 for x in intervals) and 0.2 < intervals[len(intervals) // 2] < 0.6, intervals


def test_ingest_stats_writer_keeps_rows_while_the_store_fails_and_says_so_when_it_gives_up(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The writer thread retries a failing store with the rows in order; rows it cannot
    write by the end of close() are logged with their content, never dropped silently."""
    from tickcast.live.ingest_stats import IngestStatsRecorder
    from tickcast.live.kraken_client import ClientStats

    blocker = tmp_path / "lake"
    blocker.write_text("a file where the lake's directory should be")
    stats = ClientStats()
    rec = IngestStatsRecorder(f"chdb://{blocker}", "kraken", stats.as_dict, 0.05)
    for i in range(3):
        stats.reconnects += 1
        stats.filled += 10 * (i + 1)
        time.sleep(0.06)
        rec.poll()
    time.sleep(0.2)
    assert rec.rows_written == 0 and "failed" in caplog.text  # the store is broken: retried later
    blocker.unlink()  # the store recovers
    stats.gaps += 1
    rec.close(timeout_s=10)
    assert rec.rows_written == 4 and rec.rows_dropped == 0
    st = ingest_stats(blocker)
    assert (st["rows"], st["reconnects"], st["filled"], st["gaps"]) == (4, 3, 60, 1)

    caplog.clear()
    port = free_port()  # a ClickHouse server that is not there
    rec = IngestStatsRecorder(f"http://u:secret@127.0.0.1:{port}/default", "kraken", ClientStats().as_dict, 5)
    rec.close(timeout_s=0.5)
    assert rec.rows_written == 0 and rec.rows_dropped == 1
    lost = [r for r in caplog.records if "could not be written" in r.getMessage()]
    assert lost and lost[0].levelname == "ERROR" and '"session"' in lost[0].getMessage()
    assert "secret" not in caplog.text


# -- end to end: the feature flow with TICKCAST_SOURCE=kraken ----------------------------------------


def flow_env(fk: FakeKraken, tmp: Path, redis_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TICKCAST_", "BYTEWAX_"))}
    env.update(
        TICKCAST_SOURCE="kraken", TICKCAST_SYMBOLS=",".join(fk.symbols),
        TICKCAST_KRAKEN_WS_URL=fk.ws_url, TICKCAST_KRAKEN_REST_URL=fk.rest_url,
        TICKCAST_WINDOW_SECONDS="1", TICKCAST_ALLOWED_LATENESS_SECONDS="2",
        TICKCAST_CLICKHOUSE_URL=f"chdb://{tmp / 'offline'}", TICKCAST_REDIS_URL=redis_url,
        TICKCAST_DATA_DIR=str(tmp), TICKCAST_MODEL_STORE=f"file://{tmp / 'models'}",
        TICKCAST_KRAKEN_BACKOFF_SECONDS="0.02", TICKCAST_KRAKEN_SILENCE_SECONDS="1",
    )
    env.update(extra)
    return env


def expected_windows(trades: list[Trade]) -> dict[tuple[str, int], tuple[int, int, int]]:
    """(symbol, window_start_us) -> (trades, first_trade_id, last_trade_id) of the truth."""
    out: dict[tuple[str, int], tuple[int, int, int]] = {}
    for t in sorted(trades, key=lambda t: (t.symbol, t.trade_id)):
        k = (t.symbol, t.ts_us - t.ts_us % WINDOW_US)
        n, first, _ = out.get(k, (0, t.trade_id, 0))
        out[k] = (n + 1, first, t.trade_id)
    return out


def stored_windows(lake: Path) -> tuple[dict[tuple[str, int], tuple[int, int, int]], list[str], int]:
    """Candles with trades, dead-letter reasons from the live source, late trades."""
    store = open_offline(f"chdb://{lake}", read_only=True)
    try:
        rows = store.query("SELECT symbol, toUnixTimestamp64Micro(window_start), trades, first_trade_id, "
                           "last_trade_id FROM candles WHERE trades > 0").result_rows
        dead = store.query("SELECT source, reason FROM dead_letters").result_rows
    finally:
        store.close()
    got = {(r[0], r[1]): (r[2], r[3], r[4]) for r in rows}
    late = sum(1 for src, reason in dead if reason.startswith("late trade"))
    return got, [reason for src, reason in dead if src == "kraken"], late


def window_diff(got: dict, want: dict) -> str:
    keys = sorted(set(got) | set(want))
    bad = [(k, got.get(k), want.get(k)) for k in keys if got.get(k) != want.get(k)]
    return (f"{len(bad)} of {len(want)} candles differ (stored, expected: (trades, first id, last id)): "
            + "; ".join(f"{k}: {g} vs {w}" for k, g, w in bad[:8]))


def flow_warnings(log: str) -> str:
    return "\n".join(x for x in log.splitlines() if "tickcast" in x or "Kraken" in x)[-2000:]


def wait_for_store(lake: Path, fk: FakeKraken, p: subprocess.Popen[bytes], timeout: float = 30.0) -> tuple:
    want = expected_windows(fk.all_trades())
    total = sum(v[0] for v in want.values())
    deadline = time.monotonic() + timeout
    got: dict = {}
    while time.monotonic() < deadline:
        assert p.poll() is None, f"the flow died: {flow_log(p)[-3000:]}"
        if (lake / "candles").exists():
            got, dead, late = stored_windows(lake)
            if sum(v[0] for v in got.values()) + late >= total:
                return want, got, dead, late
        time.sleep(0.3)
    return want, got, *stored_windows(lake)[1:]


def wait_subscribed(fk: FakeKraken, p: subprocess.Popen[bytes], count: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while fk.subscriptions < count:
        assert p.poll() is None, f"the flow died: {flow_log(p)[-3000:]}"
        assert time.monotonic() < deadline, f"the flow did not subscribe: {flow_log(p)[-3000:]}"
        time.sleep(0.02)


def flow_log(p: subprocess.Popen[bytes]) -> str:
    return Path(p._log).read_text(errors="replace")  # type: ignore[attr-defined]


def stop_flow(p: subprocess.Popen[bytes]) -> str:
    p.send_signal(signal.SIGINT)
    try:
        p.wait(timeout=15)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
    return flow_log(p)


def start_flow(env: dict[str, str], *args: str) -> subprocess.Popen[bytes]:
    """The feature flow in a subprocess; its stderr goes to a file (a pipe could fill up)."""
    log = Path(env["TICKCAST_DATA_DIR"]) / f"flow-{time.monotonic_ns()}.log"
    with log.open("wb") as f:
        p = subprocess.Popen([sys.executable, "-m", "bytewax.run", "dataflows.features", *args], env=env,
                             cwd=REPO, stdout=subprocess.DEVNULL, stderr=f)
    p._log = log  # type: ignore[attr-defined]
    return p


@pytest.mark.slow
def test_flow_stores_every_trade_once_through_drops_gaps_and_garbage(tmp_path: Path, redis_db_url: str) -> None:
    """Two drops during bursts, a gap while connected, a malformed frame, an overlapping
    snapshot and a silent connection, through the real flow: the candles hold exactly the
    server's trades (count, first and last trade_id of every 1-s window). With a 60-s stats
    interval the one ingest_stats row is the one written at close (Ctrl-C = SIGINT), and
    it holds what the scenario caused."""
    with FakeKraken(heartbeat_s=0.2) as fk:
        p = start_flow(flow_env(fk, tmp_path, redis_db_url, TICKCAST_ONLINE_MODEL="off",
                                TICKCAST_STATS_SECONDS="60"))
        try:
            wait_subscribed(fk, p, 1)
            for i in range(6):
                # bursts over ~3 s (several candles); drops in the middle of two of them
                fk.publish(fk.make_trades(200), per_msg=4, drop_after=12 if i in (1, 3) else None)
                if i == 2:
                    fk.withhold(fk.make_trades(25, ["BTC/USD"]))  # gap while connected
                    fk.send_raw('{"channel":"trade","type":"update","data":[{"symbol":"BTC/', "BTC/USD")
                if i == 4:
                    fk.send_snapshot("ETH/USD")  # overlaps what was delivered
                time.sleep(0.5)
            fk.go_silent()  # TICKCAST_KRAKEN_SILENCE_SECONDS=1: the flow notices, reconnects
            fk.publish(fk.make_trades(100), per_msg=2)  # while it hears nothing: from REST
            wait_subscribed(fk, p, 4)
            fk.publish(fk.make_trades(40), per_msg=2)
            want, got, dead, late = wait_for_store(tmp_path / "offline", fk, p)
        finally:
            err = stop_flow(p)
        assert fk.subscriptions == 4, err[-3000:]
        assert late == 0, f"{late} trades arrived after their candle closed"
        assert got == want, window_diff(got, want) + "\n" + flow_warnings(err)
        assert len(dead) == 1 and "not valid JSON" in dead[0]
        st = ingest_stats(tmp_path / "offline")
        assert st["rows"] == st["sessions"] == 1, (st, err[-2000:])
        assert st["connects"] == fk.connections == 4 and st["reconnects"] == 3  # 2 drops + the silence
        assert st["malformed"] == 1 and st["unfilled"] == 0
        assert st["gaps"] >= 3 and st["filled"] >= 25 and st["duplicates"] >= 50  # the 25 withheld: REST


def wait_checkpoint(rec: Path, fk: FakeKraken, p: subprocess.Popen[bytes], timeout: float = 30) -> None:
    """Until Bytewax has committed a recovery epoch whose source state covers every trade
    published so far (a flow stopped before its first checkpoint has nothing to resume)."""
    import pickle
    import sqlite3

    want = {s: lst[-1].trade_id for s, lst in fk.log.items()}
    deadline = time.monotonic() + timeout
    while True:
        assert p.poll() is None, f"the flow died: {flow_log(p)[-3000:]}"
        assert time.monotonic() < deadline, "no recovery checkpoint covers the published trades"
        for db in rec.glob("*.sqlite3"):
            with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)) as c:
                try:
                    row = c.execute(
                        "SELECT ser_change FROM snaps WHERE step_id LIKE '%.source' AND snap_epoch <= "
                        "(SELECT max(commit_epoch) FROM commits) ORDER BY snap_epoch DESC LIMIT 1").fetchone()
                except sqlite3.OperationalError:  # being written
                    row = None
            state = pickle.loads(row[0]) if row and row[0] else {}
            if all(state.get(s, (0,))[0] >= tid for s, tid in want.items()):
                return
        time.sleep(0.1)


@pytest.mark.slow
def test_flow_resumes_after_restart_filling_what_it_missed(tmp_path: Path, redis_db_url: str) -> None:
    """Bytewax recovery: the source's state is the last emitted trade per symbol; trades
    that happened while the flow was down come from REST on restart."""
    rec = tmp_path / "recovery"
    rec.mkdir()
    subprocess.run([sys.executable, "-m", "bytewax.recovery", str(rec), "1"], check=True, cwd=REPO)
    args = ("-r", str(rec), "-s", "1", "-b", "0")
    with FakeKraken(heartbeat_s=0.2) as fk:
        env = flow_env(fk, tmp_path, redis_db_url, TICKCAST_ONLINE_MODEL="off")
        p = start_flow(env, *args)
        try:
            wait_subscribed(fk, p, 1)
            fk.publish(fk.make_trades(200), per_msg=4)
            wait_checkpoint(rec, fk, p)
        finally:
            stop_flow(p)
        fk.withhold(fk.make_trades(300))  # while the flow is down (> 50: beyond any snapshot)
        p = start_flow(env, *args)
        try:
            wait_subscribed(fk, p, 2)
            fk.publish(fk.make_trades(60), per_msg=2)
            want, got, dead, late = wait_for_store(tmp_path / "offline", fk, p)
        finally:
            err = stop_flow(p)
        assert late == 0 and not dead, (late, dead)
        assert got == want, window_diff(got, want) + "\n" + flow_warnings(err)


@pytest.mark.slow
def test_flow_with_unknown_symbol_exits_with_one_clear_line(tmp_path: Path, redis_db_url: str) -> None:
    with FakeKraken() as fk:
        env = flow_env(fk, tmp_path, redis_db_url, TICKCAST_SYMBOLS="BTC/USD,XYZ/USD")
        t0 = time.monotonic()
        r = subprocess.run([sys.executable, "-m", "bytewax.run", "dataflows.features"], env=env, cwd=REPO,
                           capture_output=True, text=True, timeout=60)
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "XYZ/USD" in lines[0] and "rejected" in lines[0], r.stderr[-2000:]
    assert time.monotonic() - t0 < 20


@pytest.mark.slow
def test_flow_without_network_fails_fast_suggesting_offline_sources(tmp_path: Path, redis_db_url: str) -> None:
    with FakeKraken() as fk:
        env = flow_env(fk, tmp_path, redis_db_url, TICKCAST_KRAKEN_WS_URL="ws://tickcast-no-such-host.invalid/v2")
        r = subprocess.run([sys.executable, "-m", "bytewax.run", "dataflows.features"], env=env, cwd=REPO,
                           capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "--source sim" in lines[0] and "cannot reach Kraken" in lines[0], r.stderr[-2000:]


# -- record and backfill --------------------------------------------------------------------------


def cli_env(monkeypatch: pytest.MonkeyPatch, fk: FakeKraken, tmp: Path, redis_url: str) -> None:
    for k in list(os.environ):
        if k.startswith(("TICKCAST_", "BYTEWAX_")):
            monkeypatch.delenv(k)
    monkeypatch.setenv("TICKCAST_KRAKEN_WS_URL", fk.ws_url)
    monkeypatch.setenv("TICKCAST_KRAKEN_REST_URL", fk.rest_url)
    monkeypatch.setenv("TICKCAST_DATA_DIR", str(tmp))
    monkeypatch.setenv("TICKCAST_CLICKHOUSE_URL", f"chdb://{tmp / 'offline'}")
    monkeypatch.setenv("TICKCAST_REDIS_URL", redis_url)
    monkeypatch.setenv("TICKCAST_MODEL_STORE", f"file://{tmp / 'models'}")
    monkeypatch.setenv("TICKCAST_WINDOW_SECONDS", "1")
    monkeypatch.setenv("TICKCAST_KRAKEN_BACKOFF_SECONDS", "0.02")


def test_record_writes_a_replay_file_with_every_trade_once(
        fake: FakeKraken, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import threading

    from tickcast.cli import main

    cli_env(monkeypatch, fake, tmp_path, "redis://127.0.0.1:1")
    out = tmp_path / "session.jsonl"

    def scenario() -> None:
        fake.wait_subscribed(1)
        fake.publish(fake.make_trades(100), per_msg=3)
        fake.publish(fake.make_trades(200), per_msg=2, drop_after=30)
        fake.wait_subscribed(2)
        fake.send_raw("not json", "BTC/USD")
        fake.publish(fake.make_trades(30))

    th = threading.Thread(target=scenario)
    th.start()
    assert main(["record", "--out", str(out), "--duration", "3"]) == 0
    th.join()
    lines = out.read_bytes().splitlines()
    trades, reasons = [], []
    for line in lines:
        ts, dead = parse_message(line, "x", 0)
        trades.extend(ts)
        reasons.extend(d.reason for d in dead)
    assert_exact(trades, fake.all_trades())
    assert len(reasons) == 1
    kinds = Counter(orjson.loads(x).get("channel") or orjson.loads(x).get("method") for x in lines if x != b"not json")
    assert kinds["status"] == 2 and kinds["subscribe"] == 4 and kinds["heartbeat"] >= 5
    assert "recorded" in capsys.readouterr().err


def test_record_unknown_symbol_and_no_network_exit_nonzero(
        fake: FakeKraken, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from tickcast.cli import main

    cli_env(monkeypatch, fake, tmp_path, "redis://127.0.0.1:1")
    assert main(["record", "--out", str(tmp_path / "x.jsonl"), "--symbols", "BTC/USD,XYZ/USD"]) == 2
    assert "XYZ/USD" in capsys.readouterr().err
    monkeypatch.setenv("TICKCAST_KRAKEN_WS_URL", "ws://tickcast-no-such-host.invalid/v2")
    assert main(["record", "--out", str(tmp_path / "x.jsonl"), "--duration", "30"]) == 1
    err = capsys.readouterr().err
    assert "--source sim" in err


@pytest.mark.slow
def test_backfill_runs_rest_history_through_the_flow_idempotently(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, redis_db_url: str) -> None:
    from tickcast.cli import main

    t0 = 1_762_732_800_000_000  # 2025-11-10T00:00:00Z
    with FakeKraken(["BTC/USD", "ETH/USD"], initial=0) as fk:
        btc = fk.history("BTC/USD", 2500, t0, 100_000)  # 250 s, 10 trades per second: 3 REST pages
        eth = fk.history("ETH/USD", 300, t0 + 50_000, 700_000)
        cli_env(monkeypatch, fk, tmp_path, redis_db_url)
        since, until = "2025-11-10T00:00:03.5Z", str((t0 + 200_000_000) / 1e6)  # RFC 3339 / unix seconds
        args = ["backfill", "--since", since, "--until", until, "--symbols", "BTC/USD,ETH/USD", "--page-pause", "0"]
        assert main(args) == 0
        lo, hi = t0 + 3_000_000, t0 + 200_000_000  # whole 1-s candles
        want = expected_windows([t for t in btc + eth if lo <= t.ts_us < hi])
        got, dead, late = stored_windows(tmp_path / "offline")
        assert got == want and not dead and late == 0

        def snapshot() -> tuple[list[tuple], list[tuple]]:
            store = open_offline(f"chdb://{tmp_path / 'offline'}", read_only=True)
            try:
                c = store.query("SELECT * EXCEPT _v FROM candles ORDER BY symbol, window_start").result_rows
                f = store.query("SELECT * EXCEPT _v FROM features ORDER BY symbol, ts").result_rows
            finally:
                store.close()
            return [tuple(map(repr, r)) for r in c], [tuple(map(repr, r)) for r in f]

        first = snapshot()
        assert main(args) == 0  # twice: nothing changes
        assert snapshot() == first
        assert len(first[0]) == 2 * 197


# -- end to end through `tickcast up --kafka` ---------------------------------------------------------


@pytest.mark.slow
def test_up_kafka_live_session_with_drops_and_garbage_is_exact(tmp_path: Path) -> None:
    """What a user runs: `tickcast up --kafka --source kraken` (ingest -> embedded broker on
    S3 -> feature flow) against the fake Kraken serving 50 trades/s for a minute, with three
    drops (during bursts: the rest comes from REST) and malformed frames; after the last
    trade the wall clock closes the windows, then Ctrl-C. The candles hold exactly the
    served trades, and nothing of this data dir keeps running."""
    from tests.helpers import leftovers

    data, port = tmp_path / "data", free_port()
    with FakeKraken(heartbeat_s=0.5) as fk:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("TICKCAST_", "BYTEWAX_"))}
        env.update(TICKCAST_API_PORT=str(port), TICKCAST_KRAKEN_WS_URL=fk.ws_url,
                   TICKCAST_KRAKEN_REST_URL=fk.rest_url, TICKCAST_WINDOW_SECONDS="1",
                   TICKCAST_ALLOWED_LATENESS_SECONDS="2", TICKCAST_ONLINE_MODEL="off",
                   TICKCAST_KRAKEN_BACKOFF_SECONDS="0.05", TICKCAST_KRAKEN_SILENCE_SECONDS="2")
        log = (tmp_path / "up.log").open("wb")
        up = subprocess.Popen([sys.executable, "-m", "tickcast.cli", "up", "--kafka", "--source", "kraken",
                               "--data-dir", str(data), "--train-every", "0"], cwd=REPO, env=env, stdout=log,
                              stderr=subprocess.STDOUT)

        def up_log() -> str:
            return (tmp_path / "up.log").read_text(errors="replace")[-3000:]

        try:
            deadline = time.monotonic() + 90
            while fk.subscriptions < 1:
                assert up.poll() is None, up_log()
                assert time.monotonic() < deadline, "up did not subscribe to the fake Kraken: " + up_log()
                time.sleep(0.05)
            t0 = time.monotonic()
            tick = 0
            while time.monotonic() - t0 < 62:
                tick += 1
                drop = 2 if tick in (150, 300, 450) else None  # three drops, mid-burst
                fk.publish(fk.make_trades(5), per_msg=1, drop_after=drop)
                if tick in (100, 400):
                    fk.send_raw('{"channel":"trade","type":"update","data":[{"symbol":"BTC/', "BTC/USD")
                    fk.send_raw('{"channel":"trade","type":"update","data":[{"symbol":"ETH/USD","price":-1}]}',
                                record_trades=False)
                time.sleep(max(0.0, t0 + tick * 0.1 - time.monotonic()))
            assert fk.subscriptions >= 4, up_log()
            lake = data / "offline"
            want = expected_windows(fk.all_trades())
            total = sum(v[0] for v in want.values())
            deadline = time.monotonic() + 60
            got: dict = {}  # type: ignore[type-arg]
            late = 0
            while time.monotonic() < deadline:
                assert up.poll() is None, up_log()
                if (lake / "candles").exists():
                    got, _, late = stored_windows(lake)
                    if sum(v[0] for v in got.values()) + late >= total:
                        break
                time.sleep(0.5)
        finally:
            up.send_signal(signal.SIGINT)
            try:
                up.wait(90)
            finally:
                log.close()
    assert up.returncode == 0, up_log()
    assert total >= 3000
    assert late == 0, f"{late} trades arrived after their candle closed"
    assert got == want, window_diff(got, want)
    time.sleep(0.5)
    assert leftovers(data) == []


@pytest.mark.slow
def test_kafka_path_is_exact_through_kill_9_of_ingest_features_and_broker(tmp_path: Path, valkey_url: str) -> None:
    """The Kafka path run as in deploy/ (ingest -> tansu on S3 -> feature flow, both flows
    with recovery), a live session at 50 trades/s with a Kraken drop, then a kill -9 of
    the ingest flow (restarted 6 s later: it fills what it missed from REST), of the
    feature flow and of the broker (each restarted 2 s later).
    The offline store ends equal to the trades served: repeats removed, nothing lost,
    nothing late (the feature flow's clock follows the ingest's heartbeats, so neither
    an ingest that is down nor a consumer that is behind closes a window early)."""
    import threading

    from dataflows.kafka.topic import ensure_topic
    from tickcast.embedded import SeaweedS3
    from tickcast.tansu import TansuBroker

    s3 = SeaweedS3(tmp_path / "s3", buckets=("tansu",)).start()
    broker = TansuBroker.start(storage="s3://tansu/", s3=s3.creds, log_path=tmp_path / "tansu.log")
    procs: dict[str, subprocess.Popen[bytes]] = {}
    with FakeKraken(heartbeat_s=0.5) as fk:
        base = flow_env(fk, tmp_path, valkey_url, TICKCAST_ONLINE_MODEL="off", TICKCAST_KAFKA_BROKERS=broker.bootstrap,
                        TICKCAST_TRADES_TOPIC="trades-faults", TICKCAST_KRAKEN_SILENCE_SECONDS="2")
        ensure_topic(broker.bootstrap, "trades-faults", 2)
        recs = {}
        for name in ("ingest", "features"):
            recs[name] = tmp_path / f"rec-{name}"
            recs[name].mkdir()
            subprocess.run([sys.executable, "-m", "bytewax.recovery", str(recs[name]), "1"], check=True)

        def start(name: str) -> None:
            env = {**base, "TICKCAST_SOURCE": "kafka"} if name == "features" else base
            log = (tmp_path / f"{name}.log").open("ab")
            procs[name] = subprocess.Popen([sys.executable, "-m", "bytewax.run", f"dataflows.{name}", "-r",
                                            str(recs[name]), "-s", "1", "-b", "0"], env=env, cwd=REPO,
                                           stdout=subprocess.DEVNULL, stderr=log)

        def logs() -> str:
            return "\n".join(f"--- {n}\n" + (tmp_path / f"{n}.log").read_text(errors="replace")[-1500:]
                             for n in ("ingest", "features"))

        start("features")
        start("ingest")
        stop = threading.Event()

        def publish() -> None:
            tick = 0
            while not stop.is_set():
                tick += 1
                fk.publish(fk.make_trades(5), drop_after=2 if tick == 50 else None)
                time.sleep(0.1)

        try:
            deadline = time.monotonic() + 60
            while fk.subscriptions < 1:
                assert procs["ingest"].poll() is None and time.monotonic() < deadline, logs()
                time.sleep(0.05)
            pub = threading.Thread(target=publish, daemon=True)
            pub.start()
            for victim in ("ingest", "features", "broker"):
                time.sleep(8)
                if victim == "broker":
                    broker.kill()
                    time.sleep(2)
                    broker.restart()
                else:
                    procs[victim].send_signal(signal.SIGKILL)
                    procs[victim].wait(10)
                    # the ingest stays down longer than window + lateness + grace: only
                    # the heartbeats keep the feature flow from closing those windows
                    time.sleep(6 if victim == "ingest" else 2)
                    start(victim)
            time.sleep(8)
            stop.set()
            pub.join(10)
            want = expected_windows(fk.all_trades())
            total = sum(v[0] for v in want.values())
            got: dict = {}  # type: ignore[type-arg]
            late = 0
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline:
                assert all(p.poll() is None for p in procs.values()), logs()
                if (tmp_path / "offline" / "candles").exists():
                    got, _, late = stored_windows(tmp_path / "offline")
                    if sum(v[0] for v in got.values()) + late >= total:
                        break
                time.sleep(0.5)
        finally:
            stop.set()
            for p in procs.values():
                if p.poll() is None:
                    p.send_signal(signal.SIGINT)
            for p in procs.values():
                try:
                    p.wait(30)
                except subprocess.TimeoutExpired:
                    p.kill()
            broker.stop()
            s3.stop()
    assert fk.subscriptions >= 3, logs()  # the drop and the ingest restart reconnected
    assert late == 0, f"{late} trades arrived after their candle closed\n{logs()}"
    assert got == want, window_diff(got, want) + "\n" + logs()
