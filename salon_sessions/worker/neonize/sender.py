"""What the `neonize` driver sends on the current client: texts, typing indicators, logout.

Each is a Go call on the client that runs now (`AttemptPhase.RUNNING` and connected), made
in a daemon thread (`run_in_daemon`) and counted as running (`ClientRetirer.go_call`):
a send writes Signal sessions into the store, so the client is stopped only after it
returned. WhatsApp's refusals become `DriverError`s (`neonize.errors`); a typing indicator
is best effort and never holds up a send. Kept apart from the supervisor and the handlers:
these are the only calls that go from the worker to WhatsApp.
"""

from __future__ import annotations

import asyncio
from typing import Any

from salon_sessions.core.phone import InvalidJid, JidKind, parse_jid
from salon_sessions.worker.driver import DriverError
from salon_sessions.worker.neonize.context import DriverContext
from salon_sessions.worker.neonize.errors import send_error
from salon_sessions.worker.neonize.go import (
    go_logout,
    go_send_chat_presence,
    go_send_text,
    jid_proto,
    run_in_daemon,
)
from salon_sessions.worker.neonize.retire import ClientRetirer
from salon_sessions.worker.neonize.supervisor import AttemptSupervisor


def chat_proto(to_jid: str) -> Any:
    """The neonize `JID` of a chat (device and agent dropped); raises `InvalidJid`."""
    parsed = parse_jid(to_jid)
    if parsed.kind is JidKind.SERVER:
        raise InvalidJid(to_jid, "a server JID is not a chat")
    return jid_proto(parsed.bare)


class NeonizeSender:
    """Go calls on the connected client (see the module docstring)."""

    def __init__(self, ctx: DriverContext, *, supervisor: AttemptSupervisor,
                 retirer: ClientRetirer) -> None:
        self._ctx = ctx
        self._supervisor = supervisor
        self._retirer = retirer

    async def send_text(self, to_jid: str, text: str) -> str:
        attempt = self._supervisor.running_client()
        if attempt is None:
            raise DriverError("not_connected", "the WhatsApp session is not connected")
        try:
            to = chat_proto(to_jid)
        except InvalidJid as exc:
            raise DriverError("invalid_jid", str(exc)) from None
        if not text:
            raise DriverError("empty_text", "refusing to send an empty message")
        async with self._retirer.go_call():
            message_id, error = await run_in_daemon("send", go_send_text, attempt.uuid, to,
                                                    text)
        if error:
            # 429 / 463: `rate_limited` / `reachout_restricted` (the bridge's breaker)
            raise send_error(self._ctx.scrub(error))
        return message_id

    async def send_presence(self, to_jid: str, composing: bool) -> None:
        """neonize's `SendChatPresence` (whatsmeow: a `<chatstate>` node, composing or
        paused, text). Best effort: without an open socket, or on any error, nothing
        happens but a debug line; a Go call slower than `presence_wait_s` is left running."""
        log = self._ctx.log
        attempt = self._supervisor.running_client()
        if attempt is None:
            log.debug("no typing indicator: not connected")
            return
        try:
            to = chat_proto(to_jid)
        except InvalidJid:
            log.debug("no typing indicator: not a chat JID")
            return
        wait = self._ctx.policy.presence_wait_s
        async with self._retirer.go_call():
            call = run_in_daemon("presence", go_send_chat_presence, attempt.uuid, to,
                                 composing)
            try:
                error = await asyncio.wait_for(asyncio.shield(call), timeout=wait)
            except TimeoutError:
                log.debug("typing indicator: no answer from Go within %.0f s", wait)
                return
        if error:
            log.debug("typing indicator not sent: %s", self._ctx.scrub(error))

    async def logout(self) -> None:
        """Unlink the device on WhatsApp's side, when a client is connected; a failure is
        logged (the caller deletes the local credentials anyway)."""
        attempt = self._supervisor.running_client()
        if attempt is None:
            return
        async with self._retirer.go_call():
            error = await run_in_daemon("logout", go_logout, attempt.uuid)
        if error:
            self._ctx.log.warning("WhatsApp did not confirm the logout (%s); deleting the "
                                  "local credentials anyway", self._ctx.scrub(error))
