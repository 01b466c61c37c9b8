"""`/readyz` checks that Redis persists (the message streams and idempotency markers live
there): ready with the stack's Redis (AOF on), not ready with a Redis running `appendonly
no` while SALON_REDIS_REQUIRE_PERSISTENCE is true (the default), ready but saying so when
it is false. Real `salon-sessions api` processes, real Redis servers, the API's own user."""

from __future__ import annotations

import asyncio
from pathlib import Path
from urllib.parse import urlsplit

from devstack.stack import StackInfo
from tests.api.server import ApiServer, start_api
from tests.redis_servers import scratch_redis


async def test_ready_with_the_stacks_redis(api: ApiServer) -> None:
    async with api.client() as http:
        ready = await http.get("/readyz")
    assert ready.status_code == 200, ready.text
    check = ready.json()["checks"]["redis_persistence"]
    assert check["ok"] is True
    assert check["error"] is None
    assert check["message"] is None
    assert check["latency_ms"] > 0


async def test_not_ready_without_aof_unless_not_required(
        tmp_path: Path, stack: StackInfo, api_namespace: str, api_database: str) -> None:
    with scratch_redis(tmp_path / "scratch", appendonly=False) as scratch:
        password = urlsplit(scratch.api_url).password or ""
        for required in (True, False):
            server = await asyncio.to_thread(
                start_api, tmp_path, database=api_database, redis_url=scratch.api_url,
                kubeconfig=stack.kubeconfig, namespace=api_namespace,
                env={"SALON_REDIS_REQUIRE_PERSISTENCE": str(required).lower()})
            try:
                async with server.client() as http:
                    ready = await http.get("/readyz")
            finally:
                await asyncio.to_thread(server.stop)
            body = ready.json()
            checks = body["checks"]
            # the other dependencies are fine: only persistence decides
            assert {k: v["ok"] for k, v in checks.items() if k != "redis_persistence"} == {
                "redis": True, "postgres": True, "kubernetes": True}
            check = checks["redis_persistence"]
            assert check["error"] == "aof_disabled"
            assert "append-only file" in check["message"]
            assert "aof_enabled:0" in check["message"]
            assert "appendonly yes" in check["message"]
            assert password not in ready.text
            assert "redis://" not in ready.text
            if required:
                assert ready.status_code == 503, ready.text
                assert body["ready"] is False
                assert check["ok"] is False
            else:
                assert ready.status_code == 200, ready.text
                assert body["ready"] is True
                assert check["ok"] is True
                assert "SALON_REDIS_REQUIRE_PERSISTENCE is false" in check["message"]
