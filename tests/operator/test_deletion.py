"""Deletion policies and a database that stays unreachable during deletion."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from devstack.procs import free_port
from salon_sessions.db.migrator import migrate_database
from salon_sessions.worker.simulator import SCHEMA as SIMULATOR_SCHEMA
from tests.helpers import eventually
from tests.operator.conftest import OperatorEnv
from tests.operator.helpers import PHONE, Phone, StatusWatch, credentials, history, new_company

pytestmark = [pytest.mark.slow, pytest.mark.e2e]


def seed_credentials(dsn: str, company: str, namespace: str) -> None:
    """What a linked session leaves in the database (as the worker writes it)."""
    async def run() -> None:
        await migrate_database(dsn)
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(SIMULATOR_SCHEMA)
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
