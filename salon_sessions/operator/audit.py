"""The safety net of the level-triggered status: every `interval_s`, list the SalonSessions
and hand each `.status` to the status writer, which re-asserts the rendered status where
someone else changed it.

The watch delivers a foreign edit within moments and the writer corrects it within its
coalescing window; this audit covers what a watch can miss (a dropped connection before
kopf re-lists, a bug). One paged LIST per watched namespace per interval (500 per page):
at 1,000 sessions, two requests every two minutes by default, and patches only for the
sessions that really differ.
"""

from __future__ import annotations

import asyncio
import logging
import time

from salon_sessions.operator.kube import Kube, KubeError
from salon_sessions.operator.registry import Registry
from salon_sessions.operator.status_writer import StatusWriter

log = logging.getLogger(__name__)


class StatusAudit:
    def __init__(self, kube: Kube, registry: Registry, writer: StatusWriter,
                 namespaces: list[str], *, interval_s: float = 120.0) -> None:
        self._kube = kube
        self._registry = registry
        self._writer = writer
        self._namespaces: list[str | None] = list(namespaces) or [None]
        self._interval = interval_s

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.audit()
            except KubeError as exc:
                log.warning("status audit failed: %s", exc)

    async def audit(self) -> int:
        """Compare every known SalonSession's status with ours; the number re-asserted."""
        foreign = 0
        for namespace in self._namespaces:
            listed_at = time.monotonic()
            for item in await self._kube.list_sessions(namespace):
                meta = item.get("metadata") or {}
                session = self._registry.get((str(meta.get("namespace", "")),
                                              str(meta.get("name", ""))))
                if session is None or session.uid != meta.get("uid") or session.deleting:
                    continue
                foreign += self._writer.observed(session, item.get("status") or {},
                                                 listed_at)
        return foreign
