"""The one writer of what a worker says about itself in Redis: the session's state hash
(`whatsapp:session:<company>`: one `core.state_hash.StateHash`, the session's state and what
the worker adds around it, written with `to_fields`) as the proven holder of the session's
lock, or its own standby key (`whatsapp:standby:<company>:<pod>`) without it, both with the
heartbeat TTL.

Kept apart from the session's logic so that the holder-only rule is applied in one place:
nothing else writes the hash, and a worker that lost its proof cannot overwrite the
successor's. The operator and the API read the hash, and a missing heartbeat means the
worker is gone.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from redis.asyncio import Redis
from redis.exceptions import RedisError

from salon_sessions.core import channels
from salon_sessions.core.events import EventSource
from salon_sessions.core.settings import WorkerSettings
from salon_sessions.worker.hook import PostConnect
from salon_sessions.worker.lock import SessionLock
from salon_sessions.worker.state import SessionState

log = logging.getLogger(__name__)


@dataclass(eq=False, kw_only=True)
class StateHashWriter:
    """Writes the state hash (holder only) or the standby key, and keeps them alive."""

    redis: Redis
    settings: WorkerSettings
    lock: SessionLock
    state: SessionState
    source: EventSource
    hook: PostConnect
    metrics_port: int
    lock_note: str = "starting"
    """What the worker says of the session lock (set by the lifecycle)."""

    async def write_state(self) -> None:
        """Write the session's state hash - only as the proven holder of its lock."""
        if not self.lock.held:
            return
        s = self.settings
        state = replace(
            self.state.state_hash(), pod=s.pod_name, driver=s.driver.value,
            session=s.session_name, lock=self.lock_note, metrics_port=self.metrics_port,
            seq=self.source.next_seq(), heartbeat_at=datetime.now(UTC),
            post_connect_hook=self.hook.status)
        await self._write_hash(channels.session_state_key(s.company_id), state.to_fields())

    async def write_standby(self) -> None:
        """A worker without the lock says so in its own key, never in the session's hash."""
        s = self.settings
        await self._write_hash(channels.standby_key(s.company_id, s.pod_name), {
            "pod": s.pod_name, "lock": self.lock_note,
            "heartbeat_at": datetime.now(UTC).isoformat()})

    async def _write_hash(self, key: str, fields: dict[str, str]) -> None:
        try:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.hset(key, mapping=fields)  # type: ignore[arg-type]
                pipe.expire(key, self.settings.heartbeat_ttl_s)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            log.warning("%s not written: %s", key, type(exc).__name__,
                        extra={"company_id": self.settings.company_id})

    async def heartbeat(self, holding: Callable[[], bool]) -> None:
        """Every third of the TTL: the state hash as the proven holder, the standby key
        while not `holding` the session at all (between the two: nothing, the holder's
        hash expires on its own if the proof never comes back)."""
        while True:
            await asyncio.sleep(max(1.0, self.settings.heartbeat_ttl_s / 3))
            if self.lock.held:
                await self.write_state()
            elif not holding():
                await self.write_standby()
