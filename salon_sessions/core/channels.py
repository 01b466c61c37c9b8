"""Redis channel and key names (the only place they are spelled out)."""

from __future__ import annotations

from typing import Final

from salon_sessions.core.company import canonical_company_id

EVENTS_CHANNEL: Final = "whatsapp:events"
"""Every session event (qr, pairing_code, linked, ...), published by the workers."""

HEALTH_PONG_CHANNEL: Final = "whatsapp:health"
"""Pongs from every worker to whoever pinged (the API or the operator)."""

HEALTH_PING_PREFIX: Final = "whatsapp:health:"


def health_ping_channel(company_id: str | int) -> str:
    """The session's own ping channel: `whatsapp:health:company_962302`.

    One channel per session: a shared ping channel would deliver every ping to every
    worker (N^2 messages at N sessions).
    """
    return HEALTH_PING_PREFIX + canonical_company_id(company_id)


def session_state_key(company_id: str | int) -> str:
    """Hash with the worker's view of the session, refreshed with a TTL heartbeat."""
    return f"whatsapp:session:{canonical_company_id(company_id)}"


def standby_key(company_id: str | int, pod: str) -> str:
    """A standby worker's own hash (pod, note, heartbeat) with a TTL: a worker that does not
    hold the session's lock never writes the session's state hash."""
    return f"whatsapp:standby:{canonical_company_id(company_id)}:{pod}"


def latest_qr_key(company_id: str | int) -> str:
    """The latest QR payload, with a short TTL."""
    return f"whatsapp:qr:{canonical_company_id(company_id)}"


def session_keys(company_id: str | int) -> tuple[str, ...]:
    """Every per-session key; the operator's finalizer deletes these."""
    return (session_state_key(company_id), latest_qr_key(company_id))


CONTROL_PREFIX: Final = "whatsapp:control:"


def control_channel(company_id: str | int) -> str:
    """Commands to the session's worker (pairing code, restart, logout, state)."""
    return CONTROL_PREFIX + canonical_company_id(company_id)


def control_reply_channel(request_id: str) -> str:
    """Where the worker answers one control request (the caller subscribes first)."""
    return f"{CONTROL_PREFIX}reply:{request_id}"


def simulator_channel(company_id: str | int) -> str:
    """The simulated phone's actions (scan, enter code, logout, ...): simulator driver only."""
    return f"whatsapp:simulator:{canonical_company_id(company_id)}"


def simulator_sent_key(company_id: str | int) -> str:
    """A list of the messages the simulated WhatsApp delivered (for tests and the demo)."""
    return f"whatsapp:simulator:sent:{canonical_company_id(company_id)}"


INBOUND_STREAM: Final = "whatsapp:messages:in"
"""Inbound messages of every session, for the bot (a Redis Stream: nothing is lost while the
bot is down)."""

OUTBOUND_RESULTS_STREAM: Final = "whatsapp:messages:results"
"""Results of outbound send commands (sent, duplicate, rejected, failed, unknown)."""

OUTBOUND_GROUP: Final = "workers"


def outbound_stream(company_id: str | int) -> str:
    """Send commands for one session (a Redis Stream read with a consumer group)."""
    return f"whatsapp:messages:out:{canonical_company_id(company_id)}"


def sent_marker_key(company_id: str | int, idempotency_key: str) -> str:
    """Marks an outbound command as taken (`sending`) and then as sent (message id)."""
    return f"whatsapp:sent:{canonical_company_id(company_id)}:{idempotency_key}"


def inbound_seen_key(company_id: str | int, message_id: str) -> str:
    return f"whatsapp:seen:{canonical_company_id(company_id)}:{message_id}"


API_SELFTEST_CHANNEL: Final = "whatsapp:api:selftest"
"""The API's own publish->subscribe loop (`/health/pubsub/simple`); nothing else uses it."""


def pairing_rate_key(company_id: str | int, window: int) -> str:
    """Counts one company's pairing-code requests in one rate-limit window (API, with a TTL)."""
    return f"whatsapp:api:ratelimit:pairing:{canonical_company_id(company_id)}:{window}"


SESSION_STATE_PATTERN: Final = "whatsapp:session:company_*"
"""Matches every session's state hash (`SCAN`); keep in step with `session_state_key`."""
