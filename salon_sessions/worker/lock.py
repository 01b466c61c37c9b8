"""One live connection per session: a PostgreSQL advisory lock on a dedicated connection.

Two workers with the same credentials make WhatsApp replace streams back and forth, so a
worker connects to WhatsApp only while it holds `session_lock_key(company_id)`, taken and
released through `db.locks` (the calls a session's own database role is allowed). The lock
lives as long as its database session: when the holder dies (kill -9) or its connection is
cut, PostgreSQL releases it and a standby takes over. The holder notices the loss through
asyncpg's termination callback or a failed keep-alive query (every `check_s`), and must
drop its WhatsApp connection at once (`lost` is set).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import asyncpg

from salon_sessions.db.locks import release_session_lock, try_session_lock

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
        """Set when a held lock is lost (connection closed or unresponsive)."""

    @property
    def held(self) -> bool:
        return self._conn is not None and not self.lost.is_set()

    async def acquire(self) -> None:
        """Wait until this worker holds the session's lock (retrying through outages)."""
        waited = False
        while True:
            try:
                conn = await asyncpg.connect(self._dsn, timeout=5,
                                             server_settings={"application_name":
                                                              f"salon-lock:{self._company}"})
            except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
                log.warning("lock: database unreachable (%s); retrying", type(exc).__name__,
                            extra={"company_id": self._company})
                await asyncio.sleep(self._retry_s)
                continue
            try:
                got = await try_session_lock(conn, self._company)
            except (OSError, asyncpg.PostgresError):
                got = False
            if got:
                self._conn = conn
                self.lost.clear()
                conn.add_termination_listener(lambda _: self.lost.set())
                self._watch = asyncio.create_task(self._keepalive(conn), name="lock-keepalive")
                log.info("lock acquired%s", " after waiting" if waited else "",
                         extra={"company_id": self._company})
                return
            await conn.close()
            if not waited:
                log.info("lock held by another worker; standing by",
                         extra={"company_id": self._company})
                waited = True
            await asyncio.sleep(self._retry_s)

    async def _keepalive(self, conn: asyncpg.Connection) -> None:
        while not self.lost.is_set() and not self._releasing:
            await asyncio.sleep(self._check_s)
            try:
                # the lock lives exactly as long as this database session. (asyncio.timeout,
                # not wait_for: on 3.11 wait_for can swallow the cancellation of this task)
                async with asyncio.timeout(self._check_s * 3):
                    held = await conn.fetchval("SELECT 1")
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
                held = 0
            if not held and not self._releasing:
                log.warning("lock lost: its database connection is gone",
                            extra={"company_id": self._company})
                self.lost.set()

    async def release(self) -> None:
        self._releasing = True
        watch, self._watch = self._watch, None
        if watch is not None:
            watch.cancel()
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                async with asyncio.timeout(self._check_s * 4):
                    await watch
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            with contextlib.suppress(OSError, asyncpg.PostgresError, asyncpg.InterfaceError,
                                     TimeoutError):
                async with asyncio.timeout(2):
                    await release_session_lock(conn, self._company)
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2):
                    await conn.close()
            if not conn.is_closed():
                conn.terminate()  # closing the session releases the lock in any case
        self.lost.set()
        self._releasing = False
