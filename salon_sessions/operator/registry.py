"""The SalonSessions this operator knows, by resource and by company id.

Kept up to date from kopf's watch (`observe`, `forget`); the events consumer, the heartbeat
reconciler, the pinger and the status writer all read from here. A session's model is
created from its written `.status` the first time it is seen, and is authoritative after
that (the operator is the only writer of `.status`).

One company, one session: when several SalonSessions name the same company, the oldest
(creation time, then namespace/name) owns it and the others are duplicates that run
nothing (`owner`). When the owner changes (an older one appears, or the owner is
forgotten), `on_owner_change(old, new)` is called so that both are reconciled again.
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
from salon_sessions.operator.model import SessionModel

log = logging.getLogger(__name__)
Key = tuple[str, str]  # (namespace, name)


@dataclass
class Session:
    namespace: str
    name: str
    uid: str
    company: str
    spec: dict[str, Any]
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
        return bool(self.spec.get("suspend", False))

    @property
    def deletion_policy(self) -> DeletionPolicy:
        try:
            return DeletionPolicy(self.spec.get("deletionPolicy", DeletionPolicy.DELETE))
        except ValueError:
            return DeletionPolicy.DELETE

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
        self._by_company: dict[str, set[Key]] = {}
        self._on_new = on_new
        self.on_owner_change: Callable[[Session, Session | None], None] | None = None

    def __len__(self) -> int:
        return len(self._sessions)

    def __iter__(self) -> Iterator[Session]:
        return iter(list(self._sessions.values()))

    def get(self, key: Key) -> Session | None:
        return self._sessions.get(key)

    def owner(self, company_id: str) -> Session | None:
        """The session that serves `company_id`: the oldest of those that name it."""
        keys = self._by_company.get(company_id)
        if not keys:
            return None
        return min((self._sessions[k] for k in keys),
                   key=lambda s: (s.created or "~", s.namespace, s.name))

    def is_owner(self, session: Session) -> bool:
        return self.owner(session.company) is session

    def _owner_changed(self, old: Session | None, company: str) -> None:
        new = self.owner(company)
        if old is not None and new is not old and self.on_owner_change is not None:
            self.on_owner_change(old, new)

    def observe(self, body: Mapping[str, Any]) -> Session | None:
        """Record the latest body of a SalonSession; returns its session (None if the body
        is not a valid SalonSession, which the CRD's validation should make impossible)."""
        meta = body.get("metadata", {})
        spec = dict(body.get("spec") or {})
        key = (str(meta.get("namespace", "")), str(meta.get("name", "")))
        uid = str(meta.get("uid", ""))
        try:
            company = canonical_company_id(str(spec.get("companyId", "")))
        except InvalidCompanyId:
            log.warning("SalonSession %s/%s has no valid companyId; ignored", *key)
            return None
        generation = int(meta.get("generation") or 0)
        session = self._sessions.get(key)
        if session is not None and session.uid != uid:
            self.forget(key)  # deleted and created again under the same name
            session = None
        if session is None:
            before = self.owner(company)
            status = body.get("status") or {}
            model = SessionModel.from_status(dict(status), generation,
                                             bool(spec.get("suspend", False)), self._horizon)
            session = Session(namespace=key[0], name=key[1], uid=uid, company=company,
                              spec=spec, generation=generation, model=model,
                              created=str(meta.get("creationTimestamp") or ""))
            session.remember_written(dict(status))  # what is there (a restart's)
            self._sessions[key] = session
            self._by_company.setdefault(company, set()).add(key)
            if self._on_new is not None:
                self._on_new(session)
            self._owner_changed(before, company)
        else:
            session.spec, session.generation = spec, generation
            session.model.generation = generation
        session.deleting = bool(meta.get("deletionTimestamp"))
        return session

    def forget(self, key: Key) -> Session | None:
        session = self._sessions.get(key)
        before = self.owner(session.company) if session is not None else None
        self._sessions.pop(key, None)
        if session is not None:
            keys = self._by_company.get(session.company)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._by_company[session.company]
            self._owner_changed(before, session.company)
        return session
