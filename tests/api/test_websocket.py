"""The live WebSocket: snapshot first, then every event, heartbeats, auth, slow clients,
and a Redis restart."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from redis.asyncio import Redis
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus

from salon_sessions.core.channels import events_channel
from salon_sessions.core.codec import encode
from salon_sessions.core.events import ConnectedData, EventSource, QrData
from tests.api.conftest import WorkerFactory
from tests.api.server import ApiServer
from tests.worker.harness import new_company, observing

pytestmark = pytest.mark.slow
API_EXTRA_ENV = {"SALON_WS_QUEUE_SIZE": "64", "SALON_WS_SEND_TIMEOUT_S": "5"}


def _url(api: ApiServer, company: str) -> str:
    return f"{api.ws_url}/v1/sessions/{company}/ws"


def _open(api: ApiServer, company: str, token: str) -> Any:
    return connect(_url(api, company), subprotocols=["salon.v1", f"bearer.{token}"],  # type: ignore[list-item]
                   max_size=2**20)


async def _next(ws: ClientConnection, pred: Callable[[dict[str, Any]], bool],
                timeout: float = 20) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        while True:
            msg: dict[str, Any] = json.loads(await ws.recv())
            if pred(msg):
                return msg


async def test_snapshot_first_then_live_events_and_heartbeats(
        api: ApiServer, workers: WorkerFactory, redis_url: str, company: str) -> None:
    async with observing(redis_url, company) as obs:
        workers()
        await obs.wait_event("qr")
        async with _open(api, company, api.token(company)) as ws:
            assert ws.subprotocol == "salon.v1"
            first = json.loads(await ws.recv())
            assert first["kind"] == "snapshot"
            assert first["state"]["company_id"] == company
            assert first["state"]["qr_available"] is True
            assert first["heartbeat_s"] == 1.0
            floor = first["state"]["live"]["seq"]
            assert isinstance(floor, int)
            assert floor > 0
            qr = await _next(ws, lambda m: m["kind"] == "event" and m["event"]["type"] == "qr")
            assert qr["event"]["company_id"] == company
            assert qr["event"]["seq"] > floor  # what the snapshot covers is not sent again
            await obs.wait_published_qr(qr["event"]["data"]["code"])
            api.secrets_seen.add(qr["event"]["data"]["code"])
            await _next(ws, lambda m: m["kind"] == "heartbeat", timeout=5)
            await ws.send(json.dumps({"kind": "ping"}))
            await _next(ws, lambda m: m["kind"] == "pong", timeout=5)

            await obs.scan()
            linked = await _next(ws, lambda m: m.get("event", {}).get("type") == "linked")
            assert linked["event"]["data"]["method"] == "qr"
            await _next(ws, lambda m: m.get("event", {}).get("type") == "connected")
        # the admin token works too, here through the Authorization header
        async with connect(_url(api, company), additional_headers=api.admin()) as ws:
            snap = json.loads(await ws.recv())
            assert (snap["state"]["linked"], snap["state"]["connected"]) == (True, True)


async def test_websocket_auth(api: ApiServer) -> None:
    mine, theirs = new_company(), new_company()
    token = api.token(mine)
    for company, offered, status in [
        (theirs, token, 403),
        (mine, api.token(mine, ttl_s=-5), 401),
        (mine, token[:-2] + ("AA" if not token.endswith("AA") else "BB"), 401),
        (mine, "", 401),
        ("0123", token, 422),
    ]:
        with pytest.raises(InvalidStatus) as refused:
            async with _open(api, company, offered):
                pass
        assert refused.value.response.status_code == status, company
        body = json.loads(bytes(refused.value.response.body or b"{}"))
        assert body["error"]["code"]


async def test_websocket_without_token_is_refused(api: ApiServer) -> None:
    with pytest.raises(InvalidStatus) as refused:
        async with connect(_url(api, new_company())):
            pass
    assert refused.value.response.status_code == 401


def _frozen_client(api: ApiServer, company: str, token: str) -> socket.socket:
    """A WebSocket client that completes the handshake and then never reads again, with a
    tiny receive buffer: its TCP window closes and the server's sends to it stall."""
    host, port = api.base_url.removeprefix("http://").split(":")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((host, int(port)))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall((f"GET /v1/sessions/{company}/ws HTTP/1.1\r\nHost: {host}:{port}\r\n"
                  f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                  f"Sec-WebSocket-Version: 13\r\nAuthorization: Bearer {token}\r\n\r\n")
                 .encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


async def _metric(api: ApiServer, name: str) -> float:
    async with api.client() as http:
        text = (await http.get("/metrics")).text
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_a_frozen_client_is_dropped_and_never_holds_up_the_others(
        api: ApiServer, redis_url: str) -> None:
    company = new_company()
    token = api.token(company)
    source = EventSource(company, company.replace("_", "-"))
    count, size = 1500, 4000
    frozen = await asyncio.to_thread(_frozen_client, api, company, token)
    dropped_before = await _metric(api, 'salon_api_websocket_clients_dropped_total')
    redis = Redis.from_url(redis_url)
    try:
        async with _open(api, company, token) as fast:
            assert json.loads(await fast.recv())["kind"] == "snapshot"
            received: list[int] = []

            async def read() -> None:
                while len(received) < count:
                    msg = json.loads(await fast.recv())
                    if msg["kind"] == "event":
                        received.append(int(msg["event"]["data"]["code"][:6]))

            reader = asyncio.create_task(read())
            started = time.monotonic()
            for i in range(count):
                event = source.event(QrData(code=f"{i:06d}" + "x" * (size - 6), timeout_s=20))
                await redis.publish(events_channel(event.company_id), encode(event))
                if i % 20 == 19:  # a steady stream the reading client keeps up with
                    await asyncio.sleep(0.01)
            await asyncio.wait_for(reader, 60)
            assert received == list(range(count))  # all of them, in order
            elapsed = time.monotonic() - started
            dropped = await _metric(api, 'salon_api_websocket_clients_dropped_total')
            assert dropped >= dropped_before + 1, "the frozen client was not dropped"
            print(f"fast client got {count} events of {size} B in {elapsed:.2f}s")
    finally:
        frozen.close()
        await redis.aclose()


async def test_clients_get_a_fresh_snapshot_after_a_redis_restart(
        api: ApiServer, workers: WorkerFactory, redis_url: str, company: str,
        restart_redis: Callable[[], None]) -> None:
    async with observing(redis_url, company) as obs:
        workers()
        await obs.wait_event("qr")
    async with _open(api, company, api.token(company)) as ws:
        assert json.loads(await ws.recv())["kind"] == "snapshot"
        await asyncio.to_thread(restart_redis)
        snap = await _next(ws, lambda m: m["kind"] == "snapshot", timeout=30)
        assert snap["state"]["company_id"] == company
        # events flow again through the new subscription
        await _next(ws, lambda m: m.get("event", {}).get("type") == "qr", timeout=30)


async def test_events_and_state_beyond_the_horizon_never_reach_a_page(
        api: ApiServer, redis_url: str) -> None:
    """A well-formed `connected` of a never-linked company dated 200 s ahead, and a state
    hash numbered beyond int64 or dated ahead, are refused (core.bounds), not relayed."""
    company = new_company()
    name = company.replace("_", "-")
    source = EventSource(company, name)
    redis = Redis.from_url(redis_url)
    key = f"whatsapp:session:{company}"
    future = 'salon_events_dropped_total{consumer="api",reason="future"}'
    try:
        ahead = (datetime.now(UTC) + timedelta(seconds=200)).isoformat()
        for forged in ({"seq": "99999999999999999999", "connected": "true"},
                       {"seq": str(time.time_ns() // 1000), "connected": "true",
                        "heartbeat_at": ahead, "updated_at": ahead}):
            await redis.hset(key, mapping={"phase": "Connected", "linked": "true",
                                           "session": name, **forged})
            async with _open(api, company, api.token(company)) as ws:
                snap = json.loads(await ws.recv())
                assert snap["kind"] == "snapshot"
                assert snap["state"]["live"] is None, forged
                assert snap["state"]["connected"] is False
        await redis.delete(key)
        dropped = await _metric(api, future)
        async with _open(api, company, api.token(company)) as ws:
            assert json.loads(await ws.recv())["kind"] == "snapshot"
            later = source.event(ConnectedData(), ts=datetime.now(UTC) + timedelta(seconds=200))
            await redis.publish(events_channel(company), encode(later))
            marker = source.event(QrData(code="after-the-forged-one", timeout_s=20))
            await redis.publish(events_channel(company), encode(marker))
            got = await _next(ws, lambda m: m["kind"] == "event")
            assert got["event"]["type"] == "qr"  # the connected one was dropped, not sent
        assert await _metric(api, future) == dropped + 1
    finally:
        await redis.aclose()


async def test_an_event_claiming_another_company_is_dropped_and_counted(
        api: ApiServer, redis_url: str) -> None:
    """A payload naming company B on company A's channel (what a forged event looks like:
    A's Redis user can publish only there) never reaches B's clients; the API counts it."""
    victim, attacker = new_company(), new_company()
    forged = EventSource(victim, victim.replace("_", "-")).event(QrData(code="2@forged",
                                                                       timeout_s=20))
    real = EventSource(victim, victim.replace("_", "-")).event(QrData(code="2@real",
                                                                     timeout_s=20))
    redis = Redis.from_url(redis_url)
    try:
        async with _open(api, victim, api.token(victim)) as ws:
            assert json.loads(await ws.recv())["kind"] == "snapshot"
            await redis.publish(events_channel(attacker), encode(forged))
            await redis.publish(events_channel(victim), encode(real))
            event = await _next(ws, lambda m: m["kind"] == "event")
            assert event["event"]["data"]["code"] == "2@real"
        async with api.client() as http:
            metrics = (await http.get("/metrics")).text
        assert 'salon_events_dropped_total{consumer="api",reason="wrong_company"}' in metrics
    finally:
        await redis.aclose()
