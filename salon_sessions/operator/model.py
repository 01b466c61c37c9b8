"""A session's status as the operator sees it: facts in, `.status` out. No I/O.

Facts come from four places, each with its own method: the reconciler (the StatefulSet is
applied, suspended or not), the workers' events (`apply_event`, ordered by `seq`), the
workers' heartbeat hashes (`apply_heartbeat`, ordered by the worker's `updated_at`) and the
health pinger (`set_health`), plus what the operator sees of the pod (`worker_restarted`).
`render()` gives the `.status` object; conditions keep their `lastTransitionTime` until their
status really changes; every phase change is recorded in `transitions`, and every worker
trouble (lock lost, heartbeat lost, pongs missed, worker restarted) in `warnings`, for the
Kubernetes Events.

`WorkerHealthy` says what is wrong with the worker, most serious first: `HeartbeatLost`
(nothing vouches for it), `LockLost` (it said it lost the session lock; cleared when it
reports a connection again, which needs the lock), `WorkerRestarted` (its container
restarted; cleared when the new process answers a health ping), `PongsMissed`.

Ordering: an event is applied only if its `seq` is above `last_event_seq`, so a duplicate or
a late event never moves the status backwards. A heartbeat hash is applied only if the
worker changed its state after the newest fact already applied (`worker_time`). Both are
bounded first by the callers (`core.bounds`): a fact beyond the horizon never gets here,
and a written `lastEventSeq` beyond it is not trusted on reload.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from salon_sessions.core.bounds import Horizon
from salon_sessions.core.events import (
    SENDING_PAUSED,
    ConnectedEvent,
    DisconnectedEvent,
    ErrorEvent,
    Event,
    LinkedEvent,
    LinkExpiredEvent,
    LoggedOutEvent,
    PairingCodeEvent,
    PasskeyRequiredEvent,
    QrEvent,
)
from salon_sessions.core.phone import valid_phone
from salon_sessions.core.resource import ConditionType, Phase
from salon_sessions.core.salon_session import SalonSessionStatus
from salon_sessions.core.state_hash import StateHash
from salon_sessions.core.whatsapp_reasons import (
    LogoutReason,
    condition_reason,
    describe,
    is_name,
)
from salon_sessions.operator.ownership import DUPLICATE_REASON, UNKNOWN_OWNER

WORKER_PHASES: Final = frozenset({
    Phase.STARTING, Phase.AWAITING_LINK, Phase.PAIRING_CODE_ISSUED, Phase.PASSKEY_REQUIRED,
    Phase.LINK_EXPIRED, Phase.CONNECTED, Phase.DISCONNECTED, Phase.LOGGED_OUT,
})
LOGOUT_NAMES: Final = frozenset(str(r) for r in LogoutReason) - {LogoutReason.UNKNOWN}
REFUSALS: Final = frozenset({"temporary_ban", "stream_replaced", "connect_failure"})
"""`error` codes whose WhatsApp reason explains a closed socket (the Connected condition)."""
WARNING_PHASES: Final = frozenset({Phase.FAILED, Phase.LOGGED_OUT})
LAZY_FIELDS: Final = frozenset({"lastEventAt", "lastEventSeq"})
"""Fields whose change alone is written late (a QR rotation must not cost a patch)."""
MAX_TRANSITIONS: Final = 20
LOCK_LOST: Final = "lock_lost"
"""The `error` code a worker publishes when it lost its session lock."""


class Applied(enum.Enum):
    APPLIED = "applied"
    STALE = "stale"
    DUPLICATE = "duplicate"


def utcnow() -> datetime:
    return datetime.now(UTC)


def rfc3339(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True, slots=True)
class Transition:
    old: Phase | None
    new: Phase
    reason: str
    at: datetime


@dataclass(frozen=True, slots=True)
class Trouble:
    """A Warning Event to post: the reason is also the condition reason it shows."""

    reason: str
    message: str
    at: datetime


@dataclass(frozen=True, slots=True)
class Cond:
    status: str  # True | False | Unknown
    reason: str
    message: str


@dataclass
class SessionModel:
    """The operator's view of one SalonSession (authoritative once loaded)."""

    generation: int = 0
    suspended: bool = False
    applied: bool = False
    """The StatefulSet exists for `observed_generation`."""
    observed_generation: int | None = None
    worker_phase: Phase | None = None
    linked: bool | None = None
    connected: bool = False
    phone: str | None = None
    logged_out: bool = False
    code_expires_at: datetime | None = None
    link_expires_at: datetime | None = None
    """While unlinked: when the onboarding ends (ended, in phase LinkExpired)."""
    last_connected_at: datetime | None = None
    last_event_at: datetime | None = None
    last_event_seq: int = 0
    worker_time: datetime | None = None
    """When the worker's newest applied fact happened (event ts or hash updated_at)."""
    heartbeat_lost: bool = False
    lock_lost: str | None = None
    """Why the worker said it lost the session lock (until it reports a connection)."""
    restarted: str | None = None
    """The worker's container restarted (until the new process answers a ping)."""
    healthy: bool | None = None
    health_message: str = ""
    failure: tuple[str, str] | None = None
    cleanup_failure: str | None = None
    duplicate_of: str | None = None
    """`namespace/name` of the SalonSession that owns this one's company (this one runs
    nothing; `.status.servedBy`). Decided by `operator.ownership`, stored here because the
    status shows it."""
    phase: Phase | None = None
    conditions: dict[str, dict[str, Any]] = field(default_factory=dict)
    transitions: list[Transition] = field(default_factory=list)
    warnings: list[Trouble] = field(default_factory=list)
    last_error: str | None = None
    reason: str | None = None
    """WhatsApp's reason (`core.whatsapp_reasons`) for a logout, ban or refusal."""
    reason_message: str = ""

    # ---- loading ----------------------------------------------------------------------
    @classmethod
    def from_status(cls, written: SalonSessionStatus | Mapping[str, Any] | None,
                    generation: int, suspended: bool,
                    horizon: Horizon | None = None) -> SessionModel:
        """Rebuild the model from a written `.status` (operator restart or takeover). A
        `lastEventSeq` beyond the horizon (a forged or hand-written one) is not trusted: it
        would make every real event look stale."""
        status = (written if isinstance(written, SalonSessionStatus)
                  else SalonSessionStatus.from_dict(written))
        model = cls(generation=generation, suspended=suspended)
        phase = status.phase
        model.phase = phase
        model.worker_phase = phase if phase in WORKER_PHASES else None
        model.linked = status.linked
        model.connected = status.connected
        model.phone = status.phone
        model.last_connected_at = status.last_connected_at
        model.link_expires_at = status.link_expires_at
        model.last_event_at = status.last_event_at
        model.worker_time = model.last_event_at
        seq = status.last_event_seq
        trusted = seq is not None and not (horizon or Horizon()).ahead(seq)
        model.last_event_seq = seq if seq is not None and trusted else 0
        model.observed_generation = status.observed_generation
        model.applied = model.observed_generation is not None
        model.conditions = {t: dict(c) for t, c in status.conditions.items()}
        worker = model.conditions.get(ConditionType.WORKER_HEALTHY, {})
        model.healthy = {"True": True, "False": False}.get(str(worker.get("status")))
        if worker.get("reason") == "LockLost":
            model.lock_lost = str(worker.get("message") or "the worker lost its lock")
        elif worker.get("reason") == "WorkerRestarted":
            model.restarted = str(worker.get("message") or "the worker restarted")
        if worker.get("reason") in ("LockLost", "WorkerRestarted", "HeartbeatLost"):
            model.healthy = None  # that condition said nothing about pongs
        connected = model.conditions.get(ConditionType.CONNECTED, {})
        model.heartbeat_lost = connected.get("reason") == "HeartbeatLost"
        model.logged_out = phase is Phase.LOGGED_OUT
        # held as a duplicate (`operator.ownership`): `servedBy`, or, written by an operator
        # from before that field, the Ready condition's reason (the owner is named again at
        # the next reconcile)
        if status.served_by is not None:
            model.duplicate_of = status.served_by
        elif status.reason(ConditionType.READY) == DUPLICATE_REASON:
            model.duplicate_of = UNKNOWN_OWNER
        if model.duplicate_of is not None:
            model.applied = False
        return model

    # ---- facts from the reconciler -----------------------------------------------------
    def reconciled(self, generation: int, suspended: bool) -> None:
        """The StatefulSet now matches `generation` (scaled to 0 when suspended)."""
        resumed = self.suspended and not suspended
        self.generation = generation
        self.observed_generation = generation
        self.suspended = suspended
        self.applied = True
        if suspended:
            # the worker is being stopped: from now on nothing vouches for an open socket
            self.connected = False
            self.healthy = None
            self.health_message = ""
        if resumed:
            # whatever the worker said before the suspension is history now
            self.worker_phase = None
            self.heartbeat_lost = False
            self.failure = None
            self.lock_lost = self.restarted = None

    def hold_as_duplicate(self, owner: str, generation: int) -> None:
        """Another SalonSession owns the company: no worker runs for this one."""
        self.duplicate_of = owner
        self.generation = generation
        self.observed_generation = generation
        self.applied = False
        self.worker_phase = None
        self.linked = None
        self.connected = False
        self.phone = None
        self.healthy = None
        self.health_message = ""
        self.heartbeat_lost = False
        self.failure = None
        self.lock_lost = self.restarted = None

    def release_duplicate(self) -> None:
        """This one owns its company now (the owner went away)."""
        self.duplicate_of = None

    # ---- facts from the workers ---------------------------------------------------------
    def apply_event(self, event: Event, received_at: datetime) -> Applied:
        if event.seq < self.last_event_seq:
            return Applied.STALE
        if event.seq == self.last_event_seq:
            return Applied.DUPLICATE
        self.last_event_seq = event.seq
        self.last_event_at = received_at
        if self.worker_time is None or event.ts > self.worker_time:
            self.worker_time = event.ts
        self.heartbeat_lost = False
        match event:
            case QrEvent(data=qr):
                if qr.link_expires_at is not None and not self.linked:
                    self.link_expires_at = qr.link_expires_at
                code_valid = (self.code_expires_at is not None
                              and self.code_expires_at > event.ts)
                passkey = self.worker_phase is Phase.PASSKEY_REQUIRED
                if not self.linked and not passkey and not (
                        self.worker_phase is Phase.PAIRING_CODE_ISSUED and code_valid):
                    self.worker_phase = Phase.AWAITING_LINK
                    self.linked = False
            case PairingCodeEvent(data=data):
                self.worker_phase = Phase.PAIRING_CODE_ISSUED
                self.code_expires_at = data.expires_at
                self.linked = False
            case LinkedEvent(data=data):
                self.linked, self.logged_out = True, False
                self._set_reason(None)
                self.phone = valid_phone(data.phone) or self.phone
                self.worker_phase = Phase.STARTING
                self.code_expires_at = None
                self.link_expires_at = None
            case LinkExpiredEvent():
                if not self.linked:
                    self.linked = False
                    self.worker_phase = Phase.LINK_EXPIRED
                    self.code_expires_at = None
            case ConnectedEvent():
                self.connected = self.linked = True
                self.logged_out = False
                self.last_connected_at = event.ts
                self.worker_phase = Phase.CONNECTED
                self._set_reason(None)
                self.failure = None
                self.lock_lost = None  # a connection needs the lock
            case DisconnectedEvent():
                self.connected = False
                if self.linked:
                    self.worker_phase = Phase.DISCONNECTED
                    self._set_reason(None)
                elif self.worker_phase is Phase.PASSKEY_REQUIRED:
                    self.worker_phase = Phase.AWAITING_LINK
                    self._set_reason(None)
            case LoggedOutEvent(data=out):
                self.connected = self.linked = False
                self.logged_out = True
                self.phone = None
                self.worker_phase = Phase.LOGGED_OUT
                self._set_reason(out.reason if is_name(out.reason) else "logged_out")
            case PasskeyRequiredEvent():
                if not self.linked:
                    self.linked = False
                    self.worker_phase = Phase.PASSKEY_REQUIRED
                    self._set_reason("passkey_required")
            case ErrorEvent(data=data):
                self.last_error = data.code
                if data.code in REFUSALS and data.reason:
                    self._set_reason(data.reason, data.message)
                if data.fatal:
                    self.failure = (data.code, data.message[:512])
                if data.code == SENDING_PAUSED:
                    self.warnings.append(Trouble("SendingPaused", data.message[:512]
                                                 or "WhatsApp refused a send; sending paused",
                                                 received_at))
                if data.code == LOCK_LOST:
                    self.lose_lock(data.message[:512] or "the worker lost its session lock",
                                   received_at)
            case _:
                pass  # ping/pong never reach here (the consumer routes them)
        return Applied.APPLIED

    def _set_reason(self, reason: str | None, message: str = "") -> None:
        self.reason = reason
        self.reason_message = message[:512] or (describe(reason) if reason else "")

    def apply_heartbeat(self, state: StateHash, now_wall: datetime) -> bool:
        """A present heartbeat hash. True when it was newer than what we knew."""
        self.heartbeat_lost = False
        updated = state.updated_at
        if state.seq is not None:
            # the worker numbers its snapshots in the same sequence as its events
            if state.seq <= self.last_event_seq:
                return False
            self.last_event_seq = state.seq
        elif updated is None or (self.worker_time is not None and updated <= self.worker_time):
            return False
        if updated is not None:
            self.worker_time = updated
        phase = state.phase
        if phase in WORKER_PHASES:
            self.worker_phase = phase
        self.linked = state.linked
        self.connected = state.connected
        if self.connected:
            self.lock_lost = None  # a connection needs the lock
        reason = state.reason or ""
        # a logout reason stays in the hash until the next link, through the QR codes of
        # the new login: the session is still "logged out (banned)", not merely unlinked
        self.logged_out = phase is Phase.LOGGED_OUT or (
            not self.linked and reason in LOGOUT_NAMES)
        if not is_name(reason):
            self._set_reason(None)
        elif reason != self.reason:
            self._set_reason(reason)
        if reason and state.last_error in REFUSALS:
            self.last_error = state.last_error
        self.phone = state.phone if self.linked else None
        if state.last_connected_at is not None:
            self.last_connected_at = state.last_connected_at
        self.code_expires_at = state.pairing_code_expires_at
        self.link_expires_at = None if self.linked else state.link_expires_at
        return True

    def lose_heartbeat(self, message: str, now: datetime | None = None) -> None:
        """The heartbeat expired: nobody vouches for an open socket any more."""
        if not self.heartbeat_lost:
            self.warnings.append(Trouble("HeartbeatLost", message, now or utcnow()))
        self.heartbeat_lost = True
        self.connected = False

    def lose_lock(self, message: str, now: datetime | None = None) -> None:
        """The worker says it lost the session lock (it dropped its connection)."""
        self.lock_lost = message
        self.warnings.append(Trouble("LockLost", message, now or utcnow()))

    def worker_restarted(self, message: str, now: datetime | None = None) -> None:
        """The session pod's container restarted (its restart count grew)."""
        self.restarted = message
        self.lock_lost = None  # that process is gone; the new one starts over
        self.warnings.append(Trouble("WorkerRestarted", message, now or utcnow()))

    def set_health(self, healthy: bool | None, message: str,
                   now: datetime | None = None) -> None:
        if healthy is False and self.healthy is not False:
            self.warnings.append(Trouble("PongsMissed", message, now or utcnow()))
        if healthy:
            self.restarted = None  # the new process answers
        self.healthy, self.health_message = healthy, message

    def cleanup_failed(self, message: str) -> None:
        self.cleanup_failure = message

    # ---- views -------------------------------------------------------------------------
    def compute_phase(self) -> tuple[Phase, str]:
        if self.cleanup_failure is not None:
            return Phase.FAILED, "CleanupFailed"
        if self.duplicate_of is not None:
            return Phase.FAILED, DUPLICATE_REASON
        if self.suspended:
            return Phase.SUSPENDED, "Suspended"
        if not self.applied and self.observed_generation is None:
            return Phase.PENDING, "Accepted"
        if self.failure is not None:
            return Phase.FAILED, "WorkerError"
        if self.heartbeat_lost:
            return (Phase.DISCONNECTED if self.linked else Phase.STARTING), "HeartbeatLost"
        if self.connected:
            return Phase.CONNECTED, "WorkerEvent"
        if self.worker_phase is None:
            return Phase.STARTING, "WorkerStarting"
        if self.worker_phase is Phase.CONNECTED:
            return (Phase.DISCONNECTED if self.linked else Phase.STARTING), "WorkerEvent"
        if self.worker_phase is Phase.LINK_EXPIRED and not self.linked:
            return Phase.LINK_EXPIRED, "LinkExpired"
        if self.worker_phase is Phase.LOGGED_OUT and self.reason:
            # the Warning Event says why: "phase Connected -> LoggedOut (Banned)"
            return self.worker_phase, condition_reason(self.reason)
        return self.worker_phase, "WorkerEvent"

    def _conditions(self) -> dict[str, Cond]:
        if self.duplicate_of is not None:
            message = (f"its company is served by SalonSession {self.duplicate_of}; this one "
                       f"runs no worker (delete it: its deletion leaves the credentials alone)")
            return {ConditionType.LINKED: Cond("Unknown", DUPLICATE_REASON, message),
                    ConditionType.CONNECTED: Cond("False", DUPLICATE_REASON, message),
                    ConditionType.WORKER_HEALTHY: Cond("Unknown", DUPLICATE_REASON, message),
                    ConditionType.READY: Cond("False", DUPLICATE_REASON, message)}
        if self.linked:
            linked = Cond("True", "Linked", "WhatsApp accepted this device")
        elif self.linked is None:
            linked = Cond("Unknown", "NotReported", "the worker has not reported yet")
        elif self.worker_phase is Phase.LINK_EXPIRED:
            when = f" at {rfc3339(self.link_expires_at)}" if self.link_expires_at else ""
            linked = Cond("False", "LinkExpired",
                          f"no device linked within spec.link.expireAfter; the onboarding "
                          f"ended{when} and the worker asks WhatsApp for no more QR codes or "
                          f"pairing codes: renew it (POST /v1/sessions/<company>/link/renew)")
        elif self.logged_out:
            why = self.reason or "logged_out"
            linked = Cond("False", "LoggedOut" if why == "logged_out" else condition_reason(why),
                          self.reason_message or describe(why))
        elif self.worker_phase is Phase.PASSKEY_REQUIRED:
            linked = Cond("False", "PasskeyRequired",
                          "WhatsApp asks for the account's passkey to link this device; "
                          "linking through this system cannot answer it (docs/NEONIZE.md)")
        else:
            linked = Cond("False", "NotLinked", "no device is linked; scan the QR code or "
                                                "enter the pairing code")
        if self.connected:
            connected = Cond("True", "Connected", "the WhatsApp socket is open")
        elif self.suspended:
            connected = Cond("False", "Suspended", "spec.suspend is true")
        elif self.heartbeat_lost:
            connected = Cond("False", "HeartbeatLost",
                             "the worker's heartbeat expired; no worker vouches for a socket")
        elif self.logged_out:
            connected = Cond("False", "LoggedOut", "the device was logged out")
        elif self.reason and self.last_error in REFUSALS:
            refusal = {"temporary_ban": "TemporaryBan",
                       "stream_replaced": "StreamReplaced"}.get(self.last_error)
            connected = Cond("False", refusal or condition_reason(self.reason),
                             self.reason_message or describe(self.reason))
        elif self.linked:
            connected = Cond("False", "Disconnected", "linked, the socket is closed")
        else:
            connected = Cond("False", "NotLinked", "the session is not linked")
        if self.suspended:
            worker = Cond("Unknown", "Suspended", "no worker runs while suspended")
        elif self.restarted is not None:
            # the more specific cause: a heartbeat lost before the restart was the old
            # process's (the Connected condition still says HeartbeatLost until the new one
            # reports)
            worker = Cond("False", "WorkerRestarted", self.restarted)
        elif self.heartbeat_lost:
            worker = Cond("False", "HeartbeatLost",
                          "the worker's heartbeat expired: it is stuck, gone or cut off")
        elif self.lock_lost is not None:
            worker = Cond("False", "LockLost", self.lock_lost)
        elif self.healthy is None:
            worker = Cond("Unknown", "NotProbed", "no health ping answered or missed yet")
        elif self.healthy:
            worker = Cond("True", "PongReceived", "the worker answers health pings")
        else:
            worker = Cond("False", "PongsMissed", self.health_message
                          or "the worker does not answer health pings")
        ready = self._ready(linked, connected, worker)
        return {ConditionType.LINKED: linked, ConditionType.CONNECTED: connected,
                ConditionType.WORKER_HEALTHY: worker, ConditionType.READY: ready}

    def _ready(self, linked: Cond, connected: Cond, worker: Cond) -> Cond:
        if self.cleanup_failure is not None:
            return Cond("False", "CleanupFailed", self.cleanup_failure)
        if self.failure is not None:
            return Cond("False", "WorkerError", f"{self.failure[0]}: {self.failure[1]}")
        for cond, what in ((linked, "Linked"), (connected, "Connected")):
            if cond.status != "True":
                return Cond("False", cond.reason, f"{what}: {cond.message}")
        if worker.status == "False":
            return Cond("False", "WorkerUnhealthy", worker.message)
        return Cond("True", "SessionReady", "linked, connected and the worker is healthy")

    def refresh(self, now: datetime | None = None) -> None:
        """Recompute the phase and the conditions after facts changed."""
        now = now or utcnow()
        phase, reason = self.compute_phase()
        if phase != self.phase:
            if len(self.transitions) < MAX_TRANSITIONS:
                self.transitions.append(Transition(self.phase, phase, reason, now))
            self.phase = phase
        for ctype, cond in self._conditions().items():
            old = self.conditions.get(ctype)
            changed = old is None or old.get("status") != cond.status
            entry: dict[str, Any] = {
                "type": str(ctype), "status": cond.status, "reason": cond.reason,
                "message": cond.message,
                "lastTransitionTime": (rfc3339(now) if changed or old is None
                                       else old.get("lastTransitionTime", rfc3339(now))),
            }
            if self.observed_generation is not None:
                entry["observedGeneration"] = self.observed_generation
            self.conditions[ctype] = entry

    def render(self, pod_name: str) -> dict[str, Any]:
        """The `.status` object (fields that are unknown are absent)."""
        status: dict[str, Any] = {
            "phase": (self.phase or Phase.PENDING).value,
            "connected": self.connected,
            "conditions": [self.conditions[str(t)] for t in ConditionType
                           if str(t) in self.conditions],
        }
        optional: dict[str, Any] = {
            "linked": self.linked,
            "phone": self.phone if self.linked else None,
            "lastConnectedAt": rfc3339(self.last_connected_at) if self.last_connected_at
            else None,
            "linkExpiresAt": rfc3339(self.link_expires_at)
            if self.link_expires_at and not self.linked else None,
            "lastEventAt": rfc3339(self.last_event_at) if self.last_event_at else None,
            "lastEventSeq": self.last_event_seq or None,
            "podName": pod_name if self.applied and not self.suspended else None,
            "observedGeneration": self.observed_generation,
            "servedBy": self.duplicate_of,
        }
        status.update({k: v for k, v in optional.items() if v is not None})
        return status


def status_patch(old: dict[str, Any], new: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """A JSON merge patch from `old` to `new` (removed fields become null) and whether it
    changes anything beyond the lazy fields."""
    patch: dict[str, Any] = {k: v for k, v in new.items() if old.get(k) != v}
    patch.update({k: None for k in old if k not in new})
    urgent = any(k not in LAZY_FIELDS for k in patch)
    return patch, urgent
