"""The stack's Redis persists (AOF, `appendfsync everysec`): killed with SIGKILL right after
a write returned and started again (`devstack.stack.kill_redis` / `start_redis_again`), it
has every write it answered, and the same URLs log in."""

from __future__ import annotations

import uuid

import redis

from devstack import stack as devstack_stack
from devstack.stack import StackInfo
from salon_sessions.core import channels
from tests.helpers import restore_session_users


def test_sigkill_keeps_every_acknowledged_write(stack: StackInfo) -> None:
    company = f"company_{uuid.uuid4().int % 10**9 + 10**9}"
    stream = channels.inbound_stream(company)
    r = redis.Redis.from_url(stack.redis_url)
    try:
        assert r.info("persistence")["aof_enabled"] == 1
        ids = [r.xadd(stream, {"message_id": str(i), "text": f"hello {i}"})
               for i in range(500)]
        r.set(f"{stream}:marker", "written last")
        # no pause: the last reply has just come back
        devstack_stack.kill_redis(stack)
        devstack_stack.start_redis_again(stack)
        r = redis.Redis.from_url(stack.redis_url)
        entries = r.xrange(stream)
        assert [entry_id for entry_id, _ in entries] == ids
        assert entries[-1][1] == {b"message_id": b"499", b"text": b"hello 499"}
        assert r.get(f"{stream}:marker") == b"written last"
        # the users of the configuration log in with the same URLs
        for url in (stack.redis_operator_url, stack.redis_api_url, stack.redis_admin_url):
            with redis.Redis.from_url(url) as user:
                assert user.ping()
        with redis.Redis.from_url(stack.redis_api_url) as api:
            assert api.info("persistence")["aof_enabled"] == 1
    finally:
        restore_session_users()  # users made with ACL SETUSER are gone (the operator's job)
        r.delete(stream, f"{stream}:marker")
        r.close()


def test_a_sigterm_restart_keeps_the_data_too(stack: StackInfo) -> None:
    key = f"salon-test:{uuid.uuid4().hex}"
    r = redis.Redis.from_url(stack.redis_url)
    try:
        r.set(key, "kept")
        devstack_stack.restart_redis(stack)
        r = redis.Redis.from_url(stack.redis_url)
        assert r.get(key) == b"kept"
    finally:
        restore_session_users()
        r.delete(key)
        r.close()
