"""Coalescing: a burst of events for a session becomes one status patch; failures retry.

Runs the status writer and the event recorder against the real kube-apiserver. The client
is the operator's own `Kube`, subclassed only to count its calls (and, in one test, to
answer the first calls with a 503 as an overloaded apiserver would) before the real call.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from kubernetes_asyncio import client, config
from prometheus_client import CollectorRegistry

from devstack.stack import StackInfo
from salon_sessions.core.events import (
    ConnectedData,
    DisconnectedData,
    ErrorData,
    EventSource,
    QrData,
)
from salon_sessions.operator.audit import StatusAudit
from salon_sessions.operator.kube import Kube, KubeError
from salon_sessions.operator.metrics import OperatorMetrics
from salon_sessions.operator.model import status_patch, utcnow
from salon_sessions.operator.recorder import EventRecorder
from salon_sessions.operator.registry import Registry
from salon_sessions.operator.status_writer import StatusWriter
from tests.helpers import get_json

JID = "79686484488:12@s.whatsapp.net"


class RecordingKube(Kube):
    """The real client; it notes each status patch (once the apiserver took it) and Event."""

    def __init__(self, configuration: client.Configuration, fail_first: int = 0) -> None:
        super().__init__(configuration)
        self.patches: list[tuple[str, dict[str, Any]]] = []
        self.events: list[dict[str, Any]] = []
        self.fail_first = fail_first
        self.refused = 0
        self.events_created = 0

    async def patch_session_status(self, namespace: str, name: str,
                                   status: dict[str, Any]) -> dict[str, Any]:
        if self.fail_first:
            self.fail_first -= 1
            self.refused += 1
            raise KubeError(503, "the apiserver is overloaded (injected)")
        result = await super().patch_session_status(namespace, name, status)
        self.patches.append((name, status))
        return result

    async def create_event(self, namespace: str, body: dict[str, Any]) -> None:
        self.events.append(body)  # in the order the recorder sends them (concurrently)
        await super().create_event(namespace, body)
        self.events_created += 1


@pytest.fixture
async def kube_config(stack: StackInfo) -> client.Configuration:
    cfg = client.Configuration()
    await config.load_kube_config(config_file=stack.kubeconfig, client_configuration=cfg)
    return cfg


@pytest.fixture
async def kube(kube_config: client.Configuration) -> AsyncIterator[RecordingKube]:
    k = RecordingKube(kube_config)
    try:
        yield k
    finally:
        await k.close()


def create_sessions(stack: StackInfo, namespace: str, count: int) -> list[dict[str, Any]]:
    """`count` SalonSessions as the apiserver stored them (no operator runs here)."""
    items = [{"apiVersion": "wa.salonsessions.io/v1alpha1", "kind": "SalonSession",
              "metadata": {"name": f"company-{i}", "namespace": namespace},
              "spec": {"companyId": f"company_{i}", "driver": "simulator"}}
             for i in range(1, count + 1)]
    stack.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List",
                                                        "items": items}))
    listed: list[dict[str, Any]] = get_json(stack, "salonsessions", "-n", namespace)["items"]
    assert len(listed) == count
    return listed


def setup(kube: Kube, objects: list[dict[str, Any]]) -> tuple[Registry, StatusWriter,
                                                              EventRecorder]:
    metrics = OperatorMetrics(CollectorRegistry())
    registry = Registry()
    for obj in objects:
        s = registry.observe(obj)
        assert s is not None
        s.model.reconciled(obj["metadata"]["generation"], suspended=False)
        s.model.refresh()
    recorder = EventRecorder(kube, metrics, "test")
    writer = StatusWriter(kube, registry, metrics, recorder,
                          batch_s=0.05, lazy_s=0.5, concurrency=4, retry_s=0.05)
    return registry, writer, recorder


async def until(cond: Callable[[], bool], timeout: float = 20) -> None:
    async with asyncio.timeout(timeout):
        while not cond():
            await asyncio.sleep(0.01)


async def test_a_burst_becomes_one_patch_per_session_with_every_phase_event(
        salon_crd: StackInfo, namespace: str, kube: RecordingKube) -> None:
    stack = salon_crd
    registry, writer, recorder = setup(kube, create_sessions(stack, namespace, 20))
    tasks = [asyncio.create_task(writer.run()), asyncio.create_task(recorder.run())]
    try:
        for session in registry:
            src = EventSource(session.company, session.name)
            for data in (QrData(code="q", timeout_s=20), ConnectedData(jid=JID),
                         DisconnectedData(reason="x"), ConnectedData(jid=JID)):
                session.model.apply_event(src.event(data), utcnow())
                writer.mark(session)
        await until(lambda: len(kube.patches) >= 20 and kube.events_created >= 100)
        await writer.drain(2)
        await recorder.drain(2)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    assert len(kube.patches) == 20
    # what the apiserver holds: every session Connected
    stored = get_json(stack, "salonsessions", "-n", namespace)["items"]
    assert {(o["status"]["phase"], o["status"]["connected"]) for o in stored} == {
        ("Connected", True)}
    # every phase change is an Event, even those coalesced away in the status
    reasons = [e["reason"] for e in kube.events if e["involvedObject"]["name"] == "company-1"]
    assert reasons == ["Starting", "AwaitingLink", "Connected", "Disconnected", "Connected"]
    listed = get_json(stack, "events", "-n", namespace,
                      "--field-selector", "involvedObject.name=company-1")["items"]
    assert sorted(e["reason"] for e in listed) == sorted(reasons)


async def test_failed_patches_are_retried_and_lazy_fields_wait(
        salon_crd: StackInfo, namespace: str, kube_config: client.Configuration) -> None:
    stack = salon_crd
    kube = RecordingKube(kube_config, fail_first=2)
    task: asyncio.Task[None] | None = None
    try:
        registry, writer, _ = setup(kube, create_sessions(stack, namespace, 1))
        task = asyncio.create_task(writer.run())
        session = next(iter(registry))
        writer.mark(session)
        await until(lambda: len(kube.patches) >= 1)
        assert (len(kube.patches), kube.refused) == (1, 2)  # written after two 503s
        assert get_json(stack, "salonsession", "company-1", "-n", namespace)["status"][
            "phase"] == "Starting"
        # a non-fatal error changes nothing but lastEventAt/lastEventSeq: written late
        session.model.apply_event(EventSource(session.company, session.name).event(
            ErrorData(code="minor", message="x")), utcnow())
        assert writer.mark(session) is False
        await asyncio.sleep(0.2)  # lazy_s is 0.5: not yet
        assert len(kube.patches) == 1
        await until(lambda: len(kube.patches) >= 2)
        assert len(kube.patches) == 2
        assert set(kube.patches[1][1]) == {"lastEventAt", "lastEventSeq"}
        status = get_json(stack, "salonsession", "company-1", "-n", namespace)["status"]
        assert status["lastEventSeq"] == kube.patches[1][1]["lastEventSeq"]
    finally:
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        await kube.close()


async def test_foreign_edits_are_put_back_and_our_own_echoes_are_not(
        salon_crd: StackInfo, namespace: str, kube: RecordingKube) -> None:
    """The level-triggered status: the audit (a LIST) and watch-like deliveries of old
    versions of our own status cost no patch; a hand edit costs exactly one."""
    stack = salon_crd
    registry, writer, recorder = setup(kube, create_sessions(stack, namespace, 10))
    audit = StatusAudit(kube, registry, writer, [namespace])
    tasks = [asyncio.create_task(writer.run()), asyncio.create_task(recorder.run())]
    try:
        history: dict[str, list[dict[str, Any]]] = {}
        for session in registry:
            src = EventSource(session.company, session.name)
            for data in (QrData(code="q", timeout_s=20), ConnectedData(jid=JID)):
                session.model.apply_event(src.event(data), utcnow())
                writer.mark(session)
                await until(lambda s=session: not status_patch(
                    s.written, s.model.render(s.pod_name))[0])
                history.setdefault(session.name, []).append(dict(session.written))
        await writer.drain(2)
        patches = len(kube.patches)
        # late echoes of our own earlier statuses (as a watch may deliver them): nothing
        for session in registry:
            for old in history[session.name]:
                assert writer.observed(session, old) is False
        assert await audit.audit() == 0
        await writer.drain(2)
        assert len(kube.patches) == patches
        # a hand edit of one session: put back by the audit, with one patch
        stack.kubectl("patch", "salonsession", "company-3", "-n", namespace,
                      "--subresource=status", "--type=merge", "-p", json.dumps(
                          {"status": {"phase": "Failed", "linked": False,
                                      "phone": "70000000000"}}))
        assert await audit.audit() == 1
        await until(lambda: len(kube.patches) == patches + 1)
        await writer.drain(2)
        assert await audit.audit() == 0
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    stored = {o["metadata"]["name"]: o["status"]
              for o in get_json(stack, "salonsessions", "-n", namespace)["items"]}
    assert stored["company-3"]["phase"] == "Connected"
    assert "phone" not in stored["company-3"]  # never linked with a phone: none shown
    assert stored["company-3"]["linked"] is True
    assert len(kube.patches) == patches + 1
