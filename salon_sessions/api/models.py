"""Request and response bodies of the API (OpenAPI documents them with examples)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
)

from salon_sessions.api.errors import ApiError
from salon_sessions.core.company import CompanyId
from salon_sessions.core.display_name import DisplayName
from salon_sessions.core.events import LinkMethod, PasskeyStage
from salon_sessions.core.phone import MAX_INPUT_CHARS, PHONE_PATTERN, InvalidPhone, parse_phone
from salon_sessions.core.resource import DriverName, Phase
from salon_sessions.core.state_hash import PASSKEY_CODE_PATTERN, REASON_PATTERN

COMPANY_EXAMPLE = "company_962302"
PHONE_INPUT = Annotated[str, Field(
    min_length=1, max_length=MAX_INPUT_CHARS,
    description="the salon's phone number as typed: with its country code (`+7 968 "
    "648-44-88`, `79686484488`; spaces, dashes, dots and brackets allowed), or in the national "
    "format of the server's `SALON_DEFAULT_REGION` (`8 968 648-44-88` with RU). It must be a "
    "valid number (`phonenumbers`); stored as digits-only E.164",
    examples=["+7 968 648-44-88"])]


def read_phone(typed: str, region: str | None, field: str) -> str:
    """Digits-only E.164 of a typed number (`core.phone.parse_phone`), or a 422 naming
    `field` whose message says the expected form (never the input)."""
    try:
        return parse_phone(typed, region)
    except InvalidPhone as exc:
        raise ApiError(422, "invalid", f"invalid request: {field}: invalid value: {exc.why}",
                       field=field) from None


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)


class SessionCreate(_In):
    """Create (or get, if it exists) the SalonSession of a company."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"company_id": "962302", "display_name": "Salon Aurora", "link_method": "qr"},
        {"company_id": "company_962303", "link_method": "pairingCode",
         "phone_number": "+7 968 648-44-88", "driver": "simulator"},
    ]})

    company_id: CompanyId = Field(
        description="company_<digits>; the legacy bare number (962302) is accepted",
        examples=[COMPANY_EXAMPLE, "962302"])
    display_name: DisplayName | None = Field(default=None,
                                             description="shown on the onboarding page")
    link_method: LinkMethod = Field(default=LinkMethod.QR,
                                    description="qr (default) or pairingCode")
    phone_number: PHONE_INPUT | None = Field(
        default=None, description="required for pairingCode; read like the pairing-code "
        "call's `phone`, stored as digits-only E.164", examples=["79686484488"])
    driver: DriverName | None = Field(
        default=None, description="neonize (real WhatsApp) or simulator; default from the "
        "server's configuration")


class SpecView(BaseModel):
    display_name: str | None = None
    link_method: str = "qr"
    phone_number: str | None = None
    link_expire_after: str | None = Field(default=None, description=(
        "spec.link.expireAfter: how long an onboarding waits for a link (30m, 2h, ...)"))
    driver: str | None = None
    suspend: bool = False


class ResourceStatus(BaseModel):
    """The operator's `.status` of the SalonSession (empty until the operator runs)."""

    model_config = ConfigDict(extra="allow")

    phase: str | None = None
    linked: bool | None = None
    connected: bool | None = None
    phone: str | None = None
    podName: str | None = None
    lastEventAt: str | None = None
    linkExpiresAt: str | None = None


class LiveState(BaseModel):
    """The worker's own view, from its Redis state hash (refreshed by a heartbeat): read by
    `core.state_hash`, which already dropped a reason, code or number of the wrong shape."""

    phase: Phase | None = None
    linked: bool = False
    connected: bool = False
    phone: str | None = None
    pairing_code_pending: bool = False
    pairing_code_expires_at: datetime | None = None
    pairing_code_phone: str | None = Field(
        default=None, pattern=PHONE_PATTERN, description=(
            "the number (digits-only E.164) the pending code was issued for"))
    last_error: str | None = None
    reason: str | None = Field(default=None, pattern=REASON_PATTERN, description=(
        "WhatsApp's reason for the current state (`core.whatsapp_reasons` names): why the "
        "device was logged out (`logged_out`, `locked`, `banned`, ...; kept until it links "
        "again), the ban or refusal that keeps the socket closed (`sent_to_too_many_people`, "
        "`service_unavailable`, `stream_replaced`, `code_<n>`), or `passkey_required`"),
        examples=["banned"])
    will_retry: bool | None = Field(default=None, description=(
        "after a ban or refusal: whether the worker reconnects by itself"))
    retry_at: datetime | None = Field(default=None, description=(
        "when it does, if WhatsApp said (the end of a temporary ban)"))
    passkey_stage: PasskeyStage | None = Field(default=None, description=(
        "WhatsApp waits for the account's passkey (phase PasskeyRequired)"))
    passkey_code: str | None = Field(default=None, pattern=PASSKEY_CODE_PATTERN, description=(
        "the code the phone must show (confirmation stage)"))
    link_expires_at: datetime | None = Field(default=None, description=(
        "while no device is linked: when the onboarding ends (`spec.link.expireAfter` after "
        "it started or was renewed); in phase LinkExpired, when it ended"))
    pod: str | None = None
    lock: str | None = None
    heartbeat_at: datetime | None = None
    updated_at: datetime | None = None
    seq: int | None = Field(default=None, ge=0, description=(
        "the worker's sequence number when it wrote this state: events with a `seq` up to "
        "this one are already reflected in it"))


class SessionView(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "company_id": COMPANY_EXAMPLE, "name": "company-962302", "namespace": "salons",
        "phase": "AwaitingLink", "linked": False, "connected": False, "phone": None,
        "qr_available": True, "created": False,
        "spec": {"display_name": "Salon Aurora", "link_method": "qr", "phone_number": None,
                 "driver": "neonize", "suspend": False},
        "status": {"phase": "AwaitingLink", "linked": False, "connected": False},
        "live": {"phase": "AwaitingLink", "linked": False, "connected": False,
                 "pairing_code_pending": False, "pod": "company-962302-0"},
    }]})

    company_id: str
    name: str
    namespace: str
    phase: str | None = Field(description="the live phase when a worker reports, else the "
                              "operator's")
    linked: bool = Field(description="WhatsApp accepted the device")
    connected: bool = Field(description="the WhatsApp socket is open now")
    phone: str | None = None
    qr_available: bool = Field(description="a QR is waiting to be scanned")
    link_expires_at: AwareDatetime | None = Field(default=None, description=(
        "while no device is linked: when the onboarding ends and the worker stops asking "
        "WhatsApp for QR codes and pairing codes (phase LinkExpired once it has; renew it "
        "with POST /v1/sessions/{company_id}/link/renew)"))
    created: bool | None = Field(default=None, description="POST only: created by this call")
    spec: SpecView | None = None
    status: ResourceStatus | None = None
    live: LiveState | None = None


class PairingCodeRequest(_In):
    model_config = ConfigDict(json_schema_extra={"examples": [{"phone": "+7 968 648-44-88"}]})

    phone: PHONE_INPUT


class PairingCodeView(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "code": "ABCD1234", "display": "ABCD-1234", "phone": "79686484488",
        "expires_at": "2025-11-25T10:03:00Z", "expires_in_s": 180}]})

    code: str = Field(pattern=r"^[A-Z0-9]{8}$", description="type it on the phone")
    display: str = Field(description="the code as WhatsApp shows it, XXXX-XXXX")
    phone: str
    expires_at: AwareDatetime
    expires_in_s: int = Field(ge=0)


class RestartView(BaseModel):
    restarting: bool


class LogoutView(BaseModel):
    logged_out: bool


class RenewView(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "phase": "Starting", "expires_at": "2025-11-25T10:30:00Z"}]})

    phase: Phase = Field(description="the worker's phase once renewed (Starting while its "
                         "WhatsApp client starts again after LinkExpired)")
    expires_at: AwareDatetime = Field(description="when this onboarding ends unless a "
                                      "device links first (spec.link.expireAfter from now)")


class TokenRequest(_In):
    model_config = ConfigDict(json_schema_extra={"examples": [{"ttl_s": 86400}]})

    ttl_s: int | None = Field(default=None, ge=60, le=90 * 24 * 3600,
                              description="lifetime; default from the server's configuration")


class TokenView(BaseModel):
    company_id: str
    token: str = Field(description="company-scoped; send as 'Authorization: Bearer'")
    expires_at: AwareDatetime
    onboarding_url: str = Field(description="the link to send to the salon (the token is in "
                                "the fragment, never sent to a server)")


class PubSubHealth(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "ok": True, "company_id": COMPANY_EXAMPLE, "channel": "whatsapp:health:company_962302",
        "latency_ms": 1.2, "worker_phase": "Connected"}]})

    ok: Literal[True] = True
    company_id: str
    channel: str
    latency_ms: float
    worker_phase: str | None = None


class SimpleHealth(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "ok": True, "channel": "whatsapp:api:selftest", "latency_ms": 0.4}]})

    ok: Literal[True] = True
    channel: str
    latency_ms: float


class Check(BaseModel):
    ok: bool
    latency_ms: float | None = None
    error: str | None = None
    message: str | None = None
    """What the check found, in words, when it is not plain health (e.g. Redis without
    persistence, failing or only reported)."""


class Readiness(BaseModel):
    ready: bool
    checks: dict[str, Check]


class Liveness(BaseModel):
    status: Literal["ok"] = "ok"
