"""A session's status, put together from its SalonSession and its worker's live state."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from pydantic import ValidationError
from redis.asyncio import Redis

from salon_sessions.api.live import qr_available, read_state
from salon_sessions.api.models import LiveState, ResourceStatus, SessionView, SpecView
from salon_sessions.core.bounds import parse_time
from salon_sessions.core.company import resource_name
from salon_sessions.core.resource import Phase
from salon_sessions.core.salon_session import SalonSessionSpec


def spec_view(obj: dict[str, Any]) -> SpecView:
    """The spec as the operator reads it (`core.salon_session`); the driver as written
    (null when the resource leaves it to the default)."""
    spec = SalonSessionSpec.from_dict(obj.get("spec"))
    return SpecView(display_name=spec.display_name, link_method=spec.link.method.value,
                    phone_number=spec.link.phone_number,
                    link_expire_after=spec.link.expire_after,
                    driver=(obj.get("spec") or {}).get("driver"), suspend=spec.suspend)


def status_view(obj: dict[str, Any]) -> ResourceStatus | None:
    status = obj.get("status")
    if not status:
        return None
    try:
        return ResourceStatus.model_validate(status)
    except ValidationError:
        return None


def compose(company_id: str, namespace: str, obj: dict[str, Any] | None,
            live: LiveState | None, qr: bool, created: bool | None = None) -> SessionView:
    """The live state wins where a worker reports (it is fresher); else the operator's."""
    status = status_view(obj) if obj is not None else None
    expires: datetime | None = None
    if live is not None:
        phase: str | None = live.phase.value if live.phase else None
        linked, connected, phone = live.linked, live.connected, live.phone
        expires = live.link_expires_at
    elif status is not None:
        phase, phone = status.phase, status.phone
        linked, connected = bool(status.linked), bool(status.connected)
        expires = parse_time(status.linkExpiresAt)
    else:
        phase, linked, connected, phone = None, False, False, None
    return SessionView(
        company_id=company_id, name=resource_name(company_id), namespace=namespace,
        phase=phase, linked=linked, connected=connected, phone=phone,
        qr_available=qr and not linked and phase != Phase.LINK_EXPIRED.value,
        link_expires_at=None if linked else expires, created=created,
        spec=spec_view(obj) if obj is not None else None, status=status, live=live)


async def live_view(redis: Redis, company_id: str, namespace: str,
                    obj: dict[str, Any] | None, created: bool | None = None) -> SessionView:
    live = await read_state(redis, company_id)
    qr = await qr_available(redis, company_id)
    return compose(company_id, namespace, obj, live, qr, created)


def snapshot_message(view: SessionView, heartbeat_s: float) -> str:
    """The first WebSocket message: the current state, before any live event."""
    body = {"kind": "snapshot", "heartbeat_s": heartbeat_s,
            "state": view.model_dump(mode="json", exclude={"spec", "status", "created"})}
    return json.dumps(body)
