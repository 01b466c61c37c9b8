"""Kubernetes Events about SalonSessions (phase changes, cleanup), posted in the background
so that they never delay a status patch. The queue is bounded: under a storm, Events are
dropped and counted rather than piling up. Messages never carry secrets or phone numbers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

from salon_sessions.operator.kube import Kube, KubeError
from salon_sessions.operator.metrics import OperatorMetrics

log = logging.getLogger(__name__)
COMPONENT: Final = "salon-sessions-operator"


@dataclass(frozen=True, slots=True)
class KubeEvent:
    ref: dict[str, str]
    type: str  # Normal | Warning
    reason: str
    message: str
    at: datetime


class EventRecorder:
    def __init__(self, kube: Kube, metrics: OperatorMetrics, identity: str, *,
                 capacity: int = 10_000, workers: int = 4) -> None:
        self._kube = kube
        self._metrics = metrics
        self._identity = identity[:128]
        self._queue: asyncio.Queue[KubeEvent] = asyncio.Queue(capacity)
        self._workers = workers

    def emit(self, ref: dict[str, str], type_: str, reason: str, message: str,
             at: datetime | None = None) -> None:
        try:
            self._queue.put_nowait(KubeEvent(ref, type_, reason, message[:1024],
                                             at or datetime.now(UTC)))
        except asyncio.QueueFull:
            self._metrics.k8s_events.labels("dropped").inc()

    async def post(self, event: KubeEvent) -> None:
        """Post one Event now (used directly where the Event must exist before going on)."""
        when = event.at.astimezone(UTC)
        stamp = when.strftime("%Y-%m-%dT%H:%M:%SZ")
        body = {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": f"{event.ref['name']}.{uuid.uuid4().hex[:16]}",
                         "namespace": event.ref["namespace"]},
            "involvedObject": event.ref,
            "reason": event.reason, "message": event.message, "type": event.type,
            "source": {"component": COMPONENT},
            "reportingComponent": COMPONENT, "reportingInstance": self._identity,
            "firstTimestamp": stamp, "lastTimestamp": stamp, "count": 1,
        }
        try:
            await self._kube.create_event(event.ref["namespace"], body)
            self._metrics.k8s_events.labels("posted").inc()
        except KubeError as exc:
            self._metrics.k8s_events.labels("failed").inc()
            log.warning("event %s for %s/%s not posted: %s", event.reason,
                        event.ref["namespace"], event.ref["name"], exc)

    async def run(self) -> None:
        async def worker() -> None:
            while True:
                event = await self._queue.get()
                try:
                    await self.post(event)
                finally:
                    self._queue.task_done()

        tasks = [asyncio.create_task(worker(), name=f"events-{i}")
                 for i in range(self._workers)]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(*tasks, return_exceptions=True)

    async def drain(self, timeout_s: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._queue.join(), timeout_s)
