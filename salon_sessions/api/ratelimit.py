"""A fixed-window rate limit kept in Redis, so that every API replica counts together."""

from __future__ import annotations

import time
from collections.abc import Callable

from redis.asyncio import Redis
from redis.exceptions import RedisError

from salon_sessions.api.errors import ApiError
from salon_sessions.api.live import redis_unavailable
from salon_sessions.core.channels import pairing_rate_key


class PairingRateLimit:
    """At most `per_minute` pairing-code requests per company per minute."""

    def __init__(self, redis: Redis, per_minute: int,
                 clock: Callable[[], float] = time.time) -> None:
        self._redis = redis
        self._limit = per_minute
        self._clock = clock

    async def check(self, company_id: str) -> None:
        now = self._clock()
        window = int(now // 60)
        key = pairing_rate_key(company_id, window)
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.incr(key)
                pipe.expire(key, 120)
                count, _ = await pipe.execute()
        except (RedisError, OSError) as exc:
            raise redis_unavailable(exc) from None
        if int(count) > self._limit:
            retry = max(1, int((window + 1) * 60 - now) + 1)
            raise ApiError(429, "rate_limited",
                           f"too many pairing-code requests; at most {self._limit} per minute",
                           field="path.company_id", headers={"Retry-After": str(retry)})
