"""Deletion policies and a database that stays unreachable during deletion."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace

import asyncpg
import pytest

from devstack.procs import free_port
from salon_sessions.db.migrator import migrate_database
from tests.helpers import eventually
from tests.operator.conftest import OperatorEnv
from tests.operator.helpers import (
    PHONE,
    Phone,
    StatusWatch,
    condition,
    credentials,
    history,
    new_company,
)

pytestmark = [pytest.mark.slow, pytest.mark.e2e]


def seed_credentials(dsn: str, company: str, namespace: str) -> None:
    """What a linked session leaves in the database (as the worker writes it)."""
    async def run() -> None:
        await migrate_database(dsn)
        conn = await asyncpg.connect(dsn)
        try:
            jid = f"{PHONE}:7@s.whatsapp.net"
            await conn.execute("INSERT INTO simulator_device (company_id, jid, phone) "
                               "VALUES ($1, $2, $3)", company, jid, PHONE)
            await conn.execute(
                "INSERT INTO salon_sessions (company_id, namespace, resource_name, "
                "device_jid, phone, linked_at) VALUES ($1, $2, $3, $4, $5, now())",
                company, namespace, company.replace("_", "-"), jid, PHONE)
            await conn.execute(
                "INSERT INTO salon_link_history (company_id, action, device_jid, phone, "
                "actor) VALUES ($1, 'linked', $2, $3, 'worker:test')", company, jid, PHONE)
        finally:
            await conn.close()

    asyncio.run(run())


def test_retain_keeps_credentials(operator_env: OperatorEnv) -> None:
    env = operator_env
    env.wait_role(env.start_operator(), "leader")
    company = new_company()
    seed_credentials(env.database, company, env.namespace)
    name = env.apply_session(company, suspend=True, deletionPolicy="Retain")
    env.wait_status(name, "suspended", phase="Suspended")
    phone = Phone(env.redis_url, company)
    try:
        phone.redis.hset(f"whatsapp:session:{company}", "phase", "Connected")
        env.kubectl("delete", "salonsession", name, "--timeout=60s")
        assert credentials(env.database, company) == {"simulator_device": 1,
                                                      "salon_sessions": 1}
        assert history(env.database, company) == ["linked"]
        assert phone.keys() == []  # Redis keys are not credentials: always removed
        assert "CredentialsRetained" in [e["reason"] for e in env.events(name)]
    finally:
        phone.close()


def test_unreachable_database_does_not_block_deletion(operator_env: OperatorEnv) -> None:
    env = operator_env
    dead = f"postgresql://salon:nope@127.0.0.1:{free_port()}/salon"
    env.wait_role(env.start_operator(SALON_DATABASE_URL=dead), "leader")
    name = env.apply_session(new_company(), suspend=True)
    env.wait_status(name, "suspended", phase="Suspended")
    watch = StatusWatch(env.stack, env.namespace, name).started()
    try:
        env.kubectl("delete", "salonsession", name, "--wait=false")
        eventually(lambda: not env.exists("salonsession", name), 60, "the CR released")
        assert watch.saw(lambda s: any(
            c["type"] == "Ready" and c["reason"] == "CleanupFailed"
            for c in s.get("conditions", [])))
        assert watch.saw(lambda s: s.get("phase") == "Failed")
    finally:
        watch.close()
    warnings = [e for e in env.events(name) if e["reason"] == "CleanupFailed"]
    assert warnings
    assert warnings[0]["type"] == "Warning"
    assert "nope" not in warnings[0]["message"]  # the password never shows


def test_a_second_session_of_a_company_runs_nothing_and_deleting_it_loses_nothing(
        operator_env: OperatorEnv) -> None:
    """The CRD allows one SalonSession per company in a namespace (its name is derived
    from the company id); an operator watching two namespaces may still see two."""
    env, stack = operator_env, operator_env.stack
    other = f"{env.namespace}-b"
    stack.kubectl("create", "namespace", other)
    stack.kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "salon-sessions-operator", "namespace": other},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                    "name": "salon-sessions-operator"},
        "subjects": [{"kind": "ServiceAccount", "name": "salon-sessions-operator",
                      "namespace": env.namespace}]}))
    watch_both = {"SALON_NAMESPACE": f"{env.namespace},{other}",
                  "SALON_LEASE_NAMESPACE": env.namespace}
    first = env.start_operator(**watch_both)
    env.wait_role(first, "leader")
    company = new_company()
    seed_credentials(env.database, company, env.namespace)  # a linked device
    owner = env.apply_session(company)
    env.wait_status(owner, "resumed linked", phase="Connected", linked=True, connected=True)
    copy = replace(env, namespace=other, procs=[])  # the same helpers, other namespace

    def copy_events() -> list[str]:
        return [f"{e['type']}:{e['reason']}" for e in copy.events(owner)]

    def copy_statefulsets() -> list[str]:
        return [s["metadata"]["name"] for s in copy.statefulsets()]

    phone = Phone(env.redis_url, company)
    try:
        copy.apply_session(company)
        status = copy.wait_status(owner, "held as a duplicate", phase="Failed")
        ready = condition(status, "Ready")
        assert ready["reason"] == "DuplicateCompany"
        assert f"{env.namespace}/{owner}" in ready["message"]
        assert status["connected"] is False
        assert "podName" not in status
        assert copy_statefulsets() == []
        assert "Warning:DuplicateCompany" in copy_events()
        assert env.status(owner)["phase"] == "Connected"

        # an operator restart decides ownership on the whole picture (it lists first)
        first.stop()
        second = env.start_operator("op-b", **watch_both)
        env.wait_role(second, "leader")
        eventually(lambda: "2 SalonSession(s) known before the watch starts" in second.log(),
                   30, "the registry primed from a LIST")
        eventually(lambda: "Handler 'register.<locals>.reconcile' succeeded" in second.log(),
                   30, "the resumed sessions reconciled")
        assert copy_statefulsets() == []
        assert copy.status(owner).get("phase") == "Failed"
        assert env.status(owner)["phase"] == "Connected"

        # deleting the duplicate touches neither the credentials nor the live session
        copy.kubectl("delete", "salonsession", owner, "--timeout=60s")
        assert credentials(env.database, company) == {"simulator_device": 1,
                                                      "salon_sessions": 1}
        assert phone.state().get("connected") == "true"
        assert "Normal:CredentialsKept" in copy_events()
        assert env.status(owner)["phase"] == "Connected"

        # a duplicate takes over when the owner goes (whose deletion removes the device)
        copy.apply_session(company)
        copy.wait_status(owner, "held again", phase="Failed")
        env.kubectl("delete", "salonsession", owner, "--timeout=90s")
        assert credentials(env.database, company) == {"simulator_device": 0,
                                                      "salon_sessions": 0}
        status = copy.wait_status(owner, "took over, awaiting a link", timeout=90,
                                  phase="AwaitingLink")
        assert condition(status, "Ready")["reason"] != "DuplicateCompany"
        assert copy_statefulsets() == [owner]
        phone.scan()
        copy.wait_status(owner, "linked and connected", connected=True)
    finally:
        phone.close()
        stack.kubectl("delete", "salonsessions", "--all", "-n", other, "--timeout=60s",
                      check=False)
        stack.kubectl("delete", "namespace", other, "--wait=false", check=False)
