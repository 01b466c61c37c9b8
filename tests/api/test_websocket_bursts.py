"""WebSocket clients arriving all at once (every page reconnects after an API restart), and
a snapshot that cannot be read after the WebSocket was accepted."""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from devstack.stack import StackInfo
from tests.api.server import ApiServer, start_api
from tests.worker.harness import new_company

pytestmark = pytest.mark.slow


async def _snapshot(api: ApiServer, company: str) -> dict[str, object]:
    async with connect(f"{api.ws_url}/v1/sessions/{company}/ws", open_timeout=30,
                       subprotocols=["salon.v1", f"bearer.{api.token(company)}"],  # type: ignore[list-item]
                       ) as ws:
        first: dict[str, object] = json.loads(await asyncio.wait_for(ws.recv(), 30))
        return first


async def test_more_clients_at_once_than_redis_connections_all_get_their_snapshot(
        tmp_path: Path, stack: StackInfo, api_database: str, api_namespace: str) -> None:
    api = start_api(tmp_path, database=api_database, redis_url=stack.redis_url,
                    kubeconfig=None, namespace=api_namespace,
                    env={"SALON_REDIS_MAX_CONNECTIONS": "4"})
    try:
        companies = [new_company() for _ in range(20)]
        firsts = await asyncio.gather(*(_snapshot(api, c) for c in companies * 3))
        assert [f["kind"] for f in firsts] == ["snapshot"] * 60
        assert {f["state"]["company_id"] for f in firsts} == set(companies)  # type: ignore[index]
        assert "MaxConnectionsError" not in api.log()
        assert "Exception in ASGI application" not in api.log()
    finally:
        api.stop()


async def test_a_snapshot_that_cannot_be_read_closes_with_try_again_later(
        tmp_path: Path, api_database: str, api_namespace: str) -> None:
    with socket.socket() as s:  # a Redis nobody runs
        s.bind(("127.0.0.1", 0))
        dead = f"redis://:nope@127.0.0.1:{s.getsockname()[1]}/0"
    api = start_api(tmp_path, database=api_database, redis_url=dead, kubeconfig=None,
                    namespace=api_namespace)
    try:
        company = new_company()
        with pytest.raises(ConnectionClosed) as closed:
            await _snapshot(api, company)
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 1013  # try again later: the page reconnects
        assert closed.value.rcvd.reason == "redis_unavailable"
        assert "Exception in ASGI application" not in api.log()
        assert "nope" not in api.log()
    finally:
        api.stop()
