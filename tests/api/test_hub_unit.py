"""The WebSocket fan-out without sockets: a slow client is dropped, the others get every
event, and routing never waits for a client."""

from __future__ import annotations

import asyncio
import json

from prometheus_client import CollectorRegistry

from salon_sessions.api.hub import Hub
from salon_sessions.api.metrics import ApiMetrics
from salon_sessions.api.ws_transport import CLOSE_TOO_SLOW
from salon_sessions.core.events import DisconnectedData, EventSource


def _hub(queue_size: int = 4) -> tuple[Hub, ApiMetrics]:
    metrics = ApiMetrics(CollectorRegistry())

    async def snapshot(company: str) -> str:
        return json.dumps({"kind": "snapshot", "company": company})

    return Hub(metrics, queue_size=queue_size, heartbeat_s=0.05, max_per_company=3,
               snapshot=snapshot), metrics


def _value(metrics: ApiMetrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


async def test_slow_client_is_dropped_and_others_get_everything() -> None:
    hub, metrics = _hub(queue_size=4)
    source = EventSource("company_1", "company-1")
    fast = hub.register("company_1")
    slow = hub.register("company_1")
    other = hub.register("company_2")
    received: list[str] = []

    async def read_fast() -> None:
        while True:
            received.append(await fast.next())

    reader = asyncio.create_task(read_fast())
    for i in range(20):
        hub.route(source.event(DisconnectedData(reason=f"r{i}")))  # never awaits
        await asyncio.sleep(0)  # the fast reader keeps up, the slow one never reads
    reader.cancel()
    assert len(received) == 20
    assert [json.loads(m)["event"]["data"]["reason"] for m in received] == [
        f"r{i}" for i in range(20)]
    assert slow.closed.is_set()
    assert slow.close_code == CLOSE_TOO_SLOW
    assert not fast.closed.is_set()
    assert other.queue.empty()  # another company's client got nothing
    assert _value(metrics, "salon_api_websocket_clients_dropped_total", reason="slow") == 1
    assert _value(metrics, "salon_api_events_fanned_out_total", type="disconnected") == 24
    assert _value(metrics, "salon_api_websocket_clients") == 3
    for client in (fast, slow, other):
        hub.unregister(client)
    assert hub.count() == 0
    assert _value(metrics, "salon_api_websocket_clients") == 0


async def test_heartbeats_and_restate_reach_every_client() -> None:
    hub, _ = _hub(queue_size=16)
    a, b = hub.register("company_1"), hub.register("company_2")
    task = asyncio.create_task(hub.heartbeats())
    await asyncio.sleep(0.12)
    task.cancel()
    kinds = [json.loads(a.queue.get_nowait()[1])["kind"] for _ in range(a.queue.qsize())]
    assert kinds
    assert set(kinds) == {"heartbeat"}
    await hub.restate()
    while not b.queue.empty():
        last = json.loads(b.queue.get_nowait()[1])
    assert last == {"kind": "snapshot", "company": "company_2"}


async def test_events_that_the_snapshot_covers_are_skipped() -> None:
    hub, metrics = _hub(queue_size=16)
    source = EventSource("company_1", "company-1")
    client = hub.register("company_1")
    # queued between the registration and the snapshot's read of the state hash
    before = [source.event(DisconnectedData(reason=f"old {i}")) for i in range(3)]
    for event in before:
        hub.route(event)
    client.floor = source.next_seq()  # the state hash, written after those events
    client.offer('{"kind":"heartbeat"}')  # not an event: never skipped
    after = source.event(DisconnectedData(reason="new"))
    hub.route(after)
    got = [json.loads(await client.next()) for _ in range(2)]
    assert got[0] == {"kind": "heartbeat"}
    assert got[1]["event"]["id"] == after.id
    assert client.queue.empty()
    assert _value(metrics, "salon_api_events_fanned_out_total", type="disconnected") == 4


async def test_a_send_that_hangs_closes_the_client_and_no_other() -> None:
    metrics = ApiMetrics(CollectorRegistry())

    async def snapshot(company: str) -> str:
        return "{}"

    hub = Hub(metrics, queue_size=4, heartbeat_s=60, max_per_company=3, snapshot=snapshot,
              send_timeout_s=0.2)
    stuck, sending, idle = (hub.register("company_1") for _ in range(3))
    now = asyncio.get_running_loop().time()
    stuck.sending_since = now - 1.0  # its socket stopped draining a second ago
    sending.sending_since = now  # a send that just started
    watchdog = asyncio.create_task(hub.watch_sends())
    await asyncio.sleep(0.15)
    watchdog.cancel()
    assert stuck.closed.is_set()
    assert stuck.close_code == CLOSE_TOO_SLOW
    assert not sending.closed.is_set()
    assert not idle.closed.is_set()
    assert _value(metrics, "salon_api_websocket_clients_dropped_total",
                  reason="send_timeout") == 1


def test_client_limit_per_company() -> None:
    hub, _ = _hub()
    for _ in range(3):
        hub.register("company_1")
    assert hub.full("company_1")
    assert not hub.full("company_2")
