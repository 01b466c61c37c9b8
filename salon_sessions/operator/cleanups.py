"""Credential cleanups that finish, even after the finalizer gave up on them.

The finalizer deletes a session's credentials with `SALON_CLEANUP_ATTEMPTS` attempts and
then lets the SalonSession go (deletion never hangs). What it could not delete is recorded
here and worked through in the background until the database lets us.

Why a ConfigMap and not a table: the record is needed exactly when PostgreSQL is
unreachable, so it cannot live there; Redis keeps nothing across its own restart. The
Kubernetes API is where the operator already keeps its state (the Lease): the record
survives an operator restart and a failover to the standby. One ConfigMap,
`SALON_PENDING_CLEANUP_CONFIGMAP` in the Lease's namespace (RBAC: `create`, and `get`/
`update` on that one name), one key per company (`company_<digits>` is a valid key), a
small JSON value. Its size limit (1 MiB) holds about 4,000 pending cleanups; beyond, adding
fails and the finalizer keeps the SalonSession (deletion waits rather than forgets).

Order: the finalizer writes the record *before* it releases the SalonSession; when the
record cannot be written, the finalizer is retried. So a SalonSession that is gone either
had its credentials deleted, kept them by policy, or left a durable record here.

The background task (leader only) tries every entry each `retry_s`, one transaction each
as the finalizer does (`db.credentials`). Done: the entry goes, a Normal Event
`CredentialsDeleted`, `salon_operator_cleanups_total{result="deleted_late"}`. Not yet: a
Warning Event `CleanupPending` (on the first background failure, then at most every
`report_s` per entry),
`salon_operator_cleanups_total{result="retry_failed"}`; `salon_operator_cleanups_pending`
is the number of entries. A new SalonSession of the same company first finishes the
pending cleanup (the deletion asked for the old device to go; the new worker must not
resume it): until then its StatefulSet waits.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Final

import asyncpg

from salon_sessions.core.redact import redact_text
from salon_sessions.core.settings import DatabasePooler
from salon_sessions.db.connections import connect
from salon_sessions.db.credentials import (
    DeletedCredentials,
    SessionInUse,
    delete_session_credentials,
)
from salon_sessions.db.tenancy import TenancyError, drop_session_role
from salon_sessions.operator.kube import Kube, KubeError
from salon_sessions.operator.metrics import OperatorMetrics
from salon_sessions.operator.recorder import EventRecorder
from salon_sessions.operator.registry import session_ref

log = logging.getLogger(__name__)
CLEANUP_ERRORS: Final = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError,
                         SessionInUse, TenancyError)
"""What a credential deletion may fail with while the database is away or in use."""
CONFLICT_RETRIES: Final = 5


async def delete_credentials(dsn: str, company: str, reason: str, *,
                             pooler: DatabasePooler = "none") -> DeletedCredentials:
    """One attempt: connect, delete the company's credentials in one transaction, then its
    session role (`db.tenancy`; dropped here too so that a role left behind while the
    database was down goes with the pending cleanup). Works through a transaction pooler
    (the session lock is probed with a transaction-level advisory lock)."""
    conn = await connect(dsn, "salon-operator", pooler=pooler, connect_timeout_s=5)
    try:
        report = await delete_session_credentials(conn, company, actor="operator",
                                                  reason=reason)
        await drop_session_role(conn, company)
        return report
    finally:
        await conn.close()


def describe(exc: BaseException) -> str:
    """An error for Events and status messages (passwords masked, bounded)."""
    return redact_text(f"{type(exc).__name__}: {exc}")[:300]


@dataclass
class PendingCleanup:
    namespace: str
    name: str
    uid: str
    since: str
    attempts: int
    error: str
    reported: float = 0.0
    """Wall time of the last Warning Event about it."""

    def ref(self) -> dict[str, str]:
        return session_ref(self.namespace, self.name, self.uid)


class PendingCleanups:
    def __init__(self, kube: Kube, namespace: str, name: str, dsn: str,
                 metrics: OperatorMetrics, recorder: EventRecorder, *,
                 retry_s: float = 30.0, report_s: float = 600.0,
                 pooler: DatabasePooler = "none") -> None:
        self._kube = kube
        self._namespace = namespace
        self._name = name
        self._dsn = dsn
        self._pooler: DatabasePooler = pooler
        self._metrics = metrics
        self._recorder = recorder
        self._retry_s = retry_s
        self._report_s = report_s
        self._known: dict[str, PendingCleanup] | None = None
        self._lock = asyncio.Lock()

    # ---- the record -----------------------------------------------------------------------
    async def _change(self, change: Callable[[dict[str, str]], bool]) -> dict[str, str]:
        """Read-modify-write the ConfigMap (optimistic: retried on a conflict)."""
        for _ in range(CONFLICT_RETRIES):
            current = await self._kube.get_configmap(self._namespace, self._name)
            data = dict((current or {}).get("data") or {})
            if not change(data):
                self._remember(data)
                return data
            try:
                if current is None:
                    await self._kube.create_configmap(self._namespace, {
                        "apiVersion": "v1", "kind": "ConfigMap",
                        "metadata": {"name": self._name, "namespace": self._namespace,
                                     "labels": {"app.kubernetes.io/name": "salon-sessions",
                                                "app.kubernetes.io/component": "operator"}},
                        "data": data})
                else:
                    current["data"] = data
                    await self._kube.update_configmap(self._namespace, current)
            except KubeError as exc:
                if exc.status == 409:
                    continue
                raise
            self._remember(data)
            return data
        raise KubeError(409, f"ConfigMap {self._name}: too many conflicting writers")

    def _remember(self, data: dict[str, str]) -> None:
        known: dict[str, PendingCleanup] = {}
        for company, raw in data.items():
            try:
                known[company] = PendingCleanup(**json.loads(raw))
            except (ValueError, TypeError):
                log.warning("unreadable pending cleanup entry %s dropped", company)
        self._known = known
        self._metrics.cleanups_pending.set(len(known))

    async def load(self) -> dict[str, PendingCleanup]:
        current = await self._kube.get_configmap(self._namespace, self._name)
        self._remember(dict((current or {}).get("data") or {}))
        assert self._known is not None
        return dict(self._known)

    async def add(self, company: str, entry: PendingCleanup) -> None:
        """Record a cleanup to finish (raises KubeError when it could not be recorded)."""
        text = json.dumps(asdict(entry), separators=(",", ":"))

        def put(data: dict[str, str]) -> bool:
            data[company] = text
            return True

        async with self._lock:
            await self._change(put)

    async def _done(self, company: str) -> None:
        def drop(data: dict[str, str]) -> bool:
            return data.pop(company, None) is not None

        await self._change(drop)

    async def pending(self, company: str) -> bool:
        """Whether a cleanup of `company` waits (read once, then kept up to date)."""
        if self._known is None:
            try:
                await self.load()
            except KubeError as exc:
                log.warning("pending cleanups not readable: %s", exc)
                return False
        return self._known is not None and company in self._known

    # ---- working through it ---------------------------------------------------------------
    async def finish(self, company: str) -> bool:
        """Try the company's pending cleanup now; True when nothing is left to do."""
        async with self._lock:
            entry = (self._known or {}).get(company)
            if entry is None:
                return True
            return await self._attempt(company, entry)

    async def _attempt(self, company: str, entry: PendingCleanup) -> bool:
        try:
            report = await delete_credentials(
                self._dsn, company, f"SalonSession {entry.namespace}/{entry.name} deleted "
                                    f"(cleanup finished after the database came back)",
                pooler=self._pooler)
        except CLEANUP_ERRORS as exc:
            entry.attempts += 1
            entry.error = describe(exc)
            self._metrics.cleanups.labels("retry_failed").inc()
            log.warning("pending cleanup of %s still failing (attempt %d): %s", company,
                        entry.attempts, entry.error, extra={"company_id": company})
            now = time.time()
            if now - entry.reported >= self._report_s:
                entry.reported = now
                self._recorder.emit(entry.ref(), "Warning", "CleanupPending",
                                    f"the credentials of the deleted SalonSession are still "
                                    f"in the database (attempt {entry.attempts}: "
                                    f"{entry.error}); retried every {self._retry_s:g}s")
            await self._save(company, entry)
            return False
        await self._done(company)
        self._metrics.cleanups.labels("deleted_late").inc()
        log.info("pending cleanup of %s done (%d device(s))", company,
                 report.whatsmeow_devices + report.simulator_devices,
                 extra={"company_id": company})
        self._recorder.emit(entry.ref(), "Normal", "CredentialsDeleted",
                            f"the credentials were deleted once the database was back "
                            f"(pending since {entry.since}, {entry.attempts} attempts)")
        return True

    async def _save(self, company: str, entry: PendingCleanup) -> None:
        text = json.dumps(asdict(entry), separators=(",", ":"))

        def put(data: dict[str, str]) -> bool:
            if company not in data:
                return False  # finished meanwhile
            data[company] = text
            return True

        try:
            await self._change(put)
        except KubeError as exc:
            log.warning("pending cleanup of %s not updated: %s", company, exc)

    async def run(self) -> None:
        while True:
            try:
                for company, entry in (await self.load()).items():
                    async with self._lock:
                        if company in (self._known or {}):
                            await self._attempt(company, entry)
            except KubeError as exc:
                log.warning("pending cleanups not processed: %s", exc)
            await asyncio.sleep(self._retry_s)


def pending_entry(namespace: str, name: str, uid: str, attempts: int,
                  error: str) -> PendingCleanup:
    return PendingCleanup(namespace=namespace, name=name, uid=uid,
                          since=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                          attempts=attempts, error=error)
