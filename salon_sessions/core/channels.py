"""Redis channel and key names (the only place they are spelled out).

Every name that carries one company's data carries its company id, so that Redis itself
can confine a session's credentials to its own names (`core.redis_acl` turns the patterns
below into a per-session ACL user). Nothing a worker publishes or writes is shared with
another company: events, pongs, the inbound and results streams are all per company;
consumers subscribe to patterns (`PSUBSCRIBE whatsapp:events:*`) and refuse a payload whose
company differs from its channel's (`channel_company`).
"""

from __future__ import annotations

from typing import Final

from salon_sessions.core.company import canonical_company_id

EVENTS_PREFIX: Final = "whatsapp:events:"
EVENTS_PATTERN: Final = EVENTS_PREFIX + "*"
"""Every session's events (PSUBSCRIBE): the operator, the API, `salon-sessions qr`."""


def events_channel(company_id: str | int) -> str:
    """One session's events (qr, pairing_code, linked, ...): `whatsapp:events:company_1`."""
    return EVENTS_PREFIX + canonical_company_id(company_id)


HEALTH_PING_PREFIX: Final = "whatsapp:health:"
HEALTH_PONG_PREFIX: Final = "whatsapp:health:pong:"
HEALTH_PONG_PATTERN: Final = HEALTH_PONG_PREFIX + "*"
"""Every session's pongs (PSUBSCRIBE): whoever pinged keeps its own correlation ids."""


def health_ping_channel(company_id: str | int) -> str:
    """The session's own ping channel: `whatsapp:health:company_962302`.

    One channel per session: a shared ping channel would deliver every ping to every
    worker (N^2 messages at N sessions).
    """
    return HEALTH_PING_PREFIX + canonical_company_id(company_id)


def health_pong_channel(company_id: str | int) -> str:
    """Where the session's worker answers pings: `whatsapp:health:pong:company_962302`."""
    return HEALTH_PONG_PREFIX + canonical_company_id(company_id)


def channel_company(channel: str) -> str | None:
    """The company part of an events or pong channel, as spelled (not canonicalised: a
    consumer compares it with the payload's canonical id, so `whatsapp:events:962302`
    matches no payload); None for any other channel."""
    for prefix in (HEALTH_PONG_PREFIX, EVENTS_PREFIX):
        if channel.startswith(prefix):
            return channel[len(prefix):]
    return None


SESSION_STATE_PREFIX: Final = "whatsapp:session:"


def session_state_key(company_id: str | int) -> str:
    """Hash with the worker's view of the session, refreshed with a TTL heartbeat."""
    return SESSION_STATE_PREFIX + canonical_company_id(company_id)


LATEST_QR_PREFIX: Final = "whatsapp:qr:"


def standby_key(company_id: str | int, pod: str) -> str:
    """A standby worker's own hash (pod, note, heartbeat) with a TTL: a worker that does not
    hold the session's lock never writes the session's state hash."""
    return f"whatsapp:standby:{canonical_company_id(company_id)}:{pod}"


def latest_qr_key(company_id: str | int) -> str:
    """The latest QR payload, with a short TTL."""
    return LATEST_QR_PREFIX + canonical_company_id(company_id)


LINK_WINDOW_PREFIX: Final = "whatsapp:link:"


def link_window_key(company_id: str | int) -> str:
    """When the session's current onboarding started (`spec.link.expireAfter` counts from
    it); no TTL: it outlives the worker, so that a restarted worker of an expired onboarding
    stays expired. Cleared by a link, rewritten by a renewal."""
    return LINK_WINDOW_PREFIX + canonical_company_id(company_id)


def session_keys(company_id: str | int) -> tuple[str, ...]:
    """Every per-session key; the operator's finalizer deletes these."""
    return (session_state_key(company_id), latest_qr_key(company_id),
            link_window_key(company_id))


CONTROL_PREFIX: Final = "whatsapp:control:"
CONTROL_REPLY_PREFIX: Final = CONTROL_PREFIX + "reply:"


def control_channel(company_id: str | int) -> str:
    """Commands to the session's worker (pairing code, restart, logout, state)."""
    return CONTROL_PREFIX + canonical_company_id(company_id)


def control_reply_channel(company_id: str | int, request_id: str) -> str:
    """Where the worker answers one control request (the caller subscribes first):
    `whatsapp:control:reply:company_1:<request id>`."""
    return f"{CONTROL_REPLY_PREFIX}{canonical_company_id(company_id)}:{request_id}"


def simulator_channel(company_id: str | int) -> str:
    """The simulated phone's actions (scan, enter code, logout, ...): simulator driver only."""
    return f"whatsapp:simulator:{canonical_company_id(company_id)}"


def simulator_sent_key(company_id: str | int) -> str:
    """A list of the messages the simulated WhatsApp delivered (for tests and the demo)."""
    return f"whatsapp:simulator:sent:{canonical_company_id(company_id)}"


def simulator_inbox_key(company_id: str | int) -> str:
    """The simulated WhatsApp server's queue of messages not yet delivered to the session
    (a list; messages sent to the salon while it is offline wait here, in order)."""
    return f"whatsapp:simulator:inbox:{canonical_company_id(company_id)}"


INBOUND_PREFIX: Final = "whatsapp:messages:in:"
RESULTS_PREFIX: Final = "whatsapp:messages:results:"
OUTBOUND_PREFIX: Final = "whatsapp:messages:out:"


def inbound_stream(company_id: str | int) -> str:
    """Inbound messages of one session, for the bot (a Redis Stream: nothing is lost while
    the bot is down): `whatsapp:messages:in:company_1`."""
    return INBOUND_PREFIX + canonical_company_id(company_id)


def results_stream(company_id: str | int) -> str:
    """Results of one session's outbound send commands (sent, duplicate, rejected, failed,
    unknown): `whatsapp:messages:results:company_1`."""
    return RESULTS_PREFIX + canonical_company_id(company_id)


OUTBOUND_GROUP: Final = "workers"


def outbound_stream(company_id: str | int) -> str:
    """Send commands for one session (a Redis Stream read with a consumer group)."""
    return OUTBOUND_PREFIX + canonical_company_id(company_id)


def sent_marker_key(company_id: str | int, idempotency_key: str) -> str:
    """Marks an outbound command as taken (`sending`) and then as sent (message id)."""
    return f"whatsapp:sent:{canonical_company_id(company_id)}:{idempotency_key}"


def inbound_seen_key(company_id: str | int, message_id: str) -> str:
    return f"whatsapp:seen:{canonical_company_id(company_id)}:{message_id}"


def send_pace_key(company_id: str | int) -> str:
    """The session's send pacing (token buckets) and circuit-breaker state (a hash), kept in
    Redis so that a restarted worker does not start with a full burst."""
    return f"whatsapp:pace:{canonical_company_id(company_id)}"


def contacts_key(company_id: str | int) -> str:
    """The phones this session has exchanged messages with (a set): a send to any other
    number is a send to a new contact, paced more strictly."""
    return f"whatsapp:contacts:{canonical_company_id(company_id)}"


API_PREFIX: Final = "whatsapp:api:"
"""The API's own keys and channel (rate-limit counters, self-test)."""

API_SELFTEST_CHANNEL: Final = API_PREFIX + "selftest"
"""The API's own publish->subscribe loop (`/health/pubsub/simple`); nothing else uses it."""


def pairing_rate_key(company_id: str | int, window: int) -> str:
    """Counts one company's pairing-code requests in one rate-limit window (API, with a TTL)."""
    return f"{API_PREFIX}ratelimit:pairing:{canonical_company_id(company_id)}:{window}"


SESSION_STATE_PATTERN: Final = SESSION_STATE_PREFIX + "company_*"
"""Matches every session's state hash (`SCAN`); keep in step with `session_state_key`."""


# ---- what one session's worker may touch (Redis ACL glob patterns) ------------------------
# Glob patterns: a company id is `company_<digits>`, so `company_1:*` never matches
# `company_12:...` and the exact names below never match another company's.

def session_key_patterns(company_id: str | int) -> tuple[str, ...]:
    """Keys the session's worker reads and writes (`~` in its ACL user)."""
    c = canonical_company_id(company_id)
    return (
        session_state_key(c), latest_qr_key(c), outbound_stream(c), sent_marker_key(c, "*"),
        inbound_seen_key(c, "*"), simulator_sent_key(c), simulator_inbox_key(c),
        standby_key(c, "*"), send_pace_key(c), contacts_key(c), link_window_key(c),
        # the worker appends to these and trims what every consumer group of the bot has
        # acknowledged: XINFO/XPENDING/XTRIM need read access (its own company's messages)
        inbound_stream(c), results_stream(c),
    )


def session_publish_channels(company_id: str | int) -> tuple[str, ...]:
    """Channels the worker publishes on: its events, pongs and control replies."""
    c = canonical_company_id(company_id)
    return events_channel(c), health_pong_channel(c), control_reply_channel(c, "*")


def session_subscribe_channels(company_id: str | int) -> tuple[str, ...]:
    """Channels the worker listens to: its pings, control requests, simulated phone."""
    c = canonical_company_id(company_id)
    return health_ping_channel(c), control_channel(c), simulator_channel(c)
