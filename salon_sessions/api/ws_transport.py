"""The WebSocket transport: one connection's outbox (`Client`) and the loop that serves it.

Kept apart from the routes (which authenticate and choose what a connection gets) and from
the hub (which only keeps track of who listens to what and offers them messages). A
`Client` owns its state: the hub and the transport change it only through its methods
(`offer`, `close`, `send_next`, `pong`, `stalled`).

A connection is served in three steps: `Transport.serve` accepts it, sends its opening
message (a snapshot) within the send timeout, then streams what the hub queued until
either side closes, and releases it from the hub in all cases. A refusal before the
accept (`Transport.refuse`) is an HTTP error body where the server supports denial
responses, else a close code `4000 + status`; after the accept an error is a close code
(1013 "try again later" for a 503).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal

from fastapi import WebSocket
from fastapi.responses import JSONResponse
from starlette.websockets import WebSocketDisconnect, WebSocketState

from salon_sessions.api.auth import WS_SUBPROTOCOL
from salon_sessions.api.errors import ApiError
from salon_sessions.api.live import RedisUnavailable, redis_error
from salon_sessions.api.metrics import ApiMetrics

CLOSE_TOO_SLOW = 4008
CLOSE_SERVER_GONE = 1001
CLOSE_INTERNAL = 1011
CLOSE_TRY_AGAIN = 1013
"""After the WebSocket was accepted (e.g. Redis unavailable for the snapshot): reconnect."""

PONG = '{"kind":"pong"}'
Offer = Literal["queued", "dropped", "closed"]


@dataclass(eq=False)
class Client:
    """One connection's outbox: a bounded queue of messages and how it ended."""

    company_id: str
    queue: asyncio.Queue[tuple[int, str]]
    """(seq, text): the event's `seq`, 0 for what is not an event (never skipped)."""
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    close_code: int = 1000
    close_reason: str = ""
    floor: int = 0
    """Events with a `seq` up to this one are already in the snapshot sent."""
    sending_since: float | None = None
    """Loop time at which the send in progress started (None: not sending)."""

    def offer(self, text: str, seq: int = 0) -> Offer:
        """Queue a message: "queued"; "dropped" when the queue is full (the client is
        closed now, once); "closed" when it was closed already."""
        if self.closed.is_set():
            return "closed"
        try:
            self.queue.put_nowait((seq, text))
        except asyncio.QueueFull:
            self.close(CLOSE_TOO_SLOW, "client too slow: event queue full")
            return "dropped"
        return "queued"

    def pong(self) -> None:
        """Answer a ping when there is room (a full queue is the hub's to judge)."""
        if not self.queue.full():
            self.queue.put_nowait((0, PONG))

    async def next(self) -> str:
        """The next message to send, skipping the events that the snapshot covers."""
        while True:
            seq, text = await self.queue.get()
            if seq == 0 or seq > self.floor:
                return text

    async def send_next(self, websocket: WebSocket) -> None:
        """Send the next message, noting when the send started (for `stalled`)."""
        text = await self.next()
        self.sending_since = asyncio.get_running_loop().time()
        await websocket.send_text(text)
        self.sending_since = None

    def stalled(self, now: float, timeout_s: float) -> bool:
        """An open client whose send in progress started more than `timeout_s` ago."""
        started = self.sending_since
        return started is not None and now - started > timeout_s and not self.closed.is_set()

    def close(self, code: int, reason: str) -> None:
        if not self.closed.is_set():
            self.close_code, self.close_reason = code, reason
            self.closed.set()


Opening = Callable[[Client], Awaitable[str]]
"""The first message of a connection (it may set the client's `floor`)."""


@dataclass(frozen=True)
class Transport:
    metrics: ApiMetrics
    send_timeout_s: float
    release: Callable[[Client], None]
    """Called once a served connection ends (the hub's `unregister`)."""

    async def refuse(self, websocket: WebSocket, exc: ApiError) -> None:
        """Refuse a connection before accepting it."""
        self.metrics.ws_connections.labels(f"refused_{exc.status}").inc()
        if "websocket.http.response" in websocket.scope.get("extensions", {}):
            await websocket.send_denial_response(
                JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers))
        else:
            await websocket.close(code=4000 + exc.status, reason=exc.code)

    async def serve(self, websocket: WebSocket, client: Client, opening: Opening) -> None:
        """Accept a registered client, send its `opening`, then stream what the hub queues
        for it until either side closes; release it in all cases."""
        self.metrics.ws_connections.labels("accepted").inc()
        offered = list(websocket.scope.get("subprotocols") or [])
        try:
            await websocket.accept(subprotocol=WS_SUBPROTOCOL if WS_SUBPROTOCOL in offered
                                   else None)
            first = await opening(client)
            async with asyncio.timeout(self.send_timeout_s):
                await websocket.send_text(first)
            await _stream(websocket, client)
        except (ApiError, RedisUnavailable) as failure:  # accepted: a close code, no HTTP
            exc = failure if isinstance(failure, ApiError) else redis_error(failure)
            self.metrics.ws_dropped.labels(exc.code).inc()
            client.close(CLOSE_TRY_AGAIN if exc.status == 503 else CLOSE_INTERNAL, exc.code)
        except (WebSocketDisconnect, ConnectionError, RuntimeError):
            pass
        finally:
            self.release(client)
            if client.close_code != 1000:
                with contextlib.suppress(Exception):
                    await websocket.close(client.close_code, client.close_reason)


async def _stream(websocket: WebSocket, client: Client) -> None:
    writer = asyncio.create_task(_pump(websocket, client))
    reader = asyncio.create_task(_read(websocket, client))
    closed = asyncio.create_task(client.closed.wait())
    try:
        await asyncio.wait({writer, reader, closed}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (writer, reader, closed):
            task.cancel()
        await asyncio.gather(writer, reader, closed, return_exceptions=True)


async def _pump(websocket: WebSocket, client: Client) -> None:
    """Send what the hub queued; a send that hangs is caught by `Hub.watch_sends`."""
    while True:
        await client.send_next(websocket)


async def _read(websocket: WebSocket, client: Client) -> None:
    """Answers `{"kind": "ping"}` and notices when the client goes away."""
    while websocket.client_state is WebSocketState.CONNECTED:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
        text = message.get("text")
        if not text or len(text) > 1024:
            continue
        try:
            body = json.loads(text)
        except ValueError:
            continue
        if isinstance(body, dict) and body.get("kind") == "ping":
            client.pong()
