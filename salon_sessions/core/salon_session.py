"""Typed, read-only views of a SalonSession's body: metadata, spec and status.

Why: the resource arrives as nested dicts (from kopf's watch, from a list call, from the
API's own reads), and reading `spec["companyId"]` or `status.get("lastEventSeq")` in every
module repeats the CRD's defaults and its type checks in each of them, a little differently
each time. kopf types its bodies in two layers (a `TypedDict` per raw shape, and read-only
views with typed properties over the dict); these views do the same job one step further:
they are parsed once into frozen dataclasses, with the defaults of
`crds/salonsessions.wa.salonsessions.io.yaml` applied, so that a body written before a
field existed (or a test's minimal body) reads the same as one the API server defaulted.

Parsing never raises on a body the CRD accepted; a field of the wrong type reads as absent
(the API server validated the body, so that happens only to hand-written or forged
statuses, which the operator must survive). `core/resource.py` holds the coordinates and
enums; this module holds the shape.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from salon_sessions.core.bounds import parse_time
from salon_sessions.core.events import LinkMethod
from salon_sessions.core.phone import valid_phone
from salon_sessions.core.resource import (
    DeletionPolicy,
    DriverName,
    Phase,
    expire_after_seconds,
)

PROXY_KEY_DEFAULT: Final = "url"
"""`spec.proxy.secretRef.key`'s default: the Secret key holding the proxy URL."""


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _text(value: object) -> str | None:
    """A non-empty string field, else None (absent, empty or of another type)."""
    return value if isinstance(value, str) and value else None


def _int(value: object) -> int | None:
    return value if isinstance(value, int) else None


# ---- spec ---------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class LinkSpec:
    """`spec.link`: how the phone links (CRD default: `qr`, `30m`)."""

    method: LinkMethod = LinkMethod.QR
    phone_number: str | None = None
    expire_after: str | None = None
    """As written (None: absent, which means the default, 30m)."""

    @property
    def expire_after_s(self) -> int:
        """`expireAfter` in seconds; the default for an absent value and for one the CRD
        would have refused (a reconcile must never crash on it)."""
        try:
            return expire_after_seconds(self.expire_after)
        except ValueError:
            return expire_after_seconds(None)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> LinkSpec:
        try:
            method = LinkMethod(raw.get("method", LinkMethod.QR))
        except ValueError:
            method = LinkMethod.QR
        expire = raw.get("expireAfter")
        return cls(method=method, phone_number=_text(raw.get("phoneNumber")),
                   expire_after=None if expire is None else str(expire))


@dataclass(frozen=True, slots=True)
class ProxyRef:
    """`spec.proxy.secretRef`: the Secret (in the session's namespace) with the proxy URL."""

    name: str
    key: str | None = None
    """As written (None: absent, which means `url`)."""

    @property
    def secret_key(self) -> str:
        return self.key or PROXY_KEY_DEFAULT

    def to_dict(self) -> dict[str, Any]:
        """`spec.proxy` as written (the StatefulSet's roll-out hash is computed over it)."""
        ref: dict[str, Any] = {"name": self.name}
        if self.key is not None:
            ref["key"] = self.key
        return {"secretRef": ref}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> ProxyRef | None:
        ref = _mapping(raw.get("secretRef"))
        name = _text(ref.get("name"))
        if name is None:
            return None
        key = ref.get("key")
        return cls(name=name, key=None if key is None else str(key))


@dataclass(frozen=True, slots=True)
class SalonSessionSpec:
    """`.spec`: the desired session (no secrets)."""

    company_id: str
    """As written (the CRD's pattern makes it canonical; `core.company` reads legacy
    forms)."""
    display_name: str | None = None
    link: LinkSpec = field(default_factory=LinkSpec)
    driver: DriverName = DriverName.NEONIZE
    suspend: bool = False
    deletion_policy: DeletionPolicy = DeletionPolicy.DELETE
    proxy: ProxyRef | None = None
    image: str | None = None
    """The worker image to run instead of the operator's default (None: the default)."""
    resources: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    """`requests`/`limits` -> `cpu`/`memory`, quantities as text (an integer quantity is
    written as its digits)."""

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any] | None) -> SalonSessionSpec:
        raw = _mapping(raw)
        try:
            driver = DriverName(raw.get("driver") or DriverName.NEONIZE)
        except ValueError:
            driver = DriverName.NEONIZE
        try:
            policy = DeletionPolicy(raw.get("deletionPolicy", DeletionPolicy.DELETE))
        except ValueError:
            policy = DeletionPolicy.DELETE
        resources = {kind: {k: str(v) for k, v in _mapping(values).items()}
                     for kind, values in _mapping(raw.get("resources")).items()
                     if isinstance(kind, str)}
        return cls(
            company_id=str(raw.get("companyId", "")),
            display_name=_text(raw.get("displayName")),
            link=LinkSpec.from_dict(_mapping(raw.get("link"))),
            driver=driver,
            suspend=bool(raw.get("suspend", False)),
            deletion_policy=policy,
            proxy=ProxyRef.from_dict(_mapping(raw.get("proxy"))),
            image=_text(raw.get("image")),
            resources=resources,
        )


# ---- status -------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class SalonSessionStatus:
    """`.status` as written (by this operator, or by an older one, or by hand)."""

    # no defaults: built by `from_dict` only, where an absent field reads as None
    phase: Phase | None
    linked: bool | None
    """None: absent (nothing reported yet) or not a boolean."""
    connected: bool
    phone: str | None
    """Digits-only E.164; None when absent or anything else (never a LID)."""
    last_connected_at: datetime | None
    link_expires_at: datetime | None
    last_event_at: datetime | None
    last_event_seq: int | None
    """As written: the caller bounds it (`core.bounds`) before trusting it."""
    pod_name: str | None
    observed_generation: int | None
    served_by: str | None
    """`namespace/name` of the SalonSession that serves this one's company while this one
    is held as a duplicate (`operator.ownership`)."""
    conditions: Mapping[str, Mapping[str, Any]]
    """The conditions by type, as written."""

    def condition(self, type_: str) -> Mapping[str, Any]:
        """The condition of that type as written ({} when there is none)."""
        return self.conditions.get(type_, {})

    def reason(self, type_: str) -> str | None:
        value = self.condition(type_).get("reason")
        return value if isinstance(value, str) else None

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any] | None) -> SalonSessionStatus:
        raw = _mapping(raw)
        try:
            phase: Phase | None = Phase(raw["phase"])
        except (KeyError, ValueError, TypeError):
            phase = None
        linked = raw.get("linked")
        conditions = raw.get("conditions")
        return cls(
            phase=phase,
            linked=linked if isinstance(linked, bool) else None,
            connected=raw.get("connected") is True,
            phone=valid_phone(raw.get("phone")),
            last_connected_at=parse_time(raw.get("lastConnectedAt")),
            link_expires_at=parse_time(raw.get("linkExpiresAt")),
            last_event_at=parse_time(raw.get("lastEventAt")),
            last_event_seq=_int(raw.get("lastEventSeq")),
            pod_name=_text(raw.get("podName")),
            observed_generation=_int(raw.get("observedGeneration")),
            served_by=_text(raw.get("servedBy")),
            conditions={c["type"]: dict(c) for c in
                        (conditions if isinstance(conditions, list) else [])
                        if isinstance(c, Mapping) and isinstance(c.get("type"), str)},
        )


# ---- the whole body -------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class SalonSession:
    """A SalonSession body: the metadata the operator uses, the spec and the status."""

    name: str
    namespace: str
    uid: str = ""
    generation: int = 0
    created: str = ""
    """`metadata.creationTimestamp` (RFC 3339, so that it sorts as text)."""
    deleting: bool = False
    """`metadata.deletionTimestamp` is set (the finalizer runs)."""
    spec: SalonSessionSpec = field(default_factory=lambda: SalonSessionSpec(company_id=""))
    status: SalonSessionStatus = field(
        default_factory=lambda: SalonSessionStatus.from_dict(None))

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> SalonSession:
        meta = _mapping(body.get("metadata"))
        return cls(
            name=str(meta.get("name", "")),
            namespace=str(meta.get("namespace", "")),
            uid=str(meta.get("uid", "")),
            generation=int(meta.get("generation") or 0),
            created=str(meta.get("creationTimestamp") or ""),
            deleting=bool(meta.get("deletionTimestamp")),
            spec=SalonSessionSpec.from_dict(_mapping(body.get("spec"))),
            status=SalonSessionStatus.from_dict(_mapping(body.get("status"))),
        )
