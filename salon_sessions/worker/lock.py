"""One live connection per session: a PostgreSQL advisory lock on a dedicated connection.

Two workers with the same credentials make WhatsApp replace streams back and forth, so a
worker connects to WhatsApp only while it holds `session_lock_key(company_id)`, taken and
released through `db.locks` (the calls a session's own database role is allowed). The lock
lives as long as its database session: when the holder dies (kill -9) or its connection is
cut, PostgreSQL releases it and a standby takes over.

The holder *proves* every `check_s` that PostgreSQL grants the lock to its own backend
(`db.locks.session_lock_held`, a `pg_locks` query), and records the time in `proved_at`. Any
failure of a proof - an error of any type, a timeout, a `false` - loses the lock (`lost` is
set, `lost_at` recorded), and so does the connection's termination callback. Neither path
is trusted alone: `worker.fence` judges the age of `proved_at`, whoever failed to update it.

Why any error type: after a PostgreSQL restart asyncpg can read the backend's FATAL 57P01
on an idle connection, put its protocol in an error state, and fail the next query with
`InternalClientError` (a bare `Exception`); handling that, it aborts the connection in a
way that skips its termination listeners. The old keep-alive caught only OSError,
PostgresError, InterfaceError and TimeoutError, so its task died silently and nothing ever
set `lost` (issue 10, docs/WORKER.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import asyncpg

from salon_sessions.db import locks
from salon_sessions.db.connections import connect

log = logging.getLogger(__name__)


class SessionLock:
    def __init__(self, dsn: str, company_id: str, *, retry_s: float = 1.0,
                 check_s: float = 1.0) -> None:
        self._dsn = dsn
        self._company = company_id
        self._retry_s = retry_s
        self._check_s = check_s
        self._conn: asyncpg.Connection | None = None
        self._watch: asyncio.Task[None] | None = None
        self._releasing = False
        self.lost = asyncio.Event()
        """Set when the lock is lost or released. A new event per tenure: a late callback of
        a previous connection cannot touch the current one."""
        self.proved_at: float | None = None
        """`time.monotonic()` of the last proof (acquiring counts as one)."""
        self.lost_at: float | None = None
        """When a held lock was lost (not released on purpose); None again once re-acquired."""

    @property
    def held(self) -> bool:
        """Held *and proven* within the proof deadline (3 checks)."""
        return (self._conn is not None and not self.lost.is_set()
                and self.proved_at is not None
                and time.monotonic() - self.proved_at <= 3 * self._check_s)

    @property
    def backend_pid(self) -> int | None:
        return self._conn.get_server_pid() if self._conn is not None else None

    async def acquire(self) -> None:
        """Wait until this worker holds the session's lock (retrying through outages)."""
        waited = False
        while True:
            try:
                conn = await connect(self._dsn, f"salon-lock:{self._company}",
                                     connect_timeout_s=5)
            except Exception as exc:  # whatever it is, the database is not there
                log.warning("lock: database unreachable (%s); retrying", type(exc).__name__,
                            extra={"company_id": self._company})
                await asyncio.sleep(self._retry_s)
                continue
            try:
                async with asyncio.timeout(max(self._check_s * 2, 5)):
                    got = await locks.try_session_lock(conn, self._company)
            except Exception:  # not taken
                got = False
            if got:
                lost = self.lost = asyncio.Event()
                self._conn = conn
                self.proved_at = time.monotonic()
                self.lost_at = None
                conn.add_termination_listener(
                    lambda _c, lost=lost: self._lose(lost, "its database connection closed"))
                self._watch = asyncio.create_task(self._prove(conn, lost), name="lock-proof")
                log.info("lock acquired%s (backend %d)", " after waiting" if waited else "",
                         conn.get_server_pid(), extra={"company_id": self._company})
                return
            await _close(conn)
            if not waited:
                log.info("lock held by another worker; standing by",
                         extra={"company_id": self._company})
                waited = True
            await asyncio.sleep(self._retry_s)

    def lose(self, why: str) -> None:
        """Give the current tenure up as lost (the fence watchdog's verdict)."""
        self._lose(self.lost, why)

    def _lose(self, lost: asyncio.Event, why: str) -> None:
        if lost is not self.lost or lost.is_set():
            return  # an earlier tenure, or already lost or released
        if not self._releasing:
            log.warning("lock lost: %s", why, extra={"company_id": self._company})
            self.lost_at = time.monotonic()
        lost.set()

    async def _prove(self, conn: asyncpg.Connection, lost: asyncio.Event) -> None:
        why = "the proof loop ended"
        try:
            while not lost.is_set():
                await asyncio.sleep(self._check_s)
                try:
                    # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow the
                    # cancellation of this task
                    async with asyncio.timeout(self._check_s * 2):
                        granted = await locks.session_lock_held(conn, self._company)
                except Exception as exc:  # any failure is a failed proof
                    why = f"the lock proof failed ({type(exc).__name__}: {exc})"[:300]
                    break
                if not granted:
                    why = "PostgreSQL no longer grants the lock to this connection"
                    break
                self.proved_at = time.monotonic()
        finally:
            # whatever ends this loop (even an exception nobody foresaw) ends the tenure
            self._lose(lost, why)

    async def release(self) -> None:
        self._releasing = True
        try:
            self.lost.set()
            watch, self._watch = self._watch, None
            if watch is not None:
                watch.cancel()
                with contextlib.suppress(Exception, asyncio.CancelledError):
                    async with asyncio.timeout(self._check_s * 4):
                        await watch
            conn, self._conn = self._conn, None
            if conn is not None and not conn.is_closed():
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(2):
                        await locks.release_session_lock(conn, self._company)
                await _close(conn)
            self.proved_at = None
        finally:
            self._releasing = False


async def _close(conn: asyncpg.Connection) -> None:
    """Close within 2 s, else cut it: closing the session releases the lock in any case."""
    with contextlib.suppress(Exception):
        async with asyncio.timeout(2):
            await conn.close()
    if not conn.is_closed():
        conn.terminate()
