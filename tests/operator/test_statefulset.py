"""The StatefulSet builder: security, env from Secrets, the roll-out hash."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from salon_sessions.core.salon_session import SalonSession
from salon_sessions.core.settings import OperatorSettings
from salon_sessions.operator.drift import generation, restored_template, template_matches
from salon_sessions.operator.statefulset import HASH_ANNOTATION, build_statefulset, matches

SECRET = "postgresql://salon:s3cr3t@db:5432/salon"


KEY = "k" * 40


def settings(**kw: Any) -> OperatorSettings:
    values: dict[str, Any] = {"database_url": SECRET, "redis_url": "redis://:pw@r:6379/0",
                              "redis_admin_url": "redis://admin:apw@r:6379/0",
                              "credentials_key": KEY, **kw}
    return OperatorSettings(**values)


def body(**spec: Any) -> SalonSession:
    return SalonSession.from_body({"metadata": {"name": "company-1", "namespace": "ns",
                                                "uid": "u-1", "generation": 1},
                                   "spec": {"companyId": "company_1", **spec}})


def template_hash(sts: dict[str, Any]) -> str:
    return str(sts["spec"]["template"]["metadata"]["annotations"][HASH_ANNOTATION])


def test_pod_template_is_locked_down_and_references_secrets() -> None:
    sts = build_statefulset(body(proxy={"secretRef": {"name": "px", "key": "u"}}),
                            settings(worker_env={"SALON_SIMULATOR_QR_PERIOD_S": "1"}))
    assert sts["spec"]["replicas"] == 1
    pod = sts["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    container = pod["containers"][0]
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    env = {e["name"]: e for e in container["env"]}
    assert env["SALON_PROXY_URL"]["valueFrom"]["secretKeyRef"] == {"name": "px", "key": "u"}
    # the session's own credentials, never the shared ones
    assert env["SALON_REDIS_URL"]["valueFrom"]["secretKeyRef"] == {
        "name": "company-1-credentials", "key": "redis-url"}
    assert env["SALON_DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {
        "name": "company-1-credentials", "key": "database-url"}
    assert env["SALON_SIMULATOR_QR_PERIOD_S"]["value"] == "1"
    assert env["SALON_DRIVER"]["value"] == "neonize"
    assert container["resources"] == {"requests": {"cpu": "50m", "memory": "128Mi"},
                                      "limits": {"cpu": "1", "memory": "512Mi"}}
    assert "s3cr3t" not in json.dumps(sts)
    assert KEY not in json.dumps(sts)


def test_inputs_that_roll_the_pod_change_the_hash() -> None:
    base = template_hash(build_statefulset(body(), settings()))
    for change in ({"image": "x:2"}, {"driver": "simulator"},
                   {"link": {"method": "qr", "expireAfter": "2h"}},
                   {"proxy": {"secretRef": {"name": "p"}}},
                   {"resources": {"limits": {"memory": "1Gi"}}}):
        assert template_hash(build_statefulset(body(**change), settings())) != base, change
    # what the session's credentials Secret is made of: the pod must re-read it
    for inputs in ({"credentials_key": "r" * 40}, {"redis_url": "redis://:pw@r2:6379/0"},
                   {"database_url": SECRET + "2"}):
        assert template_hash(build_statefulset(body(), settings(**inputs))) != base, inputs
    own_password = settings(redis_url="redis://:other@r:6379/0")  # the operator's own user
    assert template_hash(build_statefulset(body(), own_password)) == base
    same = build_statefulset(body(displayName="Other", suspend=True), settings())
    assert template_hash(same) == base
    assert same["spec"]["replicas"] == 0


def test_workers_run_without_the_bot_label_and_with_their_memory_limit() -> None:
    """neonize labels messages to phone-number chats as sent by a bot unless
    NEONIZE_BOT_TAG=off is in the process's environment from its start; the worker derives
    GOMEMLIMIT from the container's limit (downward API)."""
    container = build_statefulset(body(), settings())["spec"]["template"]["spec"][
        "containers"][0]
    env = {e["name"]: e for e in container["env"]}
    assert env["NEONIZE_BOT_TAG"] == {"name": "NEONIZE_BOT_TAG", "value": "off"}
    assert env["SALON_BOT_LABEL"]["value"] == "false"
    assert env["SALON_MEMORY_LIMIT_BYTES"]["valueFrom"] == {
        "resourceFieldRef": {"containerName": container["name"], "resource": "limits.memory"}}
    assert env["SALON_GO_MEMORY_LIMIT_PERCENT"]["value"] == "50"
    assert env["SALON_GO_GC_PERCENT"]["value"] == "100"
    asked = build_statefulset(body(), settings(worker_bot_label=True))
    env = {e["name"]: e.get("value") for e in
           asked["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert (env["NEONIZE_BOT_TAG"], env["SALON_BOT_LABEL"]) == ("on", "true")
    # each of them rolls the pods
    base = template_hash(build_statefulset(body(), settings()))
    for change in ({"worker_bot_label": True}, {"worker_go_memory_limit_percent": 60},
                   {"worker_go_gc_percent": 50}):
        assert template_hash(build_statefulset(body(), settings(**change))) != base, change


@pytest.mark.parametrize("name", ["SALON_BOT_LABEL", "SALON_MEMORY_LIMIT_BYTES",
                                  "SALON_GO_GC_PERCENT"])
def test_worker_env_cannot_set_the_go_variables(name: str) -> None:
    with pytest.raises(ValidationError):
        settings(worker_env={name: "1"})


def test_matches_detects_drift() -> None:
    desired = build_statefulset(body(), settings())
    assert matches(json.loads(json.dumps(desired)), desired)
    scaled = json.loads(json.dumps(desired))
    scaled["spec"]["replicas"] = 0
    assert not matches(scaled, desired)


@pytest.mark.parametrize("env", [{"SALON_DATABASE_URL": "x"}, {"PATH": "/bin"}])
def test_worker_env_cannot_smuggle_managed_variables(env: dict[str, str]) -> None:
    with pytest.raises(ValidationError):
        settings(worker_env=env)


def test_template_drift_by_content_and_what_is_put_back() -> None:
    desired = build_statefulset(body(), settings())
    template = desired["spec"]["template"]
    live = json.loads(json.dumps(template))
    # the API server's defaults are no drift
    live["spec"]["dnsPolicy"] = "ClusterFirst"
    live["spec"]["containers"][0]["terminationMessagePath"] = "/dev/termination-log"
    assert template_matches(template, live)
    added = json.loads(json.dumps(live))
    added["spec"]["containers"][0]["env"].append({"name": "SALON_X", "value": "1"})
    assert not template_matches(template, added)
    changed = json.loads(json.dumps(live))
    changed["spec"]["containers"][0]["image"] = "evil:latest"
    assert not template_matches(template, changed)
    # a `kubectl rollout restart` survives the put-back, nothing else of theirs does
    restarted = {"spec": {"template": {"metadata": {"annotations": {
        "kubectl.kubernetes.io/restartedAt": "2026-11-29T10:00:00Z", "other": "x"}}}}}
    back = restored_template(desired, restarted)
    assert back["metadata"]["annotations"] == {
        **template["metadata"]["annotations"],
        "kubectl.kubernetes.io/restartedAt": "2026-11-29T10:00:00Z"}
    assert back["spec"] == template["spec"]
    assert restored_template(desired, None) == template
    assert generation({"metadata": {"generation": 3}}) == 3
    assert generation(None) is None


POOLER = "postgresql://pgbouncer.db:6432/salon"


def test_behind_a_pooler_the_lock_goes_to_postgresql_directly() -> None:
    plain = {e["name"]: e for e in
             build_statefulset(body(), settings())["spec"]["template"]["spec"]["containers"][0]
             ["env"]}
    assert "SALON_LOCK_DATABASE_URL" not in plain
    assert "SALON_DATABASE_POOLER" not in plain
    pooled = build_statefulset(body(), settings(worker_database_pooler_url=POOLER))
    env = {e["name"]: e for e in pooled["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["SALON_DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {
        "name": "company-1-credentials", "key": "database-url"}
    assert env["SALON_LOCK_DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {
        "name": "company-1-credentials", "key": "lock-database-url"}
    assert env["SALON_DATABASE_POOLER"] == {"name": "SALON_DATABASE_POOLER",
                                            "value": "transaction"}


def test_the_pooler_rolls_the_pods_and_no_pooler_keeps_the_old_hash() -> None:
    base = template_hash(build_statefulset(body(), settings()))
    # the hash before the pooler setting existed (main at 5a0a384): an upgrade of the
    # operator without a pooler restarts no session
    assert base == "f2a218bb78c3ed21"
    pooled = template_hash(build_statefulset(body(), settings(
        worker_database_pooler_url=POOLER)))
    other = template_hash(build_statefulset(body(), settings(
        worker_database_pooler_url=POOLER.replace("6432", "6433"))))
    assert len({base, pooled, other}) == 3
    # the workers' direct URL is the operator's direct one
    direct = template_hash(build_statefulset(body(), settings(
        worker_database_pooler_url=POOLER, database_url=POOLER, database_pooler="transaction",
        lock_database_url=SECRET)))
    assert direct == pooled


def test_the_pooler_url_must_be_postgresql() -> None:
    with pytest.raises(ValidationError):
        settings(worker_database_pooler_url="redis://pgbouncer:6432/0")


def test_the_onboarding_bound_reaches_the_worker_only_when_not_the_default() -> None:
    """`spec.link.expireAfter` is the worker's `SALON_LINK_EXPIRE_AFTER_S`; the default (30m,
    what the CRD fills in) is the worker's own, so an operator upgrade rolls no session that
    keeps it (the hash of a default session is what it was before the field existed)."""
    def env_of(spec: dict[str, Any]) -> dict[str, Any]:
        sts = build_statefulset(body(**spec), settings())
        return {e["name"]: e.get("value") for e in
                sts["spec"]["template"]["spec"]["containers"][0]["env"]}

    base = template_hash(build_statefulset(body(), settings()))
    for default in ({}, {"link": {"method": "qr"}},
                    {"link": {"method": "qr", "expireAfter": "30m"}},
                    {"link": {"method": "pairingCode", "phoneNumber": "79686484488",
                              "expireAfter": "0h30m"}}):
        assert "SALON_LINK_EXPIRE_AFTER_S" not in env_of(default), default
        assert template_hash(build_statefulset(body(**default), settings())) == base
    assert env_of({"link": {"method": "qr", "expireAfter": "1h30m"}})[
        "SALON_LINK_EXPIRE_AFTER_S"] == "5400"
    assert env_of({"link": {"method": "qr", "expireAfter": "8s"}})[
        "SALON_LINK_EXPIRE_AFTER_S"] == "8"
    # a value the CRD would have refused never breaks the reconcile: the default
    assert "SALON_LINK_EXPIRE_AFTER_S" not in env_of({"link": {"expireAfter": "1d"}})
