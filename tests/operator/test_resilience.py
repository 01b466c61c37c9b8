"""Failures mid-flow: the operator killed (standby takeover, restart), the worker killed,
Redis restarted, and hostile messages on the events channel."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable

import pytest

from devstack.node import container_pid
from salon_sessions.core.channels import events_channel, health_pong_channel
from salon_sessions.core.events import (
    ConnectedData,
    EventSource,
    LinkedData,
    PongData,
)
from tests.helpers import eventually
from tests.operator.conftest import OperatorEnv
from tests.operator.helpers import PHONE, Phone, condition, history, new_company

pytestmark = [pytest.mark.slow, pytest.mark.e2e]


def test_operator_killed_standby_takes_over_and_restarts(operator_env: OperatorEnv) -> None:
    env = operator_env
    a = env.start_operator("op-a")
    env.wait_role(a, "leader")
    b = env.start_operator("op-b")
    env.wait_role(b, "standby")
    company = new_company()
    name = env.apply_session(company)
    phone = Phone(env.redis_url, company)
    try:
        env.wait_status(name, "awaiting the scan", phase="AwaitingLink")
        a.kill()  # SIGKILL: no lease release, no goodbye
        phone.scan()  # linked while no replica leads: those events are lost
        env.wait_role(b, "leader")
        env.wait_status(name, "converged from the heartbeat hash", phase="Connected",
                        linked=True, connected=True, phone=PHONE)
        assert [s["metadata"]["name"] for s in env.statefulsets()] == [name]

        b.kill()
        b2 = env.start_operator("op-b")  # same identity: takes its own lease back at once
        env.wait_role(b2, "leader")
        second = env.apply_session(new_company(), suspend=True)
        env.wait_status(second, "suspended", phase="Suspended")
        a2 = env.start_operator("op-a")
        env.wait_role(a2, "standby")
        env.wait_status(name, "still connected", phase="Connected", connected=True)
        assert sorted(s["metadata"]["name"] for s in env.statefulsets()) == sorted(
            [name, second])
        lease = env.kubectl("get", "lease", "salon-sessions-operator", "-o",
                            "jsonpath={.spec.holderIdentity}").stdout
        assert lease == "op-b"
    finally:
        phone.close()


def worker_pid(env: OperatorEnv, pod_name: str) -> int:
    pod = env.pod(pod_name)
    assert pod is not None
    return container_pid(pod["status"]["containerStatuses"][0]["containerID"])


def test_worker_killed_and_redis_restarted(operator_env: OperatorEnv,
                                           restart_redis: Callable[[], None]) -> None:
    env = operator_env
    op = env.start_operator()
    env.wait_role(op, "leader")
    company = new_company()
    name = env.apply_session(company)
    phone = Phone(env.redis_url, company)
    try:
        env.wait_status(name, "awaiting the scan", phase="AwaitingLink")
        phone.scan()
        env.wait_status(name, "connected", phase="Connected", connected=True)

        os.kill(worker_pid(env, f"{name}-0"), signal.SIGKILL)
        eventually(lambda: (env.pod(f"{name}-0") or {}).get("status", {})
                   .get("containerStatuses", [{}])[0].get("restartCount", 0) >= 1,
                   60, "the worker restarted")
        env.wait_status(name, "resumed without a new link", phase="Connected",
                        linked=True, connected=True, phone=PHONE)
        assert history(env.database, company) == ["linked"]

        restart_redis()
        eventually(lambda: op.metric("salon_pubsub_subscriber_reconnects_total",
                                     subscriber="operator") >= 1, 60, "resubscribed")
        eventually(lambda: phone.state().get("connected") == "true", 60,
                   "the worker rewrote its hash")
        status = env.wait_status(name, "still connected", phase="Connected", connected=True)
        assert condition(status, "Connected")["reason"] == "Connected"
        # Redis forgot the worker's user (ACL SETUSER users are not in its append-only
        # file): the operator re-creates it, the worker's subscriptions come back with
        # their backoff. Redis kept the hash (AOF), so the lines above can pass before that
        eventually(lambda: op.metric("salon_operator_session_credentials_total",
                                     action="restore", result="ok") >= 1, 60,
                   "the operator re-created the worker's Redis user")
        # 405 (client outdated): WhatsApp refuses, and the driver does not reconnect
        eventually(lambda: phone.act(action="connect_failure", code=405) == 1, 30,
                   "the simulated phone heard")
        env.wait_status(name, "disconnected after the restart", phase="Disconnected",
                        connected=False, linked=True)
    finally:
        phone.close()


def test_suspend_resume_spec_change_and_hostile_events(operator_env: OperatorEnv) -> None:
    env = operator_env
    op = env.start_operator()
    env.wait_role(op, "leader")
    company = new_company()
    name = env.apply_session(company)
    pod_name = f"{name}-0"
    phone = Phone(env.redis_url, company)
    try:
        before = env.wait_status(name, "awaiting the scan", phase="AwaitingLink")
        # ---- hostile and malformed messages change nothing
        source = EventSource(company, name)
        other = EventSource(new_company(), "company-1")
        claims_other = other.event(ConnectedData())
        # a session that is not ours, on its own channel
        phone.redis.publish(events_channel(other.company_id), claims_other.model_dump_json())
        forged = [
            b"not json", b"{}", b'{"v": 1, "type": "connected"}', b"\xff" * 70_000,
            claims_other.model_dump_json().encode(),  # another company, on this channel
            source.event(PongData(correlation_id="x")).model_dump_json().encode(),
        ]
        wrong_session = source.event(ConnectedData()).model_copy(update={"session": "x-1"})
        future = source.event(LinkedData(jid=f"{PHONE}:9@s.whatsapp.net", phone=PHONE))
        future = future.model_copy(update={"seq": int(time.time() * 1e6) + 10**12})
        stale = source.event(ConnectedData()).model_copy(update={"seq": 1})
        forged += [e.model_dump_json().encode() for e in (wrong_session, future, stale)]
        for raw in forged:
            phone.redis.publish(events_channel(company), raw)
        phone.redis.publish(health_pong_channel(company), json.dumps({"v": 1, "type": "pong"}))
        phone.redis.publish(health_pong_channel(other.company_id),  # a pong claiming this one
                            source.event(PongData(correlation_id="y")).model_dump_json())

        def counted() -> bool:
            return all(op.metric(metric, **labels) >= 1 for metric, labels in (
                ("salon_events_dropped_total", {"consumer": "operator", "reason": "malformed"}),
                ("salon_events_dropped_total", {"consumer": "operator", "reason": "oversized"}),
                ("salon_events_dropped_total", {"consumer": "operator", "reason": "invalid"}),
                ("salon_events_dropped_total", {"consumer": "operator",
                                                "reason": "wrong_company"}),
                ("salon_operator_events_rejected_total", {"reason": "unknown_session"}),
                ("salon_operator_events_rejected_total", {"reason": "session_mismatch"}),
                ("salon_operator_events_rejected_total", {"reason": "future"}),
                ("salon_operator_events_rejected_total", {"reason": "stale"}),
                ("salon_operator_events_rejected_total", {"reason": "unexpected_type"}),
            ))

        eventually(counted, 30, "every hostile message counted")
        after = env.status(name)
        assert (after["phase"], after["linked"], after["connected"]) == (
            "AwaitingLink", False, False)
        assert after["lastEventSeq"] >= before.get("lastEventSeq", 0)
        assert after["lastEventSeq"] < int(time.time() * 1e6) + 10**9  # not the forged one
        assert op.alive()

        # ---- a spec change rolls the pod
        pod = env.pod(pod_name)
        assert pod is not None
        old_uid = pod["metadata"]["uid"]
        env.kubectl("patch", "salonsession", name, "--type=merge", "-p",
                    json.dumps({"spec": {"resources": {"limits": {"memory": "600Mi"}}}}))
        eventually(lambda: (env.pod(pod_name) or {"metadata": {"uid": old_uid}})
                   ["metadata"]["uid"] != old_uid, 60, "a new pod")
        new_pod = env.pod(pod_name)
        assert new_pod is not None
        assert new_pod["spec"]["containers"][0]["resources"]["limits"]["memory"] == "600Mi"
        env.wait_status(name, "generation 2 observed", observedGeneration=2,
                        phase="AwaitingLink")

        # ---- suspend scales to zero, resume scales back
        env.kubectl("patch", "salonsession", name, "--type=merge", "-p",
                    '{"spec": {"suspend": true}}')
        status = env.wait_status(name, "suspended", phase="Suspended", connected=False)
        assert "podName" not in status
        assert condition(status, "Connected")["reason"] == "Suspended"
        assert [s["spec"]["replicas"] for s in env.statefulsets()] == [0]
        eventually(lambda: env.pod(pod_name) is None, 60, "the pod is gone")
        env.wait_status(name, "still suspended", phase="Suspended")
        env.kubectl("patch", "salonsession", name, "--type=merge", "-p",
                    '{"spec": {"suspend": false}}')
        env.wait_status(name, "resumed", phase="AwaitingLink", podName=pod_name)
        assert [s["spec"]["replicas"] for s in env.statefulsets()] == [1]
    finally:
        phone.close()
