"""neonize's events and whatsmeow's log-line facts, each to one small handler.

Each neonize event (a `neonize.proto.Neonize_pb2` message, named by its protobuf type) the
driver acts on has one small handler, registered for its name with `@handles(...)`; those
whose protobuf is empty go straight to their reaction (`EMPTY_EVENTS`), those it only logs
are a table (`LOGGED_ONLY`); any other event is logged at debug level and ignored.
The pure protobuf-to-fact conversions live in `neonize.events`; the decisions a
connection-ending fact needs in `neonize.reactions` (shared with the log-line facts,
`handle_marker`); the link's events in `neonize.link`.

Inbound messages are stored before neonize's event thread goes on (`deliver`, the "receipt
after the write" rule, docs/NEONIZE.md).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from salon_sessions.core.phone import LidResolver
from salon_sessions.core.whatsapp_reasons import failure_name, logout_reason, temp_ban_name
from salon_sessions.worker.driver import Connected, Disconnected, LoggedOut, MessageNotStored
from salon_sessions.worker.neonize.context import DriverContext
from salon_sessions.worker.neonize.device import DeviceRecord
from salon_sessions.worker.neonize.events import (
    connect_failure,
    event_name,
    inbound_message,
    jid_text,
    logged_out,
    temporary_ban,
)
from salon_sessions.worker.neonize.go import PendingMessage
from salon_sessions.worker.neonize.link import LinkFlow
from salon_sessions.worker.neonize.logs import (
    ClientOutdatedLine,
    ConnectFailureLine,
    LogFact,
    LoggedOutLine,
    ReconnectFailedLine,
    StreamReplacedLine,
    TemporaryBanLine,
)
from salon_sessions.worker.neonize.reactions import ConnectionReactions
from salon_sessions.worker.neonize.state import ClientRun
from salon_sessions.worker.neonize.supervisor import AttemptSupervisor

EventHandler = Callable[["NeonizeEventHandlers", Any], Awaitable[None]]
"""A handler of one neonize event type: the protobuf in, facts to the sink."""

HANDLERS: Final[dict[str, EventHandler]] = {}
"""neonize event name (`Connected`, `Message`, ...) -> its handler (`@handles`)."""


def handles(*names: str) -> Callable[[EventHandler], EventHandler]:
    """Register a `NeonizeEventHandlers` method as the handler of these neonize events."""
    def register(handler: EventHandler) -> EventHandler:
        for name in names:
            if name in HANDLERS:
                raise ValueError(f"two handlers for the neonize event {name}")
            HANDLERS[name] = handler
        return handler
    return register


EMPTY_EVENTS: Final[dict[str, Callable[[ConnectionReactions], Awaitable[None]]]] = {
    "StreamReplaced": ConnectionReactions.stream_replaced,
    "ClientOutdated": ConnectionReactions.client_outdated,
}
"""neonize events whose protobuf is empty (the name is the whole fact). `neonize.go` does
not subscribe them (their empty buffer panics the Go loop); whatsmeow's log lines announce
them, and the same reactions handle both (`handle_marker`)."""


@dataclasses.dataclass(frozen=True, slots=True)
class LoggedLine:
    """An event the driver only logs: at `level`, `text` with the event's `field`."""

    level: int
    text: str
    field: str | None = None


LOGGED_ONLY: Final = {
    "OfflineSyncPreview": LoggedLine(logging.INFO, "WhatsApp delivers what arrived while the "
                                     "client was away (%s messages)", "Message"),
    "OfflineSyncCompleted": LoggedLine(logging.INFO, "WhatsApp delivered what arrived while "
                                       "the client was away"),
    "KeepAliveTimeout": LoggedLine(logging.WARNING, "WhatsApp keepalive timed out (%s errors)",
                                   "ErrorCount"),
    "KeepAliveRestored": LoggedLine(logging.INFO, "WhatsApp keepalive restored"),
    "StreamError": LoggedLine(logging.WARNING, "WhatsApp stream error %s", "Code"),
}
"""neonize events that change nothing but are worth a log line (the offline queue around
its messages, the keepalive, stream errors whatsmeow handles by itself)."""


class NeonizeEventHandlers:
    """Maps neonize events and log-line facts of the current client to driver facts."""

    def __init__(self, ctx: DriverContext, *, run: ClientRun, device: DeviceRecord,
                 supervisor: AttemptSupervisor, reactions: ConnectionReactions,
                 link: LinkFlow, resolver: LidResolver) -> None:
        self._ctx = ctx
        self._run = run
        self._device = device
        self._supervisor = supervisor
        self._reactions = reactions
        self._link = link
        self._resolver = resolver

    async def handle(self, event: Any) -> None:
        """Map one neonize event to driver events (through its registered handler)."""
        name = event_name(event)
        handler = HANDLERS.get(name)
        if handler is not None:
            await handler(self, event)
            return
        reaction = EMPTY_EVENTS.get(name)
        if reaction is not None:
            await reaction(self._reactions)
            return
        line = LOGGED_ONLY.get(name)
        if line is None:
            self._ctx.log.debug("ignoring neonize event %s", name)
            return
        args = () if line.field is None else (getattr(event, line.field),)
        self._ctx.log.log(line.level, line.text, *args)

    # ------------------------------------------------------------------ the link
    @handles("PairStatus")
    async def _pair_status(self, event: Any) -> None:
        await self._link.on_pair_status(event)

    @handles("Device")
    async def _device_seen(self, event: Any) -> None:
        jid = jid_text(event.JID) if event.HasField("JID") else None
        if jid:
            self._device.current = jid

    # ------------------------------------------------------------------ the connection
    @handles("Connected")
    async def _connected(self, event: Any) -> None:
        del event
        self._run.connected = True
        self._supervisor.connected()
        self._run.unconnected_since = None
        self._ctx.log.info("connected to WhatsApp")
        await self._ctx.emit(Connected(jid=self._device.current))

    @handles("Disconnected")
    async def _disconnected(self, event: Any) -> None:
        del event
        self._reactions.lost()
        self._ctx.log.info("connection to WhatsApp lost; whatsmeow reconnects")
        await self._ctx.emit(Disconnected(reason="connection lost", will_reconnect=True))

    @handles("LoggedOut")
    async def _logged_out(self, event: Any) -> None:
        await self._reactions.logged_out(logged_out(event))

    @handles("TemporaryBan")
    async def _temporary_ban(self, event: Any) -> None:
        ban = temporary_ban(event)
        await self._reactions.temporary_ban(ban.code, ban.expires_at)

    @handles("ConnectFailure")
    async def _connect_failure(self, event: Any) -> None:
        failure = connect_failure(event)
        await self._reactions.connect_failure(failure.reason, failure.message)

    # ------------------------------------------------------------------ messages
    @handles("Message")
    async def _message(self, event: Any) -> None:
        await self.handle_message(event)

    # ------------------------------------------------------------------ log-line facts
    async def handle_marker(self, fact: LogFact) -> None:
        """An event announced by a whatsmeow log line (`neonize.logs`)."""
        reactions = self._reactions
        match fact:
            case StreamReplacedLine():
                await reactions.stream_replaced()
            case ClientOutdatedLine():
                await reactions.client_outdated()
            case LoggedOutLine(code=code, on_connect=on_connect):
                await reactions.logged_out(LoggedOut(reason=logout_reason(code),
                                                     on_connect=on_connect))
            case TemporaryBanLine(code=code, expire_s=expire_s):
                expires = (datetime.now(UTC) + timedelta(seconds=expire_s)
                           if expire_s > 0 else None)
                await reactions.temporary_ban(
                    temp_ban_name(code) if code is not None else "temp_banned", expires)
            case ConnectFailureLine(code=code, message=message):
                await reactions.connect_failure(
                    failure_name(code) if code is not None else "generic", message)
            case ReconnectFailedLine():
                await reactions.reconnect_failed()

    # ------------------------------------------------------------------ inbound messages
    async def handle_message(self, event: Any, *, offline: bool = False) -> bool:
        """A neonize `Message`: a text message goes to the sink, which stores it.

        True once it is stored (or when it is no text message), False when it could not
        be: the sink raised `MessageNotStored` (or there is no sink). whatsmeow has sent the
        delivery receipt already (neonize does not let the driver withhold it, see
        docs/NEONIZE.md, "Inbound messages"), so such a message is lost unless WhatsApp
        delivers it again. `offline`: it came from WhatsApp's offline queue."""
        message = await inbound_message(event, self._resolver, offline=offline)
        if message is None:
            return True
        log = self._ctx.log
        if self._ctx.sink is None:
            log.warning("inbound message %s dropped: no sink attached", message.message_id)
            return False
        try:
            await self._ctx.emit(message)
        except MessageNotStored as exc:
            log.error("inbound message %s was not stored (%s); WhatsApp already has its "
                      "delivery receipt, so it is lost unless WhatsApp delivers it again",
                      message.message_id, exc)
            return False
        return True

    async def deliver(self, pending: PendingMessage) -> None:
        """Store an inbound message, then release neonize's event thread waiting for it."""
        stored = False
        try:
            stored = await self.handle_message(pending.event, offline=pending.offline)
        finally:
            pending.settle(stored)
