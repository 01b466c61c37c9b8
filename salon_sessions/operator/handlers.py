"""kopf handlers: thin adapters from kopf's causes to the reconciler and the registry.

Every watch event of a SalonSession also hands its `.status` to `on_status` (the status
writer re-asserts a status someone else changed); every watch event of a session pod goes
to `on_pod` (worker restarts)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Mapping
from typing import Any

import kopf

from salon_sessions.core.resource import GROUP, PLURAL, VERSION
from salon_sessions.core.salon_session import SalonSession
from salon_sessions.core.settings import OperatorSettings
from salon_sessions.operator.reconciler import Reconciler, RetryLater
from salon_sessions.operator.registry import Registry, Session
from salon_sessions.operator.statefulset import (
    COMPANY_LABEL,
    INSTANCE_LABEL,
    MANAGED_BY,
    MANAGED_BY_LABEL,
)

log = logging.getLogger(__name__)
StatusHandler = Callable[[Session, dict[str, Any]], object]
PodHandler = Callable[[Session, Mapping[str, Any]], object]


def plain(body: Mapping[str, Any]) -> dict[str, Any]:
    """A deep, mutable copy of a kopf body."""
    result: dict[str, Any] = json.loads(json.dumps(body, default=dict))
    return result


def kopf_settings(settings: OperatorSettings) -> kopf.OperatorSettings:
    s = kopf.OperatorSettings()
    s.persistence.finalizer = f"{GROUP}/cleanup"
    s.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    s.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration")
    s.posting.level = logging.WARNING  # kopf's own "handler succeeded" Events are noise
    # no dynamic watching of CRDs and namespaces: the CRD is installed before the operator,
    # SALON_NAMESPACE is an exact name, and RBAC need not grant CRDs or namespaces
    s.scanning.disabled = True
    s.batching.exit_timeout = 1.0
    s.watching.server_timeout = 300
    s.watching.client_timeout = 330
    s.networking.request_timeout = 60
    return s


def register(registry: kopf.OperatorRegistry, sessions: Registry,
             reconciler: Reconciler, *, on_status: StatusHandler | None = None,
             on_pod: PodHandler | None = None) -> None:
    background: set[asyncio.Task[None]] = set()

    async def rereconcile(session: Session) -> None:
        try:
            await reconciler.reconcile(session)
        except RetryLater as exc:  # the next watch event or resync retries
            log.warning("%s", exc)
        except Exception:
            log.exception("reconciling %s/%s after an owner change failed",
                          session.namespace, session.name)

    def owner_changed(old: Session, new: Session | None) -> None:
        """One company, one session: both sides of an ownership change are reconciled."""
        for session in (old, new):
            if session is not None and sessions.get(session.key) is session \
                    and not session.deleting:
                task = asyncio.create_task(rereconcile(session))
                background.add(task)
                task.add_done_callback(background.discard)

    sessions.on_owner_change = owner_changed

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> Any:
        return (kopf.login_with_service_account(**kwargs)
                or kopf.login_with_kubeconfig(**kwargs))

    @kopf.on.event(GROUP, VERSION, PLURAL, registry=registry)
    async def session_event(type: str | None, body: Mapping[str, Any], **_: Any) -> None:
        # async: runs on the loop, like everything else that reads the registry (kopf would
        # run a plain function in a thread)
        if type == "DELETED":
            sessions.forget(SalonSession.from_body(body).key)
            return
        session = sessions.observe(body)
        if session is not None and on_status is not None and not session.deleting:
            on_status(session, plain(body.get("status") or {}))

    @kopf.on.resume(GROUP, VERSION, PLURAL, registry=registry, backoff=2)
    @kopf.on.create(GROUP, VERSION, PLURAL, registry=registry, backoff=2)
    @kopf.on.update(GROUP, VERSION, PLURAL, registry=registry, backoff=2)
    async def reconcile(body: Mapping[str, Any], **_: Any) -> None:
        session = sessions.observe(body)
        if session is None:
            raise kopf.PermanentError("spec.companyId is not a company id")
        try:
            await reconciler.reconcile(session)
        except RetryLater as exc:
            raise kopf.TemporaryError(str(exc), delay=exc.delay) from None

    @kopf.on.delete(GROUP, VERSION, PLURAL, registry=registry, backoff=2)
    async def cleanup(body: Mapping[str, Any], **_: Any) -> None:
        session = sessions.observe(body)
        if session is None:
            return
        session.deleting = True
        try:
            await reconciler.cleanup(session)
        except RetryLater as exc:
            raise kopf.TemporaryError(str(exc), delay=exc.delay) from None

    @kopf.on.event("apps", "v1", "statefulsets", registry=registry,
                   labels={MANAGED_BY_LABEL: MANAGED_BY})
    async def statefulset_event(type: str | None, body: Mapping[str, Any],
                                **_: Any) -> None:
        meta = body.get("metadata", {})
        owner = next((o for o in meta.get("ownerReferences") or []
                      if o.get("controller")), None)
        if owner is None:
            return
        session = sessions.get((meta.get("namespace", ""), owner.get("name", "")))
        if session is None or session.uid != owner.get("uid") or session.deleting:
            return
        existing = None if type == "DELETED" else plain(body)
        try:
            await reconciler.check_statefulset(session, existing)
        except RetryLater as exc:
            log.warning("%s", exc)


    if on_pod is not None:
        @kopf.on.event("", "v1", "pods", registry=registry,
                       labels={MANAGED_BY_LABEL: MANAGED_BY})
        async def pod_event(type: str | None, body: Mapping[str, Any], **_: Any) -> None:
            meta = body.get("metadata", {})
            labels = meta.get("labels") or {}
            session = sessions.get((meta.get("namespace", ""),
                                    str(labels.get(INSTANCE_LABEL, ""))))
            if type == "DELETED" or session is None or session.deleting \
                    or labels.get(COMPANY_LABEL) != session.company:
                return
            on_pod(session, body)
