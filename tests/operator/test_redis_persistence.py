"""The operator's Redis-persistence gauges against real Redis servers: the stack's (AOF on),
a scratch one with `appendonly no`, and one that is not there. Read as the operator's own
Redis user, so the ACL must allow INFO."""

from __future__ import annotations

import math
from pathlib import Path

from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from devstack.procs import free_port
from devstack.stack import StackInfo
from salon_sessions.core.redis_client import connect_redis
from salon_sessions.core.redis_persistence import Persistence
from salon_sessions.operator.redis_persistence import RedisPersistenceGauges
from tests.redis_servers import scratch_redis


def sample(registry: CollectorRegistry, name: str) -> float | None:
    return registry.get_sample_value(name)


async def poll_once(url: str) -> tuple[Persistence | None, CollectorRegistry]:
    registry = CollectorRegistry()
    client: Redis = connect_redis(url, connect_timeout_s=1.0)
    try:
        gauges = RedisPersistenceGauges(client, registry, interval_s=30)
        assert math.isnan(sample(registry, "salon_redis_persistence_enabled") or 0.0)
        return await gauges.poll(), registry
    finally:
        await client.aclose()


async def test_the_stacks_redis_is_durable(stack: StackInfo) -> None:
    status, registry = await poll_once(stack.redis_operator_url)
    assert status is not None
    assert status.durable
    assert status.reason is None
    assert sample(registry, "salon_redis_persistence_enabled") == 1
    assert sample(registry, "salon_redis_aof_last_write_ok") == 1


async def test_a_redis_without_aof_reads_zero(tmp_path: Path) -> None:
    with scratch_redis(tmp_path, appendonly=False) as scratch:
        status, registry = await poll_once(scratch.operator_url)
    assert status is not None
    assert not status.durable
    assert status.reason == "aof_disabled"
    assert "aof_enabled:0" in status.message()
    assert sample(registry, "salon_redis_persistence_enabled") == 0
    assert sample(registry, "salon_redis_aof_last_write_ok") == 1


async def test_an_unreachable_redis_reads_nan() -> None:
    status, registry = await poll_once(f"redis://127.0.0.1:{free_port()}/0")
    assert status is None
    assert math.isnan(sample(registry, "salon_redis_persistence_enabled") or 0.0)
    assert math.isnan(sample(registry, "salon_redis_aof_last_write_ok") or 0.0)


def test_info_fields_decide() -> None:
    """redis-py's parsed INFO: RDB-only is not durable, and the message says why."""
    rdb_only = Persistence.from_info({"aof_enabled": 0, "aof_last_write_status": "ok",
                                      "rdb_saves": 3, "rdb_last_bgsave_status": "ok"})
    assert not rdb_only.durable
    assert "RDB snapshots alone are not durable enough" in rdb_only.message()
    nothing = Persistence.from_info({"aof_enabled": 0, "rdb_saves": 0})
    assert "no RDB snapshot was taken either" in nothing.message()
    failing = Persistence.from_info({"aof_enabled": 1, "aof_last_write_status": "err"})
    assert (failing.durable, failing.reason) == (False, "aof_write_failed")
    assert Persistence.from_info({"aof_enabled": 1, "aof_last_write_status": "ok"}).durable
