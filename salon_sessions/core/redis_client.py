"""The one way to build a Redis client, so that retries live in one layer (ours)."""

from __future__ import annotations

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from salon_sessions.core.settings import SecretUrl


def connect_redis(url: SecretUrl | str, *, socket_timeout_s: float = 5.0,
                  connect_timeout_s: float = 2.0, health_check_interval_s: int = 15,
                  max_connections: int = 100, pool_timeout_s: float = 5.0,
                  client_name: str | None = None) -> Redis:
    """A client without redis-py's own retries (the publisher and the subscriber retry with
    their own bounded policies); the password is only read here.

    The pool holds at most `max_connections`; when all are in use a command waits up to
    `pool_timeout_s` for one instead of failing at once (redis-py's default pool raises
    `MaxConnectionsError`: a burst of WebSocket clients reconnecting after an API restart
    must queue for a moment, not be refused). `client_name` (`CLIENT SETNAME`) says in
    `CLIENT LIST` which process and session a connection belongs to, and what for."""
    raw = url.get_secret_value() if isinstance(url, SecretUrl) else url
    pool = BlockingConnectionPool.from_url(
        raw,
        max_connections=max_connections,
        timeout=pool_timeout_s,
        retry=Retry(NoBackoff(), 0),
        socket_timeout=socket_timeout_s,
        socket_connect_timeout=connect_timeout_s,
        health_check_interval=health_check_interval_s,
        client_name=client_name,
    )
    return Redis.from_pool(pool)


def as_text(value: bytes | str, errors: str = "strict") -> str:
    """A Redis reply (bytes: clients are built without `decode_responses`) as text;
    `errors="replace"` for what anybody with write access could have stored."""
    return value.decode(errors=errors) if isinstance(value, bytes) else value


REDIS_ERRORS: tuple[type[BaseException], ...] = (RedisError, TimeoutError, OSError)
"""Anything a Redis call may raise when Redis is down, slow or refuses (for loops that log
and try again later rather than fail)."""
