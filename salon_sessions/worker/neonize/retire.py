"""Stopping a WhatsApp client safely, and knowing when the next one may start.

A Go client cannot just be dropped (`neonize.go`): its running calls (a send) write Signal
sessions into the store and must finish first; it is stopped only as far as its phase
allows; a client that may hold WhatsApp's stream must have returned from `Neonize()` before
another one starts (two clients with the same credentials replace each other's stream);
abandoned login clients stay parked for good, and too many of them end the process; and
each client's store connections, which neonize never closes, are terminated once it no
longer runs. The supervisor decides when a client ends; this object knows how.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Final

from salon_sessions.db.whatsmeow_store import NeonizeStore
from salon_sessions.worker.neonize.context import DriverContext
from salon_sessions.worker.neonize.go import AttemptPhase, GoAttempt, parked_count

RETIRED_KEPT: Final = 50
"""Retired clients whose store connections are swept again (each retirement, and close)."""


class ClientRetirer:
    """Retires the clients of one driver (see the module docstring)."""

    def __init__(self, ctx: DriverContext, store: NeonizeStore) -> None:
        self._ctx = ctx
        self._store = store
        self.retired: list[GoAttempt] = []
        self._holder: GoAttempt | None = None
        """The last retired client that may still hold WhatsApp's stream."""
        self._inflight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @contextlib.asynccontextmanager
    async def go_call(self) -> AsyncIterator[None]:
        """A Go call on the current client that must finish before the client stops."""
        self._inflight += 1
        self._idle.clear()
        try:
            yield
        finally:
            self._inflight -= 1
            if self._inflight == 0:
                self._idle.set()

    def refusal(self, jid: str | None) -> str | None:
        """Why no new client may start in this process, if so."""
        if jid is None and parked_count() >= self._ctx.policy.max_parked:
            return (f"{parked_count()} abandoned login clients are parked in this process "
                    "(neonize cannot free them); it must restart")
        return None

    async def holder_gone(self) -> str | None:
        """Two clients with the same credentials replace each other's stream: the next
        client starts only once the previous one that may hold it has returned from
        `Neonize()`. Why not, if it does not within `stop_wait_s`."""
        holder = self._holder
        if holder is None or holder.finished.is_set():
            self._holder = None
            return None
        wait = self._ctx.policy.stop_wait_s
        if await asyncio.to_thread(holder.finished.wait, wait):
            self._holder = None
            return None
        return (f"a WhatsApp client did not stop within {wait:.0f} s; starting another "
                "would replace its stream")

    async def retire(self, attempt: GoAttempt) -> None:
        """Stop an attempt's Go client as far as its phase allows, then free its DB
        connections: after its running calls finished, and only once Go let go of it."""
        p = self._ctx.policy
        if self._inflight:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), timeout=p.drain_s)
        attempt.request_stop()
        settled = await asyncio.to_thread(attempt.settled.wait, p.retire_wait_s)
        if attempt.jid is not None or attempt.phase is AttemptPhase.RUNNING:
            self._holder = attempt  # it may hold WhatsApp's stream (see `holder_gone`)
        elif not settled:
            self._ctx.log.warning("the WhatsApp client did not stop within %.0f s; it is "
                                  "stopped when it gets that far", p.retire_wait_s)
        elif attempt.phase is AttemptPhase.LOGIN:
            self._ctx.log.debug("login socket closed; its neonize thread stays parked")
        self.retired = [*self.retired[-(RETIRED_KEPT - 1):], attempt]
        await self.terminate_retired()

    async def finished(self, attempt: GoAttempt) -> None:
        """A retired client's `Neonize()` returned: close its store connections again
        (they may have been opened after it was retired)."""
        if attempt in self.retired:
            with contextlib.suppress(Exception):
                await self._store.terminate_backends([attempt.application_name])

    async def terminate_retired(self) -> None:
        """Close the store connections of retired clients that no longer run (a finished
        one's are closed again on its `finished` callback, see `finished`)."""
        names = [a.application_name for a in self.retired
                 if a.finished.is_set() or a.phase is AttemptPhase.LOGIN]
        if not names:
            return
        try:
            await self._store.terminate_backends(names)
        except Exception as exc:
            self._ctx.log.warning("could not close finished clients' store connections: %s",
                                  self._ctx.scrub(str(exc)) or type(exc).__name__)
