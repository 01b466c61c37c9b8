"""The SalonSessions this operator knows, by resource and by company id.

Kept up to date from kopf's watch (`observe`, `forget`); the events consumer, the heartbeat
reconciler, the pinger and the status writer all read from here. A session's model is
created from its written `.status` the first time it is seen, and is authoritative after
that (the operator is the only writer of `.status`).

Bodies are read through their typed views (`core.salon_session`). Which session serves a
company is `operator.ownership`'s (`Registry.owners`); the registry tells it which sessions
exist.
"""

from __future__ import annotations

import json
import logging
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from salon_sessions.core.bounds import Horizon
from salon_sessions.core.company import InvalidCompanyId, canonical_company_id
from salon_sessions.core.resource import API_VERSION, KIND, DeletionPolicy
from salon_sessions.core.salon_session import SalonSession, SalonSessionSpec
from salon_sessions.operator.model import SessionModel
from salon_sessions.operator.ownership import CompanyOwners, OwnerChange

log = logging.getLogger(__name__)
Key = tuple[str, str]  # (namespace, name)


@dataclass
class Session:
    namespace: str
    name: str
    uid: str
    company: str
    """`spec.companyId`, canonical (`core.company`)."""
    spec: SalonSessionSpec
    generation: int
    model: SessionModel
    deleting: bool = False
    written: dict[str, Any] = field(default_factory=dict)
    """The `.status` as last written (or as loaded)."""
    pending_event_ts: Any = None
    """Worker timestamp of the oldest event applied but not yet written (lag metric)."""
    created: str = ""
    """`metadata.creationTimestamp` (RFC 3339, so that it sorts as text)."""
    own_statuses: deque[str] = field(default_factory=lambda: deque(maxlen=16))
    """The statuses we wrote (or loaded) lately, as canonical JSON: a watch event that
    carries one of them is ours, even when it arrives late."""
    written_at: float = 0.0
    """Monotonic time of our last accepted status patch."""
    races: int = 0
    """Patches in a row whose response still differed from the rendered status."""
    statefulset_generation: int | None = None
    """`metadata.generation` of the StatefulSet after our last write: a higher one means
    someone else changed its spec."""
    applying: int = 0
    """StatefulSet writes in flight (their watch events are not drift)."""
    pod: tuple[str, int] | None = None
    """(uid, restartCount) of the session pod's worker container when last seen."""

    def remember_written(self, status: dict[str, Any], *, ours: bool = True) -> None:
        """What the API server holds now (`ours`: written or loaded by us)."""
        self.written = status
        if ours:
            self.own_statuses.append(canonical(status))
            self.written_at = time.monotonic()

    @property
    def key(self) -> Key:
        return (self.namespace, self.name)

    @property
    def pod_name(self) -> str:
        return f"{self.name}-0"

    @property
    def suspended(self) -> bool:
        return self.spec.suspend

    @property
    def deletion_policy(self) -> DeletionPolicy:
        return self.spec.deletion_policy

    def resource(self) -> SalonSession:
        """The SalonSession as last seen (what the StatefulSet is built from)."""
        return SalonSession(name=self.name, namespace=self.namespace, uid=self.uid,
                            generation=self.generation, created=self.created,
                            deleting=self.deleting, spec=self.spec)

    @property
    def active(self) -> bool:
        """A worker is expected to run (so pings and heartbeats are meaningful)."""
        return self.model.applied and not self.suspended and not self.deleting

    def ref(self) -> dict[str, str]:
        return session_ref(self.namespace, self.name, self.uid)


def canonical(status: dict[str, Any]) -> str:
    return json.dumps(status, sort_keys=True, separators=(",", ":"))


def session_ref(namespace: str, name: str, uid: str) -> dict[str, str]:
    """A SalonSession as an Event's `involvedObject`."""
    return {"apiVersion": API_VERSION, "kind": KIND, "name": name, "namespace": namespace,
            "uid": uid}


class Registry:
    def __init__(self, on_new: Callable[[Session], None] | None = None,
                 horizon: Horizon | None = None) -> None:
        self._horizon = horizon or Horizon()
        self._sessions: dict[Key, Session] = {}
        self.owners = CompanyOwners()
        self._on_new = on_new

    def __len__(self) -> int:
        return len(self._sessions)

    def __iter__(self) -> Iterator[Session]:
        return iter(list(self._sessions.values()))

    def get(self, key: Key) -> Session | None:
        return self._sessions.get(key)

    # ---- ownership (`operator.ownership`), named here for the registry's readers ----------
    def owner(self, company_id: str) -> Session | None:
        return self.owners.owner(company_id)

    def is_owner(self, session: Session) -> bool:
        return self.owners.is_owner(session)

    @property
    def on_owner_change(self) -> OwnerChange | None:
        return self.owners.on_change

    @on_owner_change.setter
    def on_owner_change(self, callback: OwnerChange | None) -> None:
        self.owners.on_change = callback

    def observe(self, body: Mapping[str, Any]) -> Session | None:
        """Record the latest body of a SalonSession; returns its session (None if the body
        is not a valid SalonSession, which the CRD's validation should make impossible)."""
        resource = SalonSession.from_body(body)
        key = resource.key
        try:
            company = canonical_company_id(resource.spec.company_id)
        except InvalidCompanyId:
            log.warning("SalonSession %s/%s has no valid companyId; ignored", *key)
            return None
        session = self._sessions.get(key)
        if session is not None and session.uid != resource.uid:
            self.forget(key)  # deleted and created again under the same name
            session = None
        if session is None:
            model = SessionModel.from_status(resource.status, resource.generation,
                                             resource.spec.suspend, self._horizon)
            session = Session(namespace=resource.namespace, name=resource.name,
                              uid=resource.uid, company=company, spec=resource.spec,
                              generation=resource.generation, model=model,
                              created=resource.created)
            # what is there (a restart's), as written
            session.remember_written(dict(body.get("status") or {}))
            self._sessions[key] = session
            if self._on_new is not None:
                self._on_new(session)
            self.owners.join(session)
        else:
            session.spec, session.generation = resource.spec, resource.generation
            session.model.generation = resource.generation
        session.deleting = resource.deleting
        return session

    def forget(self, key: Key) -> Session | None:
        session = self._sessions.pop(key, None)
        if session is not None:
            self.owners.leave(session)
        return session
