"""Redis's refusals counted: a session's user that tries another company's keys and channels
is refused by Redis, and the operator's drain of ACL LOG turns each refusal into
`salon_redis_acl_denials_total{user, reason}`. Real Redis with the stack's users."""

from __future__ import annotations

import pytest
import redis
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis as AsyncRedis
from redis.exceptions import NoPermissionError

from devstack.stack import StackInfo
from salon_sessions.core import channels, redis_acl
from salon_sessions.operator.acl_denials import AclDenials, tally
from salon_sessions.operator.metrics import OperatorMetrics
from tests.helpers import session_redis_user
from tests.worker.harness import new_company

pytestmark = pytest.mark.slow


def test_tally_sums_counts_per_user_and_reason() -> None:
    entries = [{"username": b"a", "reason": b"key", "count": 3},
               {"username": "a", "reason": "key", "count": "2"},
               {"username": "a", "reason": "channel", "count": 1},
               {"username": "b", "reason": "auth", "count": "x"}]
    assert tally(entries) == {("a", "key"): 5, ("a", "channel"): 1, ("b", "auth"): 1}


async def test_refusals_of_a_session_user_are_counted(stack: StackInfo) -> None:
    mine, other = new_company(), new_company()
    admin = AsyncRedis.from_url(stack.redis_admin_url)
    registry = CollectorRegistry()
    denials = AclDenials(admin, OperatorMetrics(registry))
    try:
        await denials.drain()  # whatever earlier tests left
        with session_redis_user(stack.redis_url, mine, "acl-drain") as user:
            own = redis.Redis.from_url(user.url)
            try:
                for forge in (lambda: own.hset(channels.session_state_key(other), "x", "1"),
                              lambda: own.get(channels.latest_qr_key(other)),
                              lambda: own.publish(channels.events_channel(other), b"{}")):
                    with pytest.raises(NoPermissionError):
                        forge()
            finally:
                own.close()
        name = redis_acl.session_user("acl-drain", mine.replace("_", "-"))
        assert await denials.drain() >= 3
        key = registry.get_sample_value("salon_redis_acl_denials_total",
                                        {"user": name, "reason": "key"})
        channel = registry.get_sample_value("salon_redis_acl_denials_total",
                                            {"user": name, "reason": "channel"})
        assert key == 2
        assert channel == 1
        assert await denials.drain() == 0  # drained: nothing counted twice
    finally:
        await admin.aclose()
