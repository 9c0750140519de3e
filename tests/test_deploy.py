"""deploy/: the compose file validates; the Grafana dashboard validates against
Grafana's published schema (the Grafana Foundation SDK's models for the Grafana version
the compose file runs; see tests/grafana_schema.py for what that covers), and every
panel's SQL (plugin macros expanded) runs on the embedded ClickHouse engine against data
a replay wrote plus the ingest_stats of a live session against the fake Kraken."""

from __future__ import annotations

import copy
import json
import re
import subprocess
import time
from importlib.metadata import version
from pathlib import Path

import orjson
import pytest

from tests.grafana_schema import errors, lost_in, sdk_round_trip
from tests.helpers import compose_binary, flow_env, kraken_settings, pump_source, run_flow
from tickcast.stores.offline import open_offline
from tickcast.testing.fake_kraken import FakeKraken

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"


def _secrets_env() -> dict[str, str]:
    """Every secret of deploy/.env.example set (compose refuses to start otherwise)."""
    import os

    names = re.findall(r"^([A-Z_]+)=", (DEPLOY / ".env.example").read_text(), re.M)
    return {**os.environ, **{n: f"test-{n.lower()}" for n in names}}


def test_compose_file_validates() -> None:
    env = _secrets_env()
    r = subprocess.run([str(compose_binary()), "-f", str(DEPLOY / "docker-compose.yml"), "config", "--quiet"],
                       capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 0, r.stderr
    bad = DEPLOY / "docker-compose.yml"
    broken = bad.read_text().replace("services:", "servicez:", 1)
    tmp = DEPLOY / ".broken-compose.yml"
    tmp.write_text(broken)
    try:
        r = subprocess.run([str(compose_binary()), "-f", str(tmp), "config", "--quiet"], capture_output=True,
                           text=True, timeout=60, env=env)
        assert r.returncode != 0  # the validator really validates
    finally:
        tmp.unlink()


def test_env_files_list_every_variable() -> None:
    """Every TICKCAST_* variable of the README is wired by deploy/: a non-secret setting in
    tickcast.env, a secret in .env.example, or set per service by the compose file."""
    names = set(re.findall(r"^(TICKCAST_[A-Z_]+)=", (DEPLOY / "tickcast.env").read_text(), re.M))
    names |= set(re.findall(r"^(TICKCAST_[A-Z_]+)=", (DEPLOY / ".env.example").read_text(), re.M))
    names |= set(re.findall(r"^\s+(TICKCAST_[A-Z_]+):", (DEPLOY / "docker-compose.yml").read_text(), re.M))
    readme = set(re.findall(r"`(TICKCAST_[A-Z_]+)`", (REPO / "README.md").read_text()))
    readme.discard("TICKCAST_REGISTRY_KEY")  # the retired shared key, mentioned as such
    assert readme <= names, readme - names


def expand(sql: str, t0: int, t1: int, symbol: str) -> str:
    """The Grafana ClickHouse plugin's macros, as it expands them."""
    sql = re.sub(r"\$__timeFilter\(([^)]+)\)", lambda m: f"{m.group(1)} >= toDateTime({t0}) AND "
                 f"{m.group(1)} <= toDateTime({t1})", sql)
    return sql.replace("${symbol}", symbol).replace("$__fromTime", f"toDateTime({t0})").replace(
        "$__toTime", f"toDateTime({t1})")


@pytest.fixture(scope="module")
def replayed(tmp_path_factory: pytest.TempPathFactory, valkey_url: str) -> Path:
    from tickcast.sim import SimParams, write_replay

    d = tmp_path_factory.mktemp("dash")
    replay = d / "r.jsonl"
    write_replay(replay, 60_000, ["BTC/USD", "ETH/USD"], seed=3, params=SimParams(rate=5.0))
    with replay.open("ab") as f:  # a bad line and a late trade, so those panels have data
        f.write(b"{garbage\n")
        f.write(orjson.dumps({"channel": "trade", "type": "update", "data": [
            {"symbol": "BTC/USD", "side": "buy", "price": 60000.0, "qty": 0.1, "ord_type": "limit",
             "trade_id": 999999, "timestamp": "2026-01-01T00:00:01.000000Z"}]}) + b"\n")
    lake = d / "offline"
    r = run_flow(flow_env(replay, lake, valkey_url + "/9"))
    assert r.returncode == 0, r.stderr[-2000:]
    # a live session of the real Kraken source against the fake Kraken — a drop during a
    # burst and a gap while connected — so the ingest panel has rows (a replay has no
    # reconnects); the source's recorder writes them to the same lake
    from dataflows.kraken_source import _KrakenPartition

    with FakeKraken(heartbeat_s=0.2) as fk:
        part = _KrakenPartition(kraken_settings(fk, d, stats_seconds=0.2), None)
        try:
            fk.publish(fk.make_trades(60), per_msg=2)
            fk.publish(fk.make_trades(300), per_msg=2, drop_after=10)
            fk.wait_subscribed(2)
            fk.withhold(fk.make_trades(20, ["BTC/USD"]))
            fk.publish(fk.make_trades(10))
            pump_source(part, fk, [])
        finally:
            part.close()
    # headlines through the news flow's hand-over point (news + news_features), in the replay's time
    from tickcast.news.items import NewsItem
    from tickcast.news.publish import publish_news

    t0_us = 1_767_225_600 * 1_000_000  # 2026-01-01, where the replay starts
    store = open_offline(f"chdb://{lake}")
    publish_news([NewsItem(f"n{k}", t0_us + k * 60_000_000, t0_us + k * 60_000_000, "sim", f"headline {k}", "",
                           f"https://example.org/{k}", ("BTC/USD",) if k % 2 else ("BTC/USD", "ETH/USD"),
                           (0.1 * k - 0.3,) * (1 if k % 2 else 2), "lexicon") for k in range(1, 6)], store)
    store.close()
    return lake


def test_every_panel_query_runs_on_chdb_and_returns_rows(replayed: Path) -> None:
    dash = json.loads((DEPLOY / "grafana" / "dashboards" / "tickcast.json").read_text())
    store = open_offline(f"chdb://{replayed}", read_only=True)
    # from before the simulated trades (2026-01-01) to now (dead letters are stamped on arrival)
    t0, t1 = 1_767_225_600 - 3600, int(time.time()) + 3600
    var = dash["templating"]["list"][0]["query"]
    assert [r[0] for r in store.query(var).result_rows] == ["BTC/USD", "ETH/USD"]
    empty = []
    results = {}
    for panel in dash["panels"]:
        assert panel["datasource"]["type"] == "grafana-clickhouse-datasource"
        for target in panel["targets"]:
            res = store.query(expand(target["rawSql"], t0, t1, "BTC/USD"))
            results[panel["title"]] = [dict(zip(res.column_names, r, strict=True)) for r in res.result_rows]
            if not res.result_rows:
                empty.append(panel["title"])
    store.close()
    # drift needs a regime change the short replay may not have; everything else must have data
    assert [e for e in empty if e != "Drift events"] == []
    # the live session: one reconnect, and the 20 withheld trades (plus the burst's tail
    # beyond the reconnect snapshot) filled from REST
    ingest = results["Reconnects and filled gaps per minute"]
    assert sum(r["reconnects"] for r in ingest) == 1 and sum(r["gaps"] for r in ingest) >= 2
    assert sum(r["filled_trades"] for r in ingest) >= 20 and sum(r["unfilled_trades"] for r in ingest) == 0
    heads = results["Recent headlines"]
    assert [r["title"] for r in heads] == [f"headline {k}" for k in range(5, 0, -1)]
    assert len(results["News sentiment (decayed, 30 min)"]) == 5
    dead = results["Dead letters and late trades per minute"]
    assert sum(r["dead_letters"] for r in dead) == 1 and sum(r["late_trades"] for r in dead) == 1


def test_dashboard_json_is_well_formed() -> None:
    dash = json.loads((DEPLOY / "grafana" / "dashboards" / "tickcast.json").read_text())
    assert dash["uid"] and dash["schemaVersion"] >= 36 and dash["panels"]
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    for p in dash["panels"]:
        assert {"id", "type", "title", "gridPos", "targets", "datasource"} <= set(p)
        assert all(t["rawSql"].strip().upper().startswith("SELECT") for t in p["targets"])


def test_dashboard_validates_against_grafanas_schema() -> None:
    """Every property known to the schema of the Grafana version we deploy, with its type,
    enum values and required properties; panel options per panel plugin; nothing the
    SDK's own decoder drops. Then: the validator really rejects broken dashboards."""
    compose = (DEPLOY / "docker-compose.yml").read_text()
    image = re.search(r"image: grafana/grafana:(\d+\.\d+)\.", compose)
    assert image, "the compose file's Grafana image has no version"
    sdk = version("grafana-foundation-sdk").split("!")[-1]
    assert sdk.startswith(image.group(1) + "."), (
        f"grafana-foundation-sdk {sdk} is not the schema of Grafana {image.group(1)}: re-pin it in pyproject.toml")
    dash = json.loads((DEPLOY / "grafana" / "dashboards" / "tickcast.json").read_text())
    assert errors(dash) == []
    assert lost_in(dash, sdk_round_trip(dash)) == []

    bad = copy.deepcopy(dash)
    bad["panels"][0]["gridPos"]["w"] = "12"
    bad["panels"][0]["colour"] = "red"
    bad["panels"][1]["options"]["legend"]["placement"] = "top"
    del bad["panels"][2]["options"]["tooltip"]
    del bad["panels"][3]["targets"][0]["refId"]
    bad["templating"]["list"][0]["refresh"] = 7
    bad["graphTooltip"] = True
    assert sorted(errors(bad)) == sorted([
        "panels[0].gridPos.w: expected an integer, got '12'",
        "panels[0].colour: not a property of Panel",
        "panels[1].options.legend.placement: 'top' is not a LegendPlacement (['bottom', 'right'])",
        "panels[2].options: Options requires 'tooltip'",
        "panels[3].targets[0]: DataQuery requires 'refId'",
        "templating.list[0].refresh: 7 is not a VariableRefresh ([0, 1, 2])",
        "graphTooltip: True is not a DashboardCursorSync ([0, 1, 2])",
    ])


def test_kubernetes_flows_keep_recovery_and_stop_with_sigint() -> None:
    """Both flows run with Bytewax recovery on a volume and get SIGINT before SIGTERM
    (Bytewax closes sources and sinks only on SIGINT); the topic has at least as many
    partitions as the feature flow has processes."""
    import yaml

    docs = [d for f in sorted((DEPLOY / "k8s").glob("*.yaml")) for d in yaml.safe_load_all(f.read_text()) if d]
    by_name = {d["metadata"]["name"]: d for d in docs}
    config = by_name["tickcast"]["data"]
    for name, flow in [("tickcast-ingest", "dataflows.ingest"), ("tickcast-features", "dataflows.features")]:
        d = by_name[name]
        assert d["kind"] == "StatefulSet" and d["spec"]["volumeClaimTemplates"], name
        (c,) = d["spec"]["template"]["spec"]["containers"]
        script = " ".join(c["command"] + c.get("args", []))
        assert f"exec python -m bytewax.run {flow}" in script and "-r /data/recovery" in script, name
        assert "kill -INT 1" in " ".join(c["lifecycle"]["preStop"]["exec"]["command"]), name
    replicas = by_name["tickcast-features"]["spec"]["replicas"]
    assert int(config["TICKCAST_KAFKA_PARTITIONS"]) >= replicas
