"""The worker's side of the control protocol (`core.control`): a request on
`whatsapp:control:<company>` executed against the session, its result or error published on
the request's reply channel.

Its own object because it is the one place where callers outside the worker (the API, the
`salon-sessions` commands) change the session: each command says which rule of the state it
goes through (`SessionState`, under the session's `events_lock`) and which error code a
refusal carries. The worker's listener hands it requests only as the proven holder.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from salon_sessions.core import channels, control
from salon_sessions.core.phone import InvalidPhone, parse_phone
from salon_sessions.worker.announcer import Announcer
from salon_sessions.worker.driver import Driver, DriverError
from salon_sessions.worker.lock import SessionLock
from salon_sessions.worker.metrics import WorkerMetrics
from salon_sessions.worker.session import Session
from salon_sessions.worker.state import RefusedError, SessionState
from salon_sessions.worker.state_writer import StateHashWriter

log = logging.getLogger(__name__)


@dataclass(eq=False, kw_only=True)
class ControlServer:
    """Executes this company's control requests and publishes each reply."""

    redis: Redis
    company_id: str
    default_region: str | None
    session: Session
    lock: SessionLock
    writer: StateHashWriter
    announcer: Announcer
    metrics: WorkerMetrics
    request_restart: Callable[[], None]

    @property
    def _state(self) -> SessionState:
        return self.session.state

    async def on_control(self, raw: bytes) -> None:
        try:
            req = control.parse_request(raw, self.company_id)
        except control.ControlError as exc:
            self.metrics.rejected.labels("control", exc.code).inc()
            await self.announcer.report_error("bad_command",
                                              f"control request rejected: {exc}")
            return
        try:
            result = await self._execute(req)
            reply = control.reply_payload(req.id, result)
        except (control.ControlError, RefusedError, DriverError) as exc:
            err = exc if isinstance(exc, control.ControlError) else control.ControlError(
                exc.code, str(exc))
            reply = control.reply_payload(req.id, error=err)
        with contextlib.suppress(RedisError, OSError):
            await self.redis.publish(channels.control_reply_channel(self.company_id, req.id),
                                     reply)

    async def _execute(self, req: control.ControlRequest) -> dict[str, Any]:
        match req.cmd:
            case "state":
                return self._state.snapshot() | {"lock": self.writer.lock_note}
            case "pairing_code":
                assert req.phone is not None
                return await self._pairing_code(req.phone)
            case "cancel_pairing_code":
                return await self._cancel_pairing_code()
            case "restart":
                self._state.check_restart(req.force)
                self.request_restart()
                return {"restarting": True}
            case "renew_link":
                return await self._renew_link()
            case "logout":
                if self._state.link_expired:
                    raise control.ControlError("link_expired", "no device is linked: the "
                                               "onboarding expired")
                driver = self._require_driver()
                await driver.logout()
                return {"logged_out": True}
        raise control.ControlError("unknown_command", req.cmd)  # pragma: no cover

    async def _renew_link(self) -> dict[str, Any]:
        """Linking goes on for another `expire_after_s` from now; an expired onboarding
        starts its driver again (QR codes resume)."""
        link = self.session.link
        async with self.session.events_lock:
            if self._state.linked:
                raise RefusedError("already_linked", "the session is already linked")
            await link.renew(datetime.now(UTC))
            expires = link.expires_at()
            assert expires is not None
            self._state.renew_link(expires)
            await self.writer.write_state()
            self.session.renewed.set()
            log.info("onboarding renewed for %d s", link.expire_after_s,
                     extra={"company_id": self.company_id})
            return {"phase": self._state.phase.value, "expires_at": expires.isoformat(),
                    "expire_after_s": link.expire_after_s}

    def _require_driver(self) -> Driver:
        driver = self.session.driver
        if driver is None or not self.lock.held:
            raise control.ControlError("not_ready", "the worker does not hold the session "
                                       "(standing by or starting)")
        return driver

    async def _pairing_code(self, typed: str) -> dict[str, Any]:
        try:
            phone = parse_phone(typed, self.default_region)
        except InvalidPhone as exc:
            raise control.ControlError("invalid", f"phone: {exc.why}") from None
        async with self.session.events_lock:
            await self.session.end_if_due()  # a request after the bound gets `link_expired`
            pending = self._state.current_code(phone)
            if pending is None:
                issued = await self._require_driver().request_pairing_code(phone)
                out = self._state.code_issued(phone, issued)
                await self.writer.write_state()
                await self.announcer.publish(out)
                pending = self._state.pending_code
                assert pending is not None
            return {"code": pending.code, "phone": pending.phone,
                    "expires_at": pending.expires_at.isoformat()}

    async def _cancel_pairing_code(self) -> dict[str, Any]:
        """End the pending code (idempotent): the driver drops it, the state forgets it,
        and a code for another number may be requested at once."""
        async with self.session.events_lock:
            if self._state.linked:
                return {"cancelled": False}
            pending = self._state.cancel_code()
            if self.session.driver is not None:
                await self.session.driver.cancel_pairing_code()
            if pending is not None:
                await self.writer.write_state()
            return {"cancelled": pending is not None}
