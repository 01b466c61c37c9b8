"""Per-session credentials end to end: the operator creates a Redis user and a credentials
Secret for a SalonSession, the pod runs with them (and with nothing else), Redis refuses
that user anything of another company, a user Redis forgot is re-created, and deletion
removes them; the database URL in the Secret is the company's own PostgreSQL role
(`db.tenancy`), dropped with the session."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import pytest
import redis
from redis.exceptions import NoPermissionError

from salon_sessions.core import channels, redis_acl
from salon_sessions.core.events import ConnectedData, EventSource
from tests.helpers import eventually
from tests.operator.conftest import OperatorEnv
from tests.operator.helpers import PHONE, Phone, new_company

pytestmark = [pytest.mark.slow, pytest.mark.e2e]


def secret(env: OperatorEnv, name: str) -> dict[str, Any] | None:
    out = env.kubectl("get", "secret", f"{name}-credentials", "-o", "json", check=False)
    return json.loads(out.stdout) if out.returncode == 0 else None


def user_exists(root: redis.Redis, user: str) -> bool:
    return user in root.acl_users()


def role_exists(env: OperatorEnv, role: str) -> bool:
    async def check() -> bool:
        conn = await asyncpg.connect(env.database)
        try:
            return bool(await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1",
                                            role))
        finally:
            await conn.close()

    return asyncio.run(check())


def test_each_session_gets_its_own_confined_credentials(operator_env: OperatorEnv) -> None:
    env = operator_env
    op = env.start_operator(SALON_CREDENTIALS_CHECK_S="1")
    env.wait_role(op, "leader")
    company, other = new_company(), new_company()
    name = env.apply_session(company)
    uid = env.session(name)["metadata"]["uid"]
    user = redis_acl.session_user(env.namespace, name)
    root = redis.Redis.from_url(env.redis_url)
    phone = Phone(env.redis_url, company)
    try:
        env.wait_status(name, "the worker runs with its own user", phase="AwaitingLink")
        # ---- the Secret: owned by the SalonSession, labelled, the pod's only credentials
        body = secret(env, name)
        assert body is not None
        meta = body["metadata"]
        assert meta["labels"]["app.kubernetes.io/component"] == "session-credentials"
        assert meta["labels"]["app.kubernetes.io/managed-by"] == "salon-sessions-operator"
        assert meta["labels"]["wa.salonsessions.io/company-id"] == company
        owner = meta["ownerReferences"][0]
        assert (owner["kind"], owner["name"], owner["uid"], owner["controller"]) == (
            "SalonSession", name, uid, True)
        data = {k: base64.b64decode(v).decode() for k, v in body["data"].items()}
        assert set(data) == {"redis-url", "database-url"}
        url = urlsplit(data["redis-url"])
        assert url.username == user
        assert url.port == urlsplit(env.redis_url).port
        db_url, shared = urlsplit(data["database-url"]), urlsplit(env.database)
        assert (db_url.hostname, db_url.port, db_url.path) == (
            shared.hostname, shared.port, shared.path)
        assert db_url.username is not None
        assert db_url.username.endswith(f"_{company}")
        assert db_url.username != shared.username
        assert db_url.password
        assert role_exists(env, db_url.username)
        assert url.password
        assert url.password not in json.dumps(env.statefulsets())
        assert user_exists(root, user)

        # ---- with the pod's credentials: its own company yes, another company NOPERM
        own = redis.Redis.from_url(data["redis-url"])
        try:
            mine = EventSource(company, name).event(ConnectedData()).model_dump_json()
            theirs = EventSource(other, other.replace("_", "-")).event(ConnectedData())
            own.publish(channels.events_channel(company), mine.encode())
            for forge in (
                lambda: own.publish(channels.events_channel(other),
                                    theirs.model_dump_json()),
                lambda: own.publish(channels.health_pong_channel(other), b"{}"),
                lambda: own.hset(channels.session_state_key(other), "phase", "Connected"),
                lambda: own.xadd(channels.inbound_stream(other), {"v": "1"}),
                lambda: own.get(channels.latest_qr_key(other)),
            ):
                with pytest.raises(NoPermissionError):
                    forge()
        finally:
            own.close()

        phone.scan()
        env.wait_status(name, "connected", phase="Connected", connected=True, phone=PHONE)

        # ---- Redis forgets the user (a restart without an aclfile): the operator puts it
        # back, and the worker carries on with the same Secret
        root.acl_deluser(user)
        eventually(lambda: user_exists(root, user), 30, "the user re-created")
        assert op.metric("salon_operator_session_credentials_total", action="restore",
                         result="ok") >= 1
        # its subscriptions are back (the simulated phone's channel) and its events flow
        eventually(lambda: phone.act(action="connect_failure", code=405) == 1, 30,
                   "the worker listening again")
        env.wait_status(name, "disconnected", phase="Disconnected", connected=False,
                        linked=True)

        # ---- deletion removes the Secret, the Redis user and the database role
        env.kubectl("delete", "salonsession", name, "--timeout=60s")
        assert secret(env, name) is None
        assert not user_exists(root, user)
        assert not role_exists(env, db_url.username)
        assert op.metric("salon_operator_session_credentials_total", action="drop",
                         result="ok") >= 1
    finally:
        phone.close()
        root.close()
