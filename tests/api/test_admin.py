"""The admin list (`GET /v1/sessions`) and the console's WebSocket (`/v1/admin/ws`) against a
real API process, the kube-apiserver (the SalonSessions are watched) and simulator workers:
paging and filters, admin only, a snapshot then coalesced changes."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from salon_sessions.core.channels import events_channel, session_state_key
from salon_sessions.core.codec import encode
from salon_sessions.core.events import ConnectedData, EventSource
from tests.api.conftest import WorkerFactory
from tests.api.server import ApiServer
from tests.api.test_websocket import _next as next_message
from tests.worker.harness import new_company, observing

pytestmark = pytest.mark.slow
Row = dict[str, Any]


async def create(http: httpx.AsyncClient, company: str, name: str | None = None) -> None:
    body: dict[str, Any] = {"company_id": company, "driver": "simulator"}
    if name:
        body["display_name"] = name
    resp = await http.post("/v1/sessions", json=body)
    assert resp.status_code in (200, 201), resp.text


def admin_ws(api: ApiServer, token: str | None = None) -> Any:
    offered = api.admin_token if token is None else token
    return connect(f"{api.ws_url}/v1/admin/ws", max_size=2**24,
                   subprotocols=["salon.v1", f"bearer.{offered}"])  # type: ignore[list-item]


def row_in(company: str, pred: Callable[[Row], bool]) -> Callable[[dict[str, Any]], bool]:
    """A `changes` message with the company's row matching `pred`."""
    return lambda m: m["kind"] == "changes" and any(
        r["company_id"] == company and pred(r) for r in m["sessions"])


async def test_list_is_paged_filtered_and_masked(api: ApiServer, workers: WorkerFactory,
                                                 redis_url: str, company: str) -> None:
    base = 700_000_000
    mine = [f"company_{base + i}" for i in range(7)]
    async with api.client(headers=api.admin()) as http:
        for i, c in enumerate(mine):
            await create(http, c, f"Salon {i}")
        await create(http, company, "Live one")
        async with observing(redis_url, company) as obs:
            workers()
            await obs.wait_event("qr")
            await obs.scan(phone="79686484488")
            await obs.wait_event("connected")

            async def listed(**params: Any) -> dict[str, Any]:
                resp = await http.get("/v1/sessions", params=params)
                assert resp.status_code == 200, resp.text
                body: dict[str, Any] = resp.json()
                return body

            # the live state wins where a worker reports; the phone is masked
            for _ in range(100):
                page = await listed(phase="Connected")
                if page["total"] == 1:
                    break
                await asyncio.sleep(0.1)
            [live] = page["sessions"]
            assert live["company_id"] == company
            assert (live["linked"], live["connected"], live["worker_live"]) == (True, True, True)
            assert live["phone"] == "•••••••4488"
            assert "79686484488" not in json.dumps(page)

            # pages in numeric company order; `after` takes the legacy form too
            seen: list[str] = []
            after: str | None = None
            while True:
                page = await listed(limit=3, **({"after": after} if after else {}))
                seen += [r["company_id"] for r in page["sessions"]]
                after = page["next_after"]
                if after is None:
                    break
                after = after.removeprefix("company_")
            assert [c for c in seen if c in mine] == mine
            assert len(seen) == len(set(seen)) == page["total"]
            pending = await listed(phase="Pending")
            assert {r["company_id"] for r in pending["sessions"]} >= set(mine)
            assert all(r["phase"] == "Pending" for r in pending["sessions"])
            named = {r["company_id"]: r["display_name"] for r in pending["sessions"]}
            assert named[mine[2]] == "Salon 2"
            for bad in ({"limit": 0}, {"limit": 501}, {"phase": "connected!"},
                        {"after": "company_0"}):
                resp = await http.get("/v1/sessions", params=bad)
                assert resp.status_code == 422, bad
                assert resp.json()["error"]["field"].startswith("query.")


async def test_admin_only(api: ApiServer) -> None:
    company = new_company()
    token = api.token(company)
    async with api.client() as http:
        for headers, status in [({}, 401), ({"Authorization": f"Bearer {token}"}, 403),
                                ({"Authorization": "Bearer nope"}, 401)]:
            resp = await http.get("/v1/sessions", headers=headers)
            assert resp.status_code == status
            assert resp.json()["error"]["code"] in ("unauthorized", "forbidden")
    for offered, status in [(token, 403), ("wrong", 401), ("", 401)]:
        with pytest.raises(InvalidStatus) as refused:
            async with admin_ws(api, offered):
                pass
        assert refused.value.response.status_code == status
    with pytest.raises(InvalidStatus) as refused:
        async with connect(f"{api.ws_url}/v1/admin/ws"):
            pass
    assert refused.value.response.status_code == 401
    # the page itself is public and strict
    async with api.client() as http:
        resp = await http.get("/admin")
    assert resp.status_code == 200
    csp = resp.headers["content-security-policy"]
    assert "script-src 'self'" in csp
    assert "unsafe-inline" not in csp
    assert resp.headers["cache-control"] == "no-store"


async def test_snapshot_then_live_changes(api: ApiServer, workers: WorkerFactory,
                                          redis_url: str, company: str) -> None:
    async with api.client(headers=api.admin()) as http:
        await create(http, company, "Salon Aurora")
        async with admin_ws(api) as ws:
            assert ws.subprotocol == "salon.v1"
            snap = json.loads(await ws.recv())
            assert snap["kind"] == "snapshot"
            rows = {r["company_id"]: r for r in snap["sessions"]}
            if company not in rows:  # created a moment ago: the watch may not have told yet
                msg = await next_message(ws, row_in(company, lambda r: True))
                rows = {r["company_id"]: r for r in msg["sessions"]}
            assert rows[company]["display_name"] == "Salon Aurora"
            assert rows[company]["phase"] == "Pending"
            assert rows[company]["worker_live"] is False

            # a session created after the snapshot arrives as a change
            other = new_company()
            await create(http, other)
            await next_message(ws, row_in(other, lambda r: r["phase"] == "Pending"))

            # a worker's live state, from its events
            async with observing(redis_url, company) as obs:
                workers()
                await next_message(ws, row_in(company, lambda r: r["phase"] == "AwaitingLink"
                                              and r["worker_live"]))
                await obs.scan(phone="79686484488")
                row = (await next_message(ws, row_in(company, lambda r: r["connected"])))
                mine = next(r for r in row["sessions"] if r["company_id"] == company)
                assert mine["linked"] is True
                assert mine["phone"] == "•••••••4488"
                # QR rotations and heartbeats change no row: nothing else is sent for it
                await next_message(ws, lambda m: m["kind"] == "heartbeat", timeout=5)

            # deleted: removed (no operator here, so no finalizer holds it)
            resp = await http.delete(f"/v1/sessions/{other}")
            assert resp.status_code == 204
            await next_message(ws, lambda m: m["kind"] == "changes" and other in m["removed"])
            await ws.send(json.dumps({"kind": "ping"}))
            await next_message(ws, lambda m: m["kind"] == "pong", timeout=5)


async def test_bursts_are_coalesced(api: ApiServer, redis_url: str) -> None:
    """Sixty salons connecting within a few milliseconds reach the console as a few
    `changes` messages, each row once with its final state."""
    base = 710_000_000
    companies = [f"company_{base + i}" for i in range(60)]
    async with api.client(headers=api.admin()) as http:
        for c in companies:
            await create(http, c)
    redis = Redis.from_url(redis_url)
    try:
        async with admin_ws(api) as ws:
            snap = json.loads(await ws.recv())
            known = {r["company_id"] for r in snap["sessions"]}
            while not set(companies) <= known:  # the last creations may still be on the way
                msg = await next_message(ws, lambda m: m["kind"] == "changes")
                known |= {r["company_id"] for r in msg["sessions"]}
            async with redis.pipeline(transaction=False) as pipe:
                for i, c in enumerate(companies):
                    pipe.hset(session_state_key(c), mapping={
                        "phase": "Connected", "linked": "true", "connected": "true",
                        "phone": f"7968648{i:04d}", "seq": "5"})
                    pipe.expire(session_state_key(c), 120)
                    source = EventSource(c, c.replace("_", "-"))
                    pipe.publish(events_channel(c), encode(source.event(ConnectedData())))
                await pipe.execute()
            got: dict[str, Row] = {}
            messages = 0
            async with asyncio.timeout(20):
                while len(got) < len(companies):
                    msg = json.loads(await ws.recv())
                    if msg["kind"] != "changes":
                        continue
                    messages += 1
                    got |= {r["company_id"]: r for r in msg["sessions"]
                            if r["company_id"] in companies}
            assert messages <= 3, messages
            assert all(r["connected"] and r["phase"] == "Connected" for r in got.values())
            assert got[companies[7]]["phone"] == "•••••••0007"
    finally:
        for c in companies:
            await redis.delete(session_state_key(c))
        await redis.aclose()
