"""Which device this session resumes, and the store checks behind it.

whatsmeow panics when it is handed a JID that is not in its store (`neonize.go`), and the
store is shared by every salon: so a device is resumed only when it is known to be this
session's (the constructor's `device_jid`, the device linked in this process, or
`salon_sessions.device_jid` of the company) and registered in `whatsmeow_device` right now.
Kept apart from the supervisor and the handlers, which only ask "which device?" and say
"linked" or "gone".
"""

from __future__ import annotations

import contextlib

from salon_sessions.core.phone import InvalidJid, parse_device_jid
from salon_sessions.db.whatsmeow_store import NeonizeStore
from salon_sessions.worker.neonize.context import DriverContext


class DeviceRecord:
    """The device JID this session knows of, checked against the store."""

    def __init__(self, ctx: DriverContext, store: NeonizeStore,
                 configured: str | None) -> None:
        if configured is not None:
            parse_device_jid(configured)
        self._ctx = ctx
        self._store = store
        self.configured = configured
        """The device this session linked before, as configured or linked in this process."""
        self.current: str | None = None
        """The device of the client run (linked, resumed or seen in a `Device` event)."""

    async def stored_device(self) -> str | None:
        """The first known device that is registered in the store (see the docstring)."""
        candidates = [self.current, self.configured]
        if self.current is None and self.configured is None:
            candidates.append(await self._store.linked_device(self._ctx.company_id))
        for jid in dict.fromkeys(c for c in candidates if c):
            try:
                parse_device_jid(jid)
            except InvalidJid:
                self._ctx.log.warning("ignoring a stored device JID that is not a user JID")
                continue
            if await self._store.device_registered(jid):
                return jid
        return None

    async def still_registered(self, jid: str) -> bool:
        """Whether the store still has `jid` (True when the store cannot say)."""
        try:
            return await self._store.device_registered(jid)
        except Exception:
            return True  # unknown: assume nothing changed

    def linked(self, jid: str) -> None:
        """WhatsApp accepted this device: it is the one to resume from now on."""
        self.current = jid
        self.configured = jid

    def forget(self) -> str | None:
        """The device is gone (logged out): no longer resumed; returns its JID."""
        jid, self.current = self.current, None
        self.configured = None
        return jid

    async def delete(self, jid: str, *, quietly: bool = False) -> None:
        """Delete the device's credentials from the store (`quietly`: errors ignored)."""
        if not quietly:
            await self._store.delete_device(jid)
            return
        with contextlib.suppress(Exception):
            await self._store.delete_device(jid)
