"""What the `neonize` driver does about the facts that end or stop a connection.

A logout, a replaced stream, a temporary ban, a refused connection and an outdated client
can each arrive twice: as a neonize event and as a whatsmeow log line (`neonize.logs`: the
line comes first, and some only come as a line, when neonize cannot encode them). Both
routes end here, so the decision (report once per client run, delete the credentials,
retry, wait or halt) is made in one place:

- `StreamReplaced`, `TemporaryBan` without an end, an outdated client and the refusals no
  reconnect can fix halt the driver (no reconnect); a ban with an end reconnects when it
  ends; refusals WhatsApp did not explain are retried only slowly;
- `LoggedOut` deletes the credentials and starts a new device (QR codes).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

from salon_sessions.core.whatsapp_reasons import NON_RETRYABLE, RETRYABLE
from salon_sessions.worker.driver import (
    ConnectFailure,
    Disconnected,
    LoggedOut,
    StreamReplaced,
    TemporaryBan,
)
from salon_sessions.worker.neonize.context import DriverContext
from salon_sessions.worker.neonize.device import DeviceRecord
from salon_sessions.worker.neonize.state import ClientRun
from salon_sessions.worker.neonize.supervisor import (
    LOGGED_OUT_RESTART_DELAY_S,
    AttemptSupervisor,
    Outcome,
)


class ConnectionReactions:
    """Reports a connection-ending fact once per client run and tells the supervisor what
    comes next (see the module docstring)."""

    def __init__(self, ctx: DriverContext, *, run: ClientRun, device: DeviceRecord,
                 supervisor: AttemptSupervisor) -> None:
        self._ctx = ctx
        self._run = run
        self._device = device
        self._supervisor = supervisor
        self._replaced_at: float | None = None
        """When the stream was last replaced (monotonic), for the retry window."""

    def lost(self) -> None:
        """The socket closed (a linked client starts the watchdog's clock)."""
        self._run.lost(linked=self._device.current is not None)

    async def logged_out(self, event: LoggedOut) -> None:
        if self._supervisor.attempt is not None and not self._run.first("logged_out"):
            return
        self._run.connected = False
        self._run.unconnected_since = None
        jid = self._device.forget()
        if jid is not None:
            await self._device.delete(jid, quietly=True)
        self._ctx.log.warning("WhatsApp logged the device out (%s); credentials deleted",
                              event.reason)
        await self._ctx.emit(event)
        self._supervisor.login_cycles = 0
        self._supervisor.request(Outcome("restart", "logged out",
                                         delay=LOGGED_OUT_RESTART_DELAY_S, fresh=True))

    async def stream_replaced(self) -> None:
        """Another client took the stream over. It can be self-inflicted (two pods for a
        moment, or a client of ours that stopped late): one retry after a pause, if this
        worker still holds the session lock; a second replacement within the window halts."""
        if not self._run.first("stream_replaced"):
            return
        self.lost()
        now = time.monotonic()
        p = self._ctx.policy
        recent = (self._replaced_at is not None
                  and now - self._replaced_at < p.stream_replaced_window_s)
        self._replaced_at = now
        retry = not recent and self._supervisor.lock_held()
        if retry:
            self._ctx.log.warning("another client took the stream over; retrying once in "
                                  "%.0f s", p.stream_replaced_retry_s)
        else:
            self._ctx.log.error("another client took the stream over %s; not reconnecting",
                                "again" if recent else "and the session lock is not held")
        await self._ctx.emit(StreamReplaced(will_retry=retry))
        if retry:
            self._supervisor.request(Outcome("restart", "stream replaced",
                                             delay=p.stream_replaced_retry_s,
                                             needs_lock=True))
        else:
            self._supervisor.request(Outcome("halt", "stream replaced twice" if recent
                                             else "stream replaced without the session lock"))

    async def temporary_ban(self, code: str, expires_at: datetime | None) -> None:
        if not self._run.first(f"temporary_ban:{code}"):
            return
        self.lost()
        self._ctx.log.warning("temporary ban %s until %s", code, expires_at)
        await self._ctx.emit(TemporaryBan(code=code, expires_at=expires_at))
        if expires_at is None:
            self._supervisor.request(Outcome("halt", f"temporary ban {code} without an end"))
        else:
            wait = (expires_at - datetime.now(UTC)).total_seconds()
            self._supervisor.request(Outcome("restart", "temporary ban", delay=max(wait, 1.0)))

    async def connect_failure(self, reason: str, message: str) -> None:
        """WhatsApp refused the connection. Refusals no reconnect can fix halt; those
        WhatsApp expects to pass are retried with the usual backoff; anything else (a code
        nobody explained) only slowly: a fast loop into an unexplained refusal is how
        numbers get banned."""
        if not self._run.first(f"connect_failure:{reason}"):
            return
        self.lost()
        message = self._ctx.scrub(message)
        halt = reason in NON_RETRYABLE
        self._ctx.log.warning("WhatsApp refused the connection: %s", reason)
        await self._ctx.emit(ConnectFailure(reason=reason, message=message,
                                            will_retry=not halt))
        if halt:
            self._supervisor.request(Outcome("halt", f"connect failure {reason}"))
        elif reason in RETRYABLE:
            self._supervisor.request(Outcome("restart", f"connect failure {reason}"))
        else:
            self._supervisor.request(Outcome("restart", f"connect failure {reason}",
                                             delay=self._supervisor.slow_delay()))

    async def client_outdated(self) -> None:
        if not self._run.first("client_outdated"):
            return
        self._run.connected = False
        self._ctx.log.error("WhatsApp rejects this client version; upgrade neonize")
        await self._ctx.emit(ConnectFailure(reason="client_outdated",
                                            message="WhatsApp rejected the client version",
                                            will_retry=False))
        self._supervisor.request(Outcome("halt", "client outdated"))

    async def reconnect_failed(self) -> None:
        """whatsmeow's reconnect after pairing failed, and whatsmeow never retries it."""
        if self._device.current is not None and not self._run.connected:
            self._ctx.log.warning("whatsmeow's reconnect after pairing failed and is not "
                                  "retried; restarting the client")
            await self._ctx.emit(Disconnected(
                reason="the reconnect after linking failed; restarting the WhatsApp client",
                will_reconnect=True))
            self._supervisor.restart_client("reconnect_after_pairing_failed")
