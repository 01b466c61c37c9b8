"""One company, one session: which SalonSession serves a company, and the duplicates.

Why one module: a company's WhatsApp device, credentials and Redis keys can belong to one
worker only, yet nothing stops two SalonSessions (in two namespaces, say) from naming the
same company. The rule, and every decision taken on it, lives here:

- **who owns**: the oldest of the SalonSessions that name a company (creation time, then
  namespace/name) serves it (`owner`, `is_owner`); the others are *held* as duplicates
  and run nothing. The index is kept by the registry (`join` on its first sight of a
  session, `leave` when it forgets one); when a company's owner changes (an older one
  appears, or the owner goes), `on_change(old, new)` is called so that both are
  reconciled again (the next oldest takes over).
- **the held state** (`hold`, `release`): a duplicate's model records `duplicate_of`,
  which the status shows as `.status.servedBy` (the owner's `namespace/name`) beside
  phase `Failed` and the `DuplicateCompany` conditions. That field is the state that
  survives an operator restart: `SessionModel.from_status` reads it back (a status
  written by an operator from before the field existed is recognised by its conditions'
  reason, `DuplicateCompany`, with the owner unknown until the next reconcile). The
  operator recomputes the owner from the registry anyway; the field keeps a held
  duplicate from looking, between a restart and its first reconcile, like a session whose
  worker should answer pings and heartbeats.
- **what a duplicate may touch**: nothing of the company's (`reconciler`: no
  StatefulSet, no credentials; its deletion leaves the company's credentials and Redis
  keys alone; `consumer`: events of the company are the owner's; `tenancy`: only
  owners' Redis users are restored).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

from salon_sessions.operator.recorder import EventRecorder

if TYPE_CHECKING:
    from salon_sessions.operator.registry import Key, Session

log = logging.getLogger(__name__)
UNKNOWN_OWNER: Final = "another SalonSession"
"""`duplicate_of` when the owner is not known (a status from before `servedBy`)."""
DUPLICATE_REASON: Final = "DuplicateCompany"
"""The conditions' reason (and the Warning Event's) of a held duplicate."""

OwnerChange = Callable[["Session", "Session | None"], None]


def ref(session: Session) -> str:
    """How a status, an Event and a log line name a SalonSession: `namespace/name`."""
    return f"{session.namespace}/{session.name}"


class CompanyOwners:
    """The company index of the registry's sessions and the held duplicates' state."""

    def __init__(self) -> None:
        self._by_company: dict[str, dict[Key, Session]] = {}
        self.on_change: OwnerChange | None = None

    # ---- who owns ---------------------------------------------------------------------------
    def owner(self, company_id: str) -> Session | None:
        """The session that serves `company_id`: the oldest of those that name it."""
        sessions = self._by_company.get(company_id)
        if not sessions:
            return None
        return min(sessions.values(), key=lambda s: (s.created or "~", s.namespace, s.name))

    def is_owner(self, session: Session) -> bool:
        return self.owner(session.company) is session

    def owner_ref(self, company_id: str) -> str:
        owner = self.owner(company_id)
        return ref(owner) if owner is not None else UNKNOWN_OWNER

    def join(self, session: Session) -> None:
        """The registry saw `session` for the first time."""
        before = self.owner(session.company)
        self._by_company.setdefault(session.company, {})[session.key] = session
        self._changed(before, session.company)

    def leave(self, session: Session) -> None:
        """The registry forgot `session` (deleted, or replaced under its name)."""
        before = self.owner(session.company)
        sessions = self._by_company.get(session.company)
        if sessions is not None:
            sessions.pop(session.key, None)
            if not sessions:
                del self._by_company[session.company]
        self._changed(before, session.company)

    def _changed(self, old: Session | None, company: str) -> None:
        new = self.owner(company)
        if old is not None and new is not old and self.on_change is not None:
            self.on_change(old, new)

    # ---- the held state ---------------------------------------------------------------------
    def hold(self, session: Session, recorder: EventRecorder) -> None:
        """`session` is not its company's owner: record it (a Warning Event and a log line
        the first time, or when the owner changes) and render it as a duplicate. The
        caller has stopped whatever it ran (StatefulSet, credentials)."""
        owner = self.owner_ref(session.company)
        if session.model.duplicate_of != owner:
            log.warning("SalonSession %s/%s names %s, which %s serves already: it runs "
                        "nothing", session.namespace, session.name, session.company,
                        owner, extra={"company_id": session.company})
            recorder.emit(session.ref(), "Warning", DUPLICATE_REASON,
                          f"{session.company} is served by SalonSession {owner}; "
                          f"this one runs no worker")
        session.model.hold_as_duplicate(owner, session.generation)
        session.model.refresh()

    def release(self, session: Session) -> None:
        """`session` owns its company (now): it is no duplicate any more."""
        if session.model.duplicate_of is None:
            return
        log.info("SalonSession %s/%s now serves %s", session.namespace, session.name,
                 session.company, extra={"company_id": session.company})
        session.model.release_duplicate()

    def kept_for_owner(self, session: Session) -> str | None:
        """Why the deletion of `session` must leave the company's credentials and Redis
        keys alone (a duplicate: they are the owner's), or None when it owns them."""
        if self.is_owner(session):
            return None
        owner = self.owner(session.company)
        served_by = ref(owner) if owner is not None else "another session"
        return (f"a duplicate of {served_by}: the company's credentials and Redis keys are "
                f"that session's and stay")
