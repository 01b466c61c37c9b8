"""The one way to build a Redis client, so that retries live in one layer (ours)."""

from __future__ import annotations

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from salon_sessions.core.settings import SecretUrl


def connect_redis(url: SecretUrl | str, *, socket_timeout_s: float = 5.0,
                  connect_timeout_s: float = 2.0, health_check_interval_s: int = 15) -> Redis:
    """A client without redis-py's own retries (the publisher and the subscriber retry with
    their own bounded policies); the password is only read here."""
    raw = url.get_secret_value() if isinstance(url, SecretUrl) else url
    return Redis.from_url(
        raw,
        retry=Retry(NoBackoff(), 0),
        socket_timeout=socket_timeout_s,
        socket_connect_timeout=connect_timeout_s,
        health_check_interval=health_check_interval_s,
    )
