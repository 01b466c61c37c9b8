"""WebSocket fan-out: events from the one shared Redis subscription to every client of a
company, without letting a slow or dead client hold up anyone else.

The hub keeps the bookkeeping (who listens to which company, the admin consoles) and
offers messages; each connection's outbox and its sending are the transport's
(`api.ws_transport.Client`, `Transport.serve`), changed only through the client's methods.

Each client has a bounded queue and its own writer task. Routing an event only does
`put_nowait` into the queues of that company's clients (the event is encoded once, not
once per client). A client whose queue is full (it reads slower than events arrive, or its
socket stopped draining) is disconnected with close code 4008; it reconnects and gets a
fresh snapshot, which is better than a silently incomplete stream. A send that does not
complete within the send timeout (the socket stopped draining) also disconnects the client:
each writer notes when its current send started and `watch_sends` checks them once in a
while (one timer per hub rather than one per message).

A client is registered before its snapshot is read, so that no event falls between the
two; the events queued meanwhile that the snapshot already reflects (their `seq` is not
above the state hash's `seq`, the `floor`) are skipped, so that a stale `disconnected` or
`logged_out` never follows a snapshot that says connected.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from salon_sessions.api.metrics import ApiMetrics
from salon_sessions.api.ws_transport import CLOSE_SERVER_GONE, CLOSE_TOO_SLOW, Client
from salon_sessions.core.events import Event

log = logging.getLogger(__name__)

ADMIN = "*admin"
"""The group of the admin console's clients (`WS /v1/admin/ws`): no company is named so."""

SnapshotFn = Callable[[str], Awaitable[str]]


def event_message(event: Event) -> str:
    return '{"kind":"event","event":' + event.model_dump_json() + "}"


def heartbeat_message() -> str:
    return json.dumps({"kind": "heartbeat", "ts": datetime.now(UTC).isoformat()})


class Hub:
    def __init__(self, metrics: ApiMetrics, *, queue_size: int, heartbeat_s: float,
                 max_per_company: int, snapshot: SnapshotFn,
                 send_timeout_s: float = 10.0) -> None:
        self._metrics = metrics
        self._send_timeout_s = send_timeout_s
        self._queue_size = queue_size
        self._heartbeat_s = heartbeat_s
        self._max_per_company = max_per_company
        self._snapshot = snapshot
        self._clients: dict[str, set[Client]] = {}

    # ---- clients --------------------------------------------------------------------
    def count(self, company_id: str | None = None) -> int:
        if company_id is not None:
            return len(self._clients.get(company_id, ()))
        return sum(len(c) for c in self._clients.values())

    def full(self, company_id: str) -> bool:
        return self.count(company_id) >= self._max_per_company

    def register(self, company_id: str) -> Client:
        client = Client(company_id, asyncio.Queue(self._queue_size))
        self._clients.setdefault(company_id, set()).add(client)
        self._metrics.ws_clients.inc()
        return client

    def unregister(self, client: Client) -> None:
        group = self._clients.get(client.company_id)
        if group is not None and client in group:
            group.discard(client)
            if not group:
                del self._clients[client.company_id]
            self._metrics.ws_clients.dec()

    def close_all(self, code: int = CLOSE_SERVER_GONE, reason: str = "server shutting down"
                  ) -> None:
        for group in self._clients.values():
            for client in group:
                client.close(code, reason)

    def broadcast_admin(self, text: str) -> None:
        """One message (already encoded: `fleet.Fleet` coalesces changes) to every admin
        console; a console whose queue is full is dropped like any slow client."""
        for client in list(self._clients.get(ADMIN, ())):
            if client.offer(text) == "dropped":
                self._dropped(client)

    # ---- routing (called inline by the bus: never blocks) ----------------------------
    def route(self, event: Event) -> None:
        group = self._clients.get(event.company_id)
        self._metrics.events_routed.labels(event.type.value).inc()
        if not group:
            return
        text = event_message(event)
        queued = 0
        for client in list(group):
            outcome = client.offer(text, event.seq)
            if outcome == "queued":
                queued += 1
            elif outcome == "dropped":
                self._dropped(client)
        self._metrics.fanned_out.labels(event.type.value).inc(queued)

    async def restate(self) -> None:
        """After a gap in the subscription, send every client a fresh snapshot."""
        for company_id, group in list(self._clients.items()):
            if company_id == ADMIN:  # the fleet restates the consoles itself
                continue
            try:
                text = await self._snapshot(company_id)
            except Exception:
                log.warning("snapshot after a gap failed", exc_info=True,
                            extra={"company_id": company_id})
                continue
            for client in list(group):
                if client.offer(text) == "dropped":
                    self._dropped(client)

    async def heartbeats(self) -> None:
        while True:
            await asyncio.sleep(self._heartbeat_s)
            text = heartbeat_message()
            for group in list(self._clients.values()):
                for client in list(group):
                    if client.offer(text) == "dropped":
                        self._dropped(client)

    async def watch_sends(self) -> None:
        """Close the clients whose send has not completed within the send timeout."""
        loop = asyncio.get_running_loop()
        every = min(1.0, self._send_timeout_s / 4)
        while True:
            await asyncio.sleep(every)
            now = loop.time()
            for group in list(self._clients.values()):
                for client in list(group):
                    if client.stalled(now, self._send_timeout_s):
                        self._metrics.ws_dropped.labels("send_timeout").inc()
                        log.warning("WebSocket client dropped: a send did not complete in "
                                    "%.0fs", self._send_timeout_s,
                                    extra={"company_id": client.company_id})
                        client.close(CLOSE_TOO_SLOW, "send timed out")

    def _dropped(self, client: Client) -> None:
        self._metrics.ws_dropped.labels("slow").inc()
        log.warning("WebSocket client dropped: its event queue is full (too slow)",
                    extra={"company_id": client.company_id})
