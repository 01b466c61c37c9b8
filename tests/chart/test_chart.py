"""The chart without a cluster: lint, schema, CRD copies, RBAC, pod security, network
policies, monitoring objects. Every test renders with `helm template`."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from salon_sessions.core.settings import (
    MANAGED_WORKER_ENV,
    ApiSettings,
    MigrateSettings,
    OperatorSettings,
    WorkerSettings,
)
from salon_sessions.operator import statefulset
from tests.chart.helm import (
    CHART,
    REPO,
    container,
    env_of,
    find,
    helm,
    kinds,
    render,
    template,
)

ALL_ON = {
    "metrics": {"serviceMonitor": {"enabled": True}, "podMonitor": {"enabled": True},
                "prometheusRule": {"enabled": True}},
    "api": {"ingress": {"enabled": True, "className": "nginx",
                        "tls": [{"hosts": ["salon-sessions.example.com"],
                                 "secretName": "salon-sessions-tls"}]}},
    "worker": {"postConnectSecret": "salon-sessions-hook", "serviceAccountName": "workers",
               "env": {"SALON_SIMULATOR_FIRST_QR_S": 4}},
}


def load_yaml_docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


# ---- lint and schema ----------------------------------------------------------------------

@pytest.mark.parametrize("values", [{}, ALL_ON, {"operator": {"scope": "cluster"}}],
                         ids=["defaults", "everything-on", "cluster-scope"])
def test_helm_lint_strict_is_clean(values: dict[str, Any], tmp_path: Path) -> None:
    args = ["lint", "--strict", str(CHART)]
    if values:
        path = tmp_path / "values.yaml"
        path.write_text(yaml.safe_dump(values))
        args += ["-f", str(path)]
    out = helm(*args)
    assert "0 chart(s) failed" in out.stdout
    assert "[WARNING]" not in out.stdout, out.stdout
    assert "[ERROR]" not in out.stdout, out.stdout


BAD_VALUES = [
    (["--set-string", "operator.replicas=two"], "/operator/replicas"),
    (["--set", "operator.port=0"], "/operator/port"),
    (["--set", "api.port=70000"], "/api/port"),
    (["--set-string", "logJson=yes"], "/logJson"),
    (["--set", "logLevel=LOUD"], "/logLevel"),
    (["--set", "image.pullPolicy=Sometimes"], "/image/pullPolicy"),
    (["--set", "image.digest=latest"], "/image/digest"),
    (["--set", "database.password=hunter2"], "password"),
    (["--set", "redis.url=redis://:pw@redis:6379/0"], "url"),
    (["--set-string", "networkPolicy.redis.port=6379/tcp"], "/networkPolicy/redis/port"),
    (["--set-string", "redis.requirePersistence=yes"], "/redis/requirePersistence"),
    (["--set", "worker.env.SALON_DRIVER=simulator"], "SALON_DRIVER"),
    (["--set", "operator.env.FOO=bar"], "FOO"),
    (["--set", "operator.env.SALON_NAMESPACE=other"], "SALON_NAMESPACE"),
    (["--set", "operator.scope=everywhere"], "/operator/scope"),
    (["--set", "operator.extraWatchNamespaces={Salons}"], "/operator/extraWatchNamespaces"),
    (["--set", "api.defaultDriver=whatsapp"], "/api/defaultDriver"),
    (["--set", "metrics.serviceMonitor.interval=30"], "/metrics/serviceMonitor/interval"),
    (["--set", "worker.resources.limits.memory=lots"], "/worker/resources"),
    (["--set", "replicas=3"], "replicas"),
    (["--set", "worker.metricsPort=-1"], "/worker/metricsPort"),
    (["--set", "api.service.nodePort=70000"], "/api/service/nodePort"),
    (["--set", "api.ingress.hosts[0].host=x,api.ingress.hosts[0].paths[0].path=/,"
               "api.ingress.hosts[0].paths[0].pathType=Sometimes"], "pathType"),
    # behind PgBouncer: the direct URL is required, credentials never go in values
    (["--set", "database.pooler=transaction"], "/database/direct/existingSecret"),
    (["--set", "database.pooler=session"], "/database/pooler"),
    (["--set", "worker.databasePoolerUrl=postgresql://u:pw@pgbouncer:6432/salon"],
     "/worker/databasePoolerUrl"),
]


@pytest.mark.parametrize(("args", "where"), BAD_VALUES,
                         ids=[a[-1].split("=")[0] for a, _ in BAD_VALUES])
def test_schema_rejects_wrong_values(args: list[str], where: str) -> None:
    out = template(*args, check=False)
    assert out.returncode != 0, f"accepted {args}"
    assert "values don't meet the specifications of the schema" in out.stderr, out.stderr
    assert where in out.stderr, out.stderr


def test_numbers_in_env_maps_become_strings(tmp_path: Path) -> None:
    docs = render(values={"operator": {"env": {"SALON_PING_INTERVAL_S": 3}},
                          "worker": {"env": {"SALON_SIMULATOR_FIRST_QR_S": 4}}}, tmp=tmp_path)
    env = env_of(container(find(docs, "Deployment", "salon-sessions-operator")))
    assert env["SALON_PING_INTERVAL_S"]["value"] == "3"
    assert json.loads(env["SALON_WORKER_ENV"]["value"]) == {"SALON_SIMULATOR_FIRST_QR_S": "4"}
    OperatorSettings.model_validate({
        **OPERATOR_REQUIRED, "worker_env": json.loads(env["SALON_WORKER_ENV"]["value"])})


def test_api_session_namespace_must_be_watched() -> None:
    out = template("--set", "api.sessionNamespace=elsewhere", check=False)
    assert out.returncode != 0
    assert "api.sessionNamespace must be a namespace the operator watches" in out.stderr


def test_extra_watch_namespaces_get_bindings_policies_and_monitoring() -> None:
    docs = render("--set", "operator.extraWatchNamespaces={salons-eu,salons-ru}",
                  "--set", "metrics.podMonitor.enabled=true",
                  "--set", "api.sessionNamespace=salons-eu")
    watched = ["salon", "salons-eu", "salons-ru"]
    bindings = [b["metadata"]["namespace"] for b in kinds(docs, "RoleBinding")
                if b["roleRef"]["kind"] == "ClusterRole"]
    assert sorted(bindings) == watched
    env = env_of(container(find(docs, "Deployment", "salon-sessions-operator")))
    assert env["SALON_NAMESPACE"]["value"] == "salon,salons-eu,salons-ru"
    assert env["SALON_LEASE_NAMESPACE"]["value"] == "salon"
    settings = OperatorSettings.model_validate({
        **OPERATOR_REQUIRED, "namespace": env["SALON_NAMESPACE"]["value"]})
    assert settings.namespaces == watched
    policies = sorted(p["metadata"]["namespace"] for p in kinds(docs, "NetworkPolicy")
                      if p["metadata"]["name"].endswith("session-workers"))
    assert policies == watched
    assert find(docs, "PodMonitor")["spec"]["namespaceSelector"] == {"matchNames": watched}
    api_env = env_of(container(find(docs, "Deployment", "salon-sessions-api")))
    assert api_env["SALON_NAMESPACE"]["value"] == "salons-eu"
    out = template("--set", "operator.scope=cluster",
                   "--set", "operator.extraWatchNamespaces={salons-eu}", check=False)
    assert out.returncode != 0
    assert "operator.extraWatchNamespaces is for operator.scope namespace" in out.stderr


# ---- CRDs ---------------------------------------------------------------------------------

def test_chart_crds_are_the_repository_crds() -> None:
    top = {p.name: p.read_bytes() for p in (REPO / "crds").glob("*.yaml")}
    chart = {p.name: p.read_bytes() for p in (CHART / "crds").iterdir()}
    assert top, "no CRD in crds/"
    assert chart == top, "charts/salon-sessions/crds/ differs from crds/: copy crds/*.yaml"


# ---- RBAC ---------------------------------------------------------------------------------

def test_operator_rbac_is_deploy_rbac() -> None:
    """The chart's RBAC grants exactly the verbs of deploy/rbac/ (which the operator tests
    run with). Rendered as release salon-sessions in namespace salon-sessions, the names of
    the namespaced objects match too."""
    deploy = {(d["kind"], d["metadata"]["name"]): d
              for path in (REPO / "deploy" / "rbac").glob("*.yaml")
              for d in load_yaml_docs(path)}
    docs = render(namespace="salon-sessions")
    cluster_role = find(docs, "ClusterRole")
    assert cluster_role["rules"] == deploy[("ClusterRole", "salon-sessions-operator")]["rules"]
    assert cluster_role["metadata"]["name"] == "salon-sessions-salon-sessions-operator"
    leader = find(docs, "Role", "salon-sessions-operator-leader-election")
    assert leader["rules"] == deploy[("Role", "salon-sessions-operator-leader-election")]["rules"]
    state = find(docs, "Role", "salon-sessions-operator-state")
    assert state["rules"] == deploy[("Role", "salon-sessions-operator-state")]["rules"]
    operator = env_of(container(find(docs, "Deployment", "salon-sessions-operator")))
    assert operator["SALON_PENDING_CLEANUP_CONFIGMAP"]["value"] == \
        state["rules"][1]["resourceNames"][0]
    sa = find(docs, "ServiceAccount", "salon-sessions-operator")
    assert sa["metadata"]["namespace"] == "salon-sessions"
    binding = find(docs, "RoleBinding", "salon-sessions-operator")
    want = deploy[("RoleBinding", "salon-sessions-operator")]
    assert binding["roleRef"]["kind"] == want["roleRef"]["kind"] == "ClusterRole"
    assert binding["roleRef"]["name"] == cluster_role["metadata"]["name"]
    assert binding["subjects"] == want["subjects"]
    assert not kinds(docs, "ClusterRoleBinding")

    cluster = render("--set", "operator.scope=cluster", namespace="salon-sessions")
    crb = find(cluster, "ClusterRoleBinding")
    assert crb["subjects"] == deploy[("ClusterRoleBinding", "salon-sessions-operator")][
        "subjects"]
    operator_env = env_of(container(find(cluster, "Deployment", "salon-sessions-operator")))
    assert "SALON_NAMESPACE" not in operator_env  # all namespaces

    # the admission policy that narrows the Secrets verbs, for this release's account only
    policy = find(docs, "ValidatingAdmissionPolicy")
    want_policy = deploy[("ValidatingAdmissionPolicy", "salon-sessions-operator-secrets")]
    assert policy["spec"]["validations"] == want_policy["spec"]["validations"]
    assert policy["spec"]["matchConstraints"] == want_policy["spec"]["matchConstraints"]
    assert policy["spec"]["matchConditions"][0]["expression"] == (
        "request.userInfo.username == "
        "'system:serviceaccount:salon-sessions:salon-sessions-operator'")
    policy_binding = find(docs, "ValidatingAdmissionPolicyBinding")
    assert policy_binding["spec"] == {"policyName": policy["metadata"]["name"],
                                      "validationActions": ["Deny"]}
    off = render("--set", "operator.secretsPolicy.enabled=false", namespace="salon-sessions")
    assert not kinds(off, "ValidatingAdmissionPolicy")


def test_lease_name_is_the_one_the_role_allows() -> None:
    docs = render(release="prod", namespace="salons")
    env = env_of(container(find(docs, "Deployment", "prod-salon-sessions-operator")))
    lease = env["SALON_LEASE_NAME"]["value"]
    role = find(docs, "Role", "prod-salon-sessions-operator-leader-election")
    assert role["rules"][1]["resourceNames"] == [lease]
    assert env["SALON_LEASE_NAMESPACE"]["value"] == "salons"
    # the release owns the Lease (uninstall removes it) but never sets its spec (the holder)
    owned = find(docs, "Lease", lease)
    assert owned["metadata"]["namespace"] == "salons"
    assert "spec" not in owned
    off = render("--set", "operator.leaderElection.enabled=false")
    assert not kinds(off, "Lease")
    operator = find(off, "Deployment", "salon-sessions-operator")
    assert env_of(container(operator))["SALON_LEADER_ELECTION"]["value"] == \
        "false"


def test_api_rbac_is_least_privilege() -> None:
    docs = render()
    role = find(docs, "Role", "salon-sessions-api")
    assert role["rules"] == [{"apiGroups": ["wa.salonsessions.io"],
                              "resources": ["salonsessions"],
                              "verbs": ["get", "list", "watch", "create", "delete"]}]
    binding = find(docs, "RoleBinding", "salon-sessions-api")
    assert binding["subjects"][0]["name"] == "salon-sessions-api"
    assert all(b["roleRef"]["name"] != "salon-sessions-api"
               for b in kinds(docs, "ClusterRoleBinding"))


# ---- pods ---------------------------------------------------------------------------------

def workloads(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] in ("Deployment", "Job")]


def test_every_container_runs_the_entry_point_hardened(tmp_path: Path) -> None:
    docs = render(values=ALL_ON, tmp=tmp_path)
    commands = {d["metadata"]["name"]: container(d)["command"] for d in workloads(docs)}
    assert commands == {
        "salon-sessions-operator": ["salon-sessions", "operator"],
        "salon-sessions-api": ["salon-sessions", "api"],
        "salon-sessions-migrate": ["salon-sessions", "migrate", "up"],
    }
    for doc in workloads(docs):
        pod = doc["spec"]["template"]["spec"]
        c = container(doc)
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["enableServiceLinks"] is False  # SALON_* service env vars would collide
        sc = c["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"] == {"drop": ["ALL"]}
        assert set(c["resources"]) == {"requests", "limits"}
        assert {"name": "tmp", "mountPath": "/tmp"} in c["volumeMounts"]
        assert c["image"] == "salon-sessions:0.1.0"
    for doc in kinds(docs, "Deployment"):
        c = container(doc)
        assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
        assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
        assert c["startupProbe"]["httpGet"]["path"] == "/healthz"
        assert [p["name"] for p in c["ports"]] == ["http"]
    job = find(docs, "Job")
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert job["spec"]["template"]["spec"]["automountServiceAccountToken"] is False


def test_operator_runs_two_replicas_one_active() -> None:
    docs = render()
    op = find(docs, "Deployment", "salon-sessions-operator")
    assert op["spec"]["replicas"] == 2
    env = env_of(container(op))
    assert env["SALON_LEADER_ELECTION"]["value"] == "true"
    assert env["SALON_IDENTITY"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    pdbs = {p["metadata"]["name"]: p for p in kinds(docs, "PodDisruptionBudget")}
    assert set(pdbs) == {"salon-sessions-operator", "salon-sessions-api"}
    for pdb in pdbs.values():
        assert pdb["spec"]["maxUnavailable"] == 1
    anti = op["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
    assert anti["preferredDuringSchedulingIgnoredDuringExecution"]


def test_image_digest_wins_and_reaches_the_workers() -> None:
    digest = "sha256:" + "a" * 64
    docs = render("--set", "image.repository=registry.example/salon",
                  "--set", f"image.digest={digest}")
    op = container(find(docs, "Deployment", "salon-sessions-operator"))
    assert op["image"] == f"registry.example/salon@{digest}"
    assert env_of(op)["SALON_WORKER_IMAGE"]["value"] == op["image"]


OPERATOR_REQUIRED = {"database_url": "postgresql://x@h/d", "redis_url": "redis://h",
                     "redis_admin_url": "redis://a@h", "credentials_key": "k" * 32}
SECRETISH = re.compile(r"(_URL|_TOKEN|_PASSWORD|^SALON_TOKEN_SECRET|^SALON_CREDENTIALS_KEY)$")
NOT_SECRET = {"SALON_PUBLIC_URL"}  # the onboarding links' base URL


def test_secrets_only_by_reference(tmp_path: Path) -> None:
    docs = render(values=ALL_ON, tmp=tmp_path)
    refs = set()
    for doc in workloads(docs):
        for name, var in env_of(container(doc)).items():
            if SECRETISH.search(name) and name not in NOT_SECRET:
                assert "value" not in var, f"{name} has an inline value"
                ref = var["valueFrom"]["secretKeyRef"]
                refs.add((name, ref["name"], ref["key"]))
    assert refs == {
        ("SALON_DATABASE_URL", "salon-sessions-database", "url"),
        ("SALON_REDIS_URL", "salon-sessions-redis", "url"),  # the operator's user
        ("SALON_REDIS_URL", "salon-sessions-redis-api", "url"),  # the API's user
        ("SALON_REDIS_ADMIN_URL", "salon-sessions-operator-credentials", "redis-admin-url"),
        ("SALON_CREDENTIALS_KEY", "salon-sessions-operator-credentials", "credentials-key"),
        ("SALON_ADMIN_TOKEN", "salon-sessions-api", "admin-token"),
        ("SALON_TOKEN_SECRET", "salon-sessions-api", "token-secret"),
    }
    assert not kinds(docs, "Secret")
    def strings(node: Any, path: str = "") -> list[tuple[str, str]]:
        if isinstance(node, dict):
            return [s for k, v in node.items() for s in strings(v, f"{path}.{k}")]
        if isinstance(node, list):
            return [s for i, v in enumerate(node) for s in strings(v, f"{path}[{i}]")]
        return [(path, str(node))]

    for path, value in strings(yaml.safe_load((CHART / "values.yaml").read_text())):
        assert not re.search(r"://[^\s/]*@", value), f"credentials in values: {path}"
        assert "password" not in path.lower(), path
        assert "password" not in value.lower(), path


def settings_env(cls: type[Any]) -> set[str]:
    return {f"SALON_{name.upper()}" for name in cls.model_fields}


@pytest.mark.parametrize("required", [True, False])
def test_redis_persistence_requirement_reaches_the_api(required: bool, tmp_path: Path) -> None:
    """redis.requirePersistence (default true) becomes the API's
    SALON_REDIS_REQUIRE_PERSISTENCE, which its /readyz obeys."""
    values = {} if required else {"redis": {"requirePersistence": False}}
    docs = render(values=values, tmp=tmp_path)
    env = env_of(container(find(docs, "Deployment", "salon-sessions-api")))
    value = env["SALON_REDIS_REQUIRE_PERSISTENCE"]["value"]
    assert value == str(required).lower()
    assert ApiSettings.model_validate({
        "database_url": "postgresql://u:p@h/d", "redis_url": "redis://h:6379/0",
        "redis_require_persistence": value}).redis_require_persistence is required


def test_every_salon_variable_is_a_setting(tmp_path: Path) -> None:
    """A renamed or removed setting fails here, not silently in a pod."""
    docs = render(values=ALL_ON, tmp=tmp_path)
    expected = {"salon-sessions-operator": OperatorSettings, "salon-sessions-api": ApiSettings,
                "salon-sessions-migrate": MigrateSettings}
    for doc in workloads(docs):
        names = {n for n in env_of(container(doc)) if n.startswith("SALON_")}
        unknown = names - settings_env(expected[doc["metadata"]["name"]])
        assert not unknown, f"{doc['metadata']['name']}: {unknown}"
    env = env_of(container(find(docs, "Deployment", "salon-sessions-operator")))
    worker_env = json.loads(env["SALON_WORKER_ENV"]["value"])
    assert set(worker_env) <= settings_env(WorkerSettings) - MANAGED_WORKER_ENV


def test_worker_env_refuses_what_the_operator_manages() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    worker_env = schema["properties"]["worker"]["properties"]["env"]["allOf"][1]
    assert set(worker_env["propertyNames"]["not"]["enum"]) == set(MANAGED_WORKER_ENV)


# ---- network policies ---------------------------------------------------------------------

def ports(rule: dict[str, Any]) -> set[tuple[str, int]]:
    return {(p["protocol"], p["port"]) for p in rule.get("ports", [])}


def test_workers_reach_only_redis_postgres_dns_and_whatsapp() -> None:
    docs = render()
    policy = find(docs, "NetworkPolicy", "salon-sessions-session-workers")
    spec = policy["spec"]
    assert spec["podSelector"]["matchLabels"] == {
        statefulset.NAME_LABEL: statefulset.APP,
        statefulset.COMPONENT_LABEL: statefulset.COMPONENT,
    }
    assert spec["policyTypes"] == ["Ingress", "Egress"]
    egress = spec["egress"]
    allowed = set().union(*(ports(r) for r in egress))
    assert allowed == {("UDP", 53), ("TCP", 53), ("TCP", 5432), ("TCP", 6379), ("TCP", 443),
                       ("TCP", 5222)}
    whatsapp = next(r for r in egress if ports(r) == {("TCP", 443), ("TCP", 5222)})
    block = whatsapp["to"][0]["ipBlock"]
    assert block["cidr"] == "0.0.0.0/0"
    assert {"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"} <= set(block["except"])
    assert [ports(r) for r in spec["ingress"]] == [{("TCP", 9090)}]


def test_network_policies_for_every_component(tmp_path: Path) -> None:
    docs = render(values={"networkPolicy": {
        "redis": {"to": [{"podSelector": {"matchLabels": {"app": "redis"}}}]},
        "extraWorkerEgress": [{"ports": [{"protocol": "TCP", "port": 1080}]}],
        "metricsFrom": [{"namespaceSelector": {"matchLabels": {"name": "monitoring"}}}]}},
        tmp=tmp_path)
    policies = {p["metadata"]["name"]: p["spec"] for p in kinds(docs, "NetworkPolicy")}
    assert set(policies) == {"salon-sessions-session-workers", "salon-sessions-operator",
                             "salon-sessions-api", "salon-sessions-migrate"}
    for name in ("salon-sessions-operator", "salon-sessions-api"):
        egress = policies[name]["egress"]
        assert ports(egress[-1]) == {("TCP", 443), ("TCP", 6443)}  # the API server
        redis = next(r for r in egress if ports(r) == {("TCP", 6379)})
        assert redis["to"] == [{"podSelector": {"matchLabels": {"app": "redis"}}}]
    worker = policies["salon-sessions-session-workers"]
    assert ports(worker["egress"][-1]) == {("TCP", 1080)}
    assert worker["ingress"][0]["from"][0]["namespaceSelector"]
    migrate = set().union(*(ports(r) for r in policies["salon-sessions-migrate"]["egress"]))
    assert migrate == {("UDP", 53), ("TCP", 53), ("TCP", 5432)}
    off = render("--set", "networkPolicy.enabled=false")
    assert not kinds(off, "NetworkPolicy")


def test_cluster_scope_puts_worker_policies_in_session_namespaces() -> None:
    docs = render("--set", "operator.scope=cluster",
                  "--set", "networkPolicy.extraWorkerNamespaces={salons-a,salons-b}")
    namespaces = {p["metadata"]["namespace"] for p in kinds(docs, "NetworkPolicy")
                  if p["metadata"]["name"].endswith("session-workers")}
    assert namespaces == {"salon", "salons-a", "salons-b"}


# ---- monitoring objects -------------------------------------------------------------------

def test_monitoring_objects_are_optional_and_ship_the_alerts(tmp_path: Path) -> None:
    assert not [d for d in render() if d["kind"] in
                ("ServiceMonitor", "PodMonitor", "PrometheusRule")]
    docs = render(values=ALL_ON, tmp=tmp_path)
    rule = find(docs, "PrometheusRule")
    assert rule["spec"] == yaml.safe_load((REPO / "monitoring" / "alerts.yaml").read_text())
    monitors = {m["metadata"]["name"]: m["spec"] for m in kinds(docs, "ServiceMonitor")}
    assert set(monitors) == {"salon-sessions-operator", "salon-sessions-api"}
    for name, spec in monitors.items():
        component = name.removeprefix("salon-sessions-")
        assert spec["selector"]["matchLabels"]["app.kubernetes.io/component"] == component
        assert spec["endpoints"][0]["relabelings"] == [
            {"targetLabel": "component", "replacement": component}]
        service = next(s for s in kinds(docs, "Service")
                       if s["spec"]["selector"] == spec["selector"]["matchLabels"])
        assert service["spec"]["ports"][0]["name"] == spec["endpoints"][0]["port"]
    pod_monitor = find(docs, "PodMonitor")["spec"]
    assert pod_monitor["selector"]["matchLabels"] == {
        statefulset.NAME_LABEL: statefulset.APP,
        statefulset.COMPONENT_LABEL: statefulset.COMPONENT}
    relabel = {r["targetLabel"]: r for r in pod_monitor["podMetricsEndpoints"][0]["relabelings"]}
    assert relabel["company_id"]["sourceLabels"] == [
        "__meta_kubernetes_pod_label_" + re.sub(r"[^a-zA-Z0-9]", "_", statefulset.COMPANY_LABEL)]
    # the port the PodMonitor scrapes is the one the operator names on the worker container
    assert pod_monitor["podMetricsEndpoints"][0]["port"] == "metrics"


def test_dashboards_ship_as_labelled_configmaps() -> None:
    docs = render()
    maps = {c["metadata"]["name"]: c for c in kinds(docs, "ConfigMap")}
    files = sorted((CHART / "dashboards").glob("*.json"))
    assert len(files) >= 4
    assert len(maps) == len(files)
    shipped = {}
    for cm in maps.values():
        assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert cm["metadata"]["annotations"] == {"grafana_folder": "salon-sessions"}
        (key, text), = cm["data"].items()
        shipped[key] = json.loads(text)
    assert shipped == {p.name: json.loads(p.read_text()) for p in files}
    other = render("--set", "dashboards.label=my_dashboards", "--set", "dashboards.labelValue=x",
                   "--set", "dashboards.namespace=grafana")
    for cm in kinds(other, "ConfigMap"):
        assert cm["metadata"]["labels"]["my_dashboards"] == "x"
        assert cm["metadata"]["namespace"] == "grafana"
    assert not kinds(render("--set", "dashboards.enabled=false"), "ConfigMap")


def test_every_resource_carries_the_release_labels(tmp_path: Path) -> None:
    for doc in render(values=ALL_ON, tmp=tmp_path):
        labels = doc["metadata"]["labels"]
        assert labels["app.kubernetes.io/instance"] == "salon-sessions", doc["metadata"]
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert labels["helm.sh/chart"] == "salon-sessions-0.1.0"


@pytest.mark.parametrize(("port", "ingress"), [
    (9090, [{"ports": [{"protocol": "TCP", "port": 9090}]}]),
    (0, None),  # no /metrics: no ingress at all
])
def test_worker_metrics_port_settings(port: int, ingress: Any) -> None:
    docs = render("--set", f"worker.metricsPort={port}")
    policy = find(docs, "NetworkPolicy", "salon-sessions-session-workers")
    assert policy["spec"].get("ingress") == ingress
    env = env_of(container(find(docs, "Deployment", "salon-sessions-operator")))
    assert env["SALON_WORKER_METRICS_PORT"]["value"] == str(port)
    OperatorSettings.model_validate({**OPERATOR_REQUIRED, "worker_metrics_port": port})


def test_operator_refuses_a_free_port_per_worker() -> None:
    """-1 (a free port per worker) was the dev node agent's: a real pod has its own network
    namespace and a fixed port the NetworkPolicy and the PodMonitor can name."""
    with pytest.raises(ValueError, match="worker_metrics_port"):
        OperatorSettings.model_validate({**OPERATOR_REQUIRED, "worker_metrics_port": -1})


def test_api_service_node_port() -> None:
    """`api.service.nodePort` fixes the port of a NodePort Service (the local demo's link);
    ClusterIP ignores it."""
    node_port = ["--set", "api.service.type=NodePort", "--set", "api.service.nodePort=30080"]
    service = find(render(*node_port), "Service", "salon-sessions-api")
    assert service["spec"]["type"] == "NodePort"
    assert service["spec"]["ports"][0]["nodePort"] == 30080
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    cluster_ip = find(render("--set", "api.service.nodePort=30080"), "Service",
                      "salon-sessions-api")
    assert "nodePort" not in cluster_ip["spec"]["ports"][0]


# ---- behind PgBouncer -------------------------------------------------------------------

POOLED = {"database": {"pooler": "transaction", "direct": {"existingSecret": "pg-direct"}},
          "worker": {"databasePoolerUrl": "postgresql://pgbouncer.db:6432/salon"}}


def test_behind_pgbouncer_the_direct_url_goes_to_migrations_and_locks(tmp_path: Path) -> None:
    docs = render(values=POOLED, tmp=tmp_path)
    expected = {"salon-sessions-operator": OperatorSettings, "salon-sessions-api": ApiSettings,
                "salon-sessions-migrate": MigrateSettings}
    direct = {"secretKeyRef": {"name": "pg-direct", "key": "url"}}
    for doc in workloads(docs):
        env = env_of(container(doc))
        assert {n for n in env if n.startswith("SALON_")} <= settings_env(
            expected[doc["metadata"]["name"]])
        assert env["SALON_LOCK_DATABASE_URL"]["valueFrom"] == direct, doc["metadata"]["name"]
        if doc["metadata"]["name"] != "salon-sessions-migrate":
            assert env["SALON_DATABASE_POOLER"]["value"] == "transaction"
    operator = env_of(container(find(docs, "Deployment", "salon-sessions-operator")))
    assert operator["SALON_WORKER_DATABASE_POOLER_URL"]["value"] == \
        "postgresql://pgbouncer.db:6432/salon"
    workers = find(docs, "NetworkPolicy", "salon-sessions-session-workers")
    assert ("TCP", 6432) in set().union(*(ports(r) for r in workers["spec"]["egress"]))
    # without a pooler nothing of it is rendered
    plain = render()
    for doc in workloads(plain):
        env = env_of(container(doc))
        assert not {"SALON_LOCK_DATABASE_URL", "SALON_DATABASE_POOLER",
                    "SALON_WORKER_DATABASE_POOLER_URL"} & set(env)

