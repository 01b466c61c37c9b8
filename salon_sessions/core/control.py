"""Control requests to a session's worker over Redis, and their replies.

The API (and `salon-sessions` commands) publish a request on `whatsapp:control:<company_id>`
after subscribing to `whatsapp:control:reply:<company_id>:<id>`; the worker answers there
(the reply channel carries the company so that a session's Redis user may publish only its
own replies):

    {"v": 1, "id": "r1", "company_id": "company_962302", "cmd": "pairing_code",
     "phone": "79686484488"}
    {"v": 1, "id": "r1", "ok": true, "result": {"code": "ABCD1234", "expires_at": "..."}}
    {"v": 1, "id": "r1", "ok": false, "error": {"code": "pairing_code_pending", "message": ...}}

Commands: `pairing_code` (phone: as typed, or the API's `+<E.164>`; the worker reads it with
`core.phone.parse_phone` and its `SALON_DEFAULT_REGION`), `cancel_pairing_code` (the
pending code ends; a no-op when none is pending), `restart` (force), `logout`, `state`,
`renew_link` (the onboarding goes on for another `spec.link.expireAfter`; result `{phase,
expires_at, expire_after_s}`).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from redis.asyncio import Redis

from salon_sessions.core.channels import control_channel, control_reply_channel
from salon_sessions.core.codec import DecodeError, load_json, validate
from salon_sessions.core.company import CompanyId, canonical_company_id
from salon_sessions.core.phone import MAX_INPUT_CHARS

MAX_REQUEST_BYTES = 8 * 1024
RequestId = Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")]


class ControlRequest(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    v: Literal[1] = 1
    id: RequestId
    company_id: CompanyId
    cmd: Literal["pairing_code", "cancel_pairing_code", "restart", "logout", "state", "renew_link"]
    phone: str | None = Field(default=None, min_length=1, max_length=MAX_INPUT_CHARS)
    force: bool = False


class ControlError(Exception):
    def __init__(self, code: str, message: str) -> None:
        self.code = code
        super().__init__(message)


def parse_request(raw: bytes, company_id: str) -> ControlRequest:
    """Validate a request for this worker's company; raises `ControlError`."""
    try:
        req = validate(ControlRequest, load_json(raw, MAX_REQUEST_BYTES))
    except DecodeError as exc:
        raise ControlError(exc.code, str(exc)) from None
    if req.cmd == "pairing_code" and req.phone is None:
        raise ControlError("invalid", "invalid fields: phone (required for pairing_code)")
    if req.company_id != company_id:
        raise ControlError("wrong_company", "the request is for another company")
    return req


def reply_payload(request_id: str, result: dict[str, Any] | None = None,
                  error: ControlError | None = None) -> bytes:
    body: dict[str, Any] = {"v": 1, "id": request_id, "ok": error is None}
    if error is None:
        body["result"] = result or {}
    else:
        body["error"] = {"code": error.code, "message": str(error)}
    return json.dumps(body).encode()


async def request(redis: Redis, company_id: str | int, cmd: str, *, timeout_s: float = 10.0,
                  **params: Any) -> dict[str, Any]:
    """Send one control request and wait for its reply (client side, used by the API).
    Raises `ControlError` with the worker's error, or `TimeoutError` when nobody answers."""
    company = canonical_company_id(company_id)
    request_id = uuid.uuid4().hex
    body = {"v": 1, "id": request_id, "company_id": company, "cmd": cmd, **params}
    pubsub = redis.pubsub()
    try:
        await pubsub.subscribe(control_reply_channel(company, request_id))
        receivers = await redis.publish(control_channel(company), json.dumps(body))
        if not receivers:
            raise ControlError("no_worker", f"no worker is listening for {company}")
        async with asyncio.timeout(timeout_s):
            while True:
                msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                if msg is None:
                    continue
                reply: dict[str, Any] = json.loads(msg["data"])
                if reply.get("ok"):
                    result: dict[str, Any] = reply.get("result", {})
                    return result
                err = reply.get("error", {})
                raise ControlError(str(err.get("code", "error")), str(err.get("message", "")))
    finally:
        await pubsub.aclose()  # type: ignore[no-untyped-call]
