"""Level-triggered reconciliation of one SalonSession's StatefulSet, and the finalizer.

`reconcile` applies the desired StatefulSet with a server-side apply: idempotent (an
operator restart or two reconciles at once end with the same single StatefulSet), and it
creates, updates (rolling the pod when the template's hash changes) or scales (suspend) in
one call.

One company, one session (`operator.ownership`): a SalonSession whose company another,
older, one already names is held as a duplicate: no StatefulSet (deleted if it had one),
phase `Failed` with reason `DuplicateCompany`, and its deletion leaves the company's
credentials and Redis keys alone (they are the owner's). When the owner goes, the next one
takes over. This module does the I/O of it (deleting what a duplicate ran); who owns, and
the held state, are `operator.ownership`'s.

Before the StatefulSet, the session's own credentials (Redis user, Secret) are ensured
(`operator.tenancy`); a duplicate holds none.

`cleanup` runs in the finalizer: it stops the worker (scale to zero, wait for the pod to
go, so nothing rewrites the Redis keys or the credentials behind us), drops the session's
Redis user and credentials Secret, deletes the Redis keys, then, with
`deletionPolicy: Delete`, the credentials (`db.credentials`), with bounded retries. When
the database stays unreachable it gives up: a Warning Event and the `Ready` condition
(reason `CleanupFailed`) say why, the cleanup is recorded (`operator.cleanups`: finished
in the background once the database is back), and the SalonSession is released —
deletion never hangs forever, and the credentials do not stay.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from salon_sessions.core.channels import session_keys
from salon_sessions.core.resource import DeletionPolicy
from salon_sessions.core.settings import OperatorSettings
from salon_sessions.operator.cleanups import (
    CLEANUP_ERRORS,
    PendingCleanups,
    delete_credentials,
    describe,
    pending_entry,
)
from salon_sessions.operator.drift import generation, restored_template, template_matches
from salon_sessions.operator.kube import Kube, KubeError
from salon_sessions.operator.metrics import OperatorMetrics
from salon_sessions.operator.recorder import EventRecorder, KubeEvent
from salon_sessions.operator.registry import Registry, Session
from salon_sessions.operator.statefulset import build_statefulset, matches
from salon_sessions.operator.status_writer import StatusWriter
from salon_sessions.operator.tenancy import CredentialsError, SessionCredentials

log = logging.getLogger(__name__)


class RetryLater(Exception):
    """A transient failure; kopf retries the handler after `delay` seconds."""

    def __init__(self, message: str, delay: float = 5.0) -> None:
        self.delay = delay
        super().__init__(message)


class Reconciler:
    def __init__(self, settings: OperatorSettings, kube: Kube, redis: Redis,
                 writer: StatusWriter, recorder: EventRecorder,
                 metrics: OperatorMetrics, registry: Registry,
                 credentials: SessionCredentials,
                 pending: PendingCleanups | None = None) -> None:
        self._settings = settings
        self._credentials = credentials
        self._pending = pending
        self._registry = registry
        self._kube = kube
        self._redis = redis
        self._writer = writer
        self._recorder = recorder
        self._metrics = metrics

    # ---- StatefulSet ------------------------------------------------------------------
    async def reconcile(self, session: Session, *,
                        drifted: dict[str, Any] | None = None) -> None:
        """Apply the StatefulSet; `drifted`: the StatefulSet someone else changed (its pod
        template is then replaced as a whole, see `operator.drift`)."""
        if session.deleting:
            return
        owners = self._registry.owners
        if not owners.is_owner(session):
            await self._hold_duplicate(session)
            return
        owners.release(session)
        await self._finish_pending_cleanup(session)
        session.model.refresh()
        self._writer.mark(session)  # Pending, if this is the first we hear of it
        desired = build_statefulset(session.resource(), self._settings)
        started = time.monotonic()
        session.applying += 1
        try:
            await self._credentials.ensure(session)
            result = await self._kube.apply_statefulset(desired)
            if drifted is not None or not template_matches(
                    desired["spec"]["template"], (result.get("spec") or {}).get("template")):
                # an apply keeps what another manager added (even while we applied)
                # `result` (the apply's answer) is the freshest view: a `kubectl rollout
                # restart` made after the watch event that reported the drift is kept, and
                # one made after the apply fails the replace (422), which is retried
                version = (result.get("metadata") or {}).get("resourceVersion")
                try:
                    result = await self._kube.replace_pod_template(
                        session.namespace, session.name, restored_template(desired, result),
                        version if isinstance(version, str) else None)
                except KubeError as exc:
                    if exc.status != 422:
                        raise
                    raise RetryLater(f"StatefulSet {session.name} changed while its pod "
                                     "template was put back", delay=0.5) from None
            session.statefulset_generation = generation(result)
        except CredentialsError as exc:
            self._metrics.reconcile_errors.labels("credentials", "error").inc()
            raise RetryLater(str(exc), delay=2.0) from None
        except KubeError as exc:
            self._metrics.reconcile_errors.labels("statefulset", str(exc.status)).inc()
            raise RetryLater(f"applying StatefulSet {session.name}: {exc}",
                             delay=2.0 if exc.retryable else 10.0) from None
        finally:
            session.applying -= 1
            self._metrics.reconcile_seconds.labels("statefulset").observe(
                time.monotonic() - started)
        if not owners.is_owner(session):  # an older one appeared meanwhile
            await self._hold_duplicate(session)
            return
        session.model.reconciled(session.generation, session.suspended)
        self._writer.mark(session)

    async def _finish_pending_cleanup(self, session: Session) -> None:
        """A deleted SalonSession of this company left its credentials behind (the
        database was down): delete them before a new worker could resume that device."""
        if self._pending is None or not await self._pending.pending(session.company):
            return
        try:
            done = await self._pending.finish(session.company)
        except KubeError as exc:  # the record could not be updated: try again
            raise RetryLater(f"{session.name} waits: the pending cleanup of "
                             f"{session.company} could not be updated ({exc})") from None
        if not done:
            raise RetryLater(f"{session.name} waits: the credentials of a deleted "
                             f"SalonSession of {session.company} are still being deleted",
                             delay=self._settings.pending_cleanup_retry_s)

    async def _hold_duplicate(self, session: Session) -> None:
        """Stop whatever a duplicate runs, then hold it (`operator.ownership`)."""
        try:
            await self._kube.delete_statefulset(session.namespace, session.name, session.uid)
        except KubeError as exc:
            raise RetryLater(f"deleting the StatefulSet of duplicate {session.name}: {exc}",
                             delay=2.0) from None
        try:  # it may have run a worker before an older one appeared
            await self._credentials.drop(session, owner=False)
        except CredentialsError as exc:
            raise RetryLater(str(exc), delay=2.0) from None
        self._registry.owners.hold(session, self._recorder)
        self._writer.mark(session)

    async def check_statefulset(self, session: Session,
                                existing: dict[str, Any] | None) -> None:
        """A watched StatefulSet changed or vanished: re-apply if someone else changed it
        (a generation above our last write's; see `operator.drift`)."""
        if session.deleting or session.applying:
            return  # the write in flight settles it (and records its generation)
        if existing is not None:
            desired = build_statefulset(session.resource(), self._settings)
            seen, ours = generation(existing), session.statefulset_generation
            if ours is not None and seen is not None and seen <= ours \
                    and matches(existing, desired):
                return
            if ours is None and matches(existing, desired) and template_matches(
                    desired["spec"]["template"], existing["spec"].get("template")):
                session.statefulset_generation = seen  # first sight: it is as we want it
                return
        log.info("StatefulSet %s/%s %s; reconciling", session.namespace, session.name,
                 "was deleted" if existing is None else "was changed by someone else")
        self._metrics.statefulset_drift.labels("deleted" if existing is None
                                               else "changed").inc()
        await self.reconcile(session, drifted=existing)

    # ---- finalizer -------------------------------------------------------------------------
    async def cleanup(self, session: Session) -> None:
        started = time.monotonic()
        try:
            await self._stop_worker(session)
            await self._drop_credentials(session)
            kept = self._registry.owners.kept_for_owner(session)
            if kept is not None:
                self._metrics.cleanups.labels("duplicate").inc()
                self._recorder.emit(session.ref(), "Normal", "CredentialsKept", kept)
                return
            await self._delete_redis_keys(session)
            if session.deletion_policy is DeletionPolicy.RETAIN:
                self._metrics.cleanups.labels("retained").inc()
                self._recorder.emit(session.ref(), "Normal", "CredentialsRetained",
                                    "deletionPolicy Retain: the credentials are kept")
                return
            await self._delete_credentials(session)
        finally:
            self._metrics.reconcile_seconds.labels("cleanup").observe(
                time.monotonic() - started)

    async def _stop_worker(self, session: Session) -> None:
        try:
            await self._kube.scale_statefulset(session.namespace, session.name, 0)
        except KubeError as exc:
            raise RetryLater(f"scaling {session.name} down: {exc}", 2.0) from None
        deadline = time.monotonic() + self._settings.pod_stop_timeout_s
        while time.monotonic() < deadline:
            try:
                if await self._kube.get_pod(session.namespace, session.pod_name) is None:
                    break
            except KubeError as exc:
                log.warning("checking pod %s: %s", session.pod_name, exc)
            await asyncio.sleep(0.5)
        else:
            log.warning("pod %s/%s still exists after %.0fs; cleaning up anyway",
                        session.namespace, session.pod_name,
                        self._settings.pod_stop_timeout_s)
        try:  # rather than waiting for the garbage collector after the SalonSession goes
            await self._kube.delete_statefulset(session.namespace, session.name, session.uid)
        except KubeError as exc:
            log.warning("StatefulSet %s/%s not deleted: %s", session.namespace, session.name,
                        exc)

    async def _drop_credentials(self, session: Session) -> None:
        """The worker is gone: its Secret and (unless a duplicate) its Redis user go too,
        whatever the deletion policy (they are the pod's, not the WhatsApp device's)."""
        try:
            await self._credentials.drop(session, owner=self._registry.is_owner(session))
        except CredentialsError as exc:
            raise RetryLater(str(exc), delay=2.0) from None

    async def _delete_redis_keys(self, session: Session) -> None:
        # one by one: an operator user from an older release may not have every key (a
        # NOPERM for one must not keep the others)
        for key in session_keys(session.company):
            try:
                await self._redis.delete(key)
            except (RedisError, OSError) as exc:
                log.warning("Redis key %s not deleted: %s", key, type(exc).__name__,
                            extra={"company_id": session.company})

    async def _delete_credentials(self, session: Session) -> None:
        settings = self._settings
        last = ""
        for attempt in range(1, settings.cleanup_attempts + 1):
            try:
                report = await delete_credentials(
                    settings.database_url.get_secret_value(), session.company,
                    f"SalonSession {session.namespace}/{session.name} deleted",
                    pooler=settings.database_pooler)
            except CLEANUP_ERRORS as exc:
                last = describe(exc)
                log.warning("deleting the credentials of %s failed (attempt %d/%d): %s",
                            session.company, attempt, settings.cleanup_attempts, last,
                            extra={"company_id": session.company})
                session.model.cleanup_failed(
                    f"deleting the credentials failed (attempt {attempt}/"
                    f"{settings.cleanup_attempts}): {last}")
                self._writer.mark(session)
                if attempt < settings.cleanup_attempts:
                    await asyncio.sleep(settings.cleanup_retry_s)
                continue
            self._metrics.cleanups.labels("deleted").inc()
            log.info("credentials of %s deleted (%d device(s))", session.company,
                     report.whatsmeow_devices + report.simulator_devices,
                     extra={"company_id": session.company})
            self._recorder.emit(session.ref(), "Normal", "CredentialsDeleted",
                                "the session's credentials and Redis keys were deleted")
            return
        message = (f"gave up deleting the credentials after {settings.cleanup_attempts} "
                   f"attempts ({last}); the SalonSession is released and the cleanup "
                   f"recorded: it is retried every {settings.pending_cleanup_retry_s:g}s "
                   f"until the database lets it finish")
        if self._pending is not None:
            try:  # durable before the SalonSession goes
                await self._pending.add(session.company, pending_entry(
                    session.namespace, session.name, session.uid, settings.cleanup_attempts,
                    last))
            except KubeError as exc:
                raise RetryLater(f"the cleanup of {session.name} could not be recorded "
                                 f"({exc}); keeping the SalonSession", 5.0) from None
        else:
            message = (f"gave up deleting the credentials after {settings.cleanup_attempts} "
                       f"attempts ({last}); they are left in the database, the "
                       f"SalonSession is released")
        self._metrics.cleanups.labels("failed").inc()
        log.error(message, extra={"company_id": session.company})
        session.model.cleanup_failed(message)
        await self._writer.flush(session)
        await self._recorder.post(KubeEvent(session.ref(), "Warning", "CleanupFailed",
                                            message, datetime.now(UTC)))
