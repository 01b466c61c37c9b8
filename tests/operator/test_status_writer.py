"""Coalescing: a burst of events for a session becomes one status patch; failures retry."""

from __future__ import annotations

import asyncio
from typing import Any

from prometheus_client import CollectorRegistry

from salon_sessions.core.events import (
    ConnectedData,
    DisconnectedData,
    ErrorData,
    EventSource,
    QrData,
)
from salon_sessions.operator.kube import KubeError
from salon_sessions.operator.metrics import OperatorMetrics
from salon_sessions.operator.model import utcnow
from salon_sessions.operator.registry import Registry
from salon_sessions.operator.status_writer import StatusWriter

JID = "79686484488:12@s.whatsapp.net"


class FakeKube:
    def __init__(self, fail_first: int = 0) -> None:
        self.patches: list[tuple[str, dict[str, Any]]] = []
        self.events: list[dict[str, Any]] = []
        self.fail_first = fail_first

    async def patch_session_status(self, namespace: str, name: str,
                                   status: dict[str, Any]) -> dict[str, Any]:
        await asyncio.sleep(0.01)
        if self.fail_first:
            self.fail_first -= 1
            raise KubeError(503, "unavailable")
        self.patches.append((name, status))
        return {}

    async def create_event(self, namespace: str, body: dict[str, Any]) -> None:
        self.events.append(body)


def setup(kube: FakeKube, sessions: int) -> tuple[Registry, StatusWriter, Any]:
    from salon_sessions.operator.recorder import EventRecorder

    metrics = OperatorMetrics(CollectorRegistry())
    registry = Registry()
    for i in range(1, sessions + 1):
        s = registry.observe({"metadata": {"namespace": "ns", "name": f"company-{i}",
                                           "uid": f"u{i}", "generation": 1},
                              "spec": {"companyId": f"company_{i}"}})
        assert s is not None
        s.model.reconciled(1, suspended=False)
        s.model.refresh()
    recorder = EventRecorder(kube, metrics, "test")  # type: ignore[arg-type]
    writer = StatusWriter(kube, registry, metrics, recorder,  # type: ignore[arg-type]
                          batch_s=0.05, lazy_s=0.5, concurrency=4, retry_s=0.05)
    return registry, writer, recorder


async def test_a_burst_becomes_one_patch_per_session_with_every_phase_event() -> None:
    kube = FakeKube()
    registry, writer, recorder = setup(kube, sessions=20)
    tasks = [asyncio.create_task(writer.run()), asyncio.create_task(recorder.run())]
    try:
        for session in registry:
            src = EventSource(session.company, session.name)
            for data in (QrData(code="q", timeout_s=20), ConnectedData(jid=JID),
                         DisconnectedData(reason="x"), ConnectedData(jid=JID)):
                session.model.apply_event(src.event(data), utcnow())
                writer.mark(session)
        await asyncio.sleep(0.3)
        await writer.drain(2)
        await recorder.drain(2)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    assert len(kube.patches) == 20
    assert all(p["phase"] == "Connected" and p["connected"] for _, p in kube.patches)
    # every phase change is an Event, even those coalesced away in the status
    reasons = [e["reason"] for e in kube.events if e["involvedObject"]["name"] == "company-1"]
    assert reasons == ["Starting", "AwaitingLink", "Connected", "Disconnected", "Connected"]


async def test_failed_patches_are_retried_and_lazy_fields_wait() -> None:
    kube = FakeKube(fail_first=2)
    registry, writer, _ = setup(kube, sessions=1)
    task = asyncio.create_task(writer.run())
    try:
        session = next(iter(registry))
        writer.mark(session)
        await asyncio.sleep(0.4)
        assert len(kube.patches) == 1  # after two 503s
        # a non-fatal error changes nothing but lastEventAt/lastEventSeq: written late
        session.model.apply_event(EventSource(session.company, session.name).event(
            ErrorData(code="minor", message="x")), utcnow())
        assert writer.mark(session) is False
        await asyncio.sleep(0.2)
        assert len(kube.patches) == 1
        await asyncio.sleep(0.6)
        assert len(kube.patches) == 2
        assert set(kube.patches[1][1]) == {"lastEventAt", "lastEventSeq"}
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
