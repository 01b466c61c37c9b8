"""A truthful `.status` nobody else can bend (issue 10): forged state hashes and future-dated
events change nothing, a hand-edited status is put back, every worker trouble is a Warning
Event and a condition reason, a cleanup that gave up finishes once PostgreSQL is back, and
a StatefulSet edited by hand is put back. Real apiserver, Redis, PostgreSQL and workers."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from salon_sessions.core.channels import events_channel, session_state_key
from salon_sessions.core.events import ConnectedData, EventSource
from tests.helpers import eventually
from tests.operator.conftest import OperatorEnv
from tests.operator.helpers import (
    PHONE,
    Phone,
    StatusWatch,
    condition,
    credentials,
    db_rows,
    history,
    new_company,
)
from tests.operator.test_deletion import seed_credentials
from tests.operator.test_resilience import worker_pid

pytestmark = [pytest.mark.slow, pytest.mark.e2e]
FAKE_PHONE = "70000000000"
CONFIGMAP = "salon-sessions-operator-pending-cleanups"


def now_us() -> int:
    return time.time_ns() // 1000


def reasons(env: OperatorEnv, name: str, type_: str = "Warning") -> set[str]:
    return {e["reason"] for e in env.events(name) if e["type"] == type_}


def saw_reason(watch: StatusWatch, ctype: str, reason: str) -> bool:
    return watch.saw(lambda s: any(c["type"] == ctype and c["reason"] == reason
                                   for c in s.get("conditions", [])))


def connected_session(env: OperatorEnv, **spec: Any) -> tuple[str, str, Phone]:
    company = new_company()
    name = env.apply_session(company, **spec)
    phone = Phone(env.redis_url, company)
    env.wait_status(name, "awaiting the scan", phase="AwaitingLink")
    phone.scan()
    env.wait_status(name, "connected", phase="Connected", linked=True, connected=True,
                    phone=PHONE)
    return company, name, phone


def test_forged_state_hashes_and_future_events_change_nothing(
        operator_env: OperatorEnv) -> None:
    env = operator_env
    op = env.start_operator()
    env.wait_role(op, "leader")
    company = new_company()
    name = env.apply_session(company)
    phone = Phone(env.redis_url, company)
    key = session_state_key(company)
    try:
        env.wait_status(name, "awaiting the scan", phase="AwaitingLink")
        watch = StatusWatch(env.stack, env.namespace, name).started()
        try:
            def forge(seq: str, reason: str, ahead_s: float = 0.0, times: int = 1) -> bool:
                # the worker rewrites its hash every third of the TTL: forge until the
                # operator has read (and refused) a forged one
                stamp = (datetime.now(UTC) + timedelta(seconds=ahead_s)).isoformat()
                phone.redis.hset(key, mapping={
                    "seq": seq, "phase": "Connected", "linked": "true", "connected": "true",
                    "phone": FAKE_PHONE, "session": name, "updated_at": stamp,
                    "heartbeat_at": stamp})
                return op.metric("salon_operator_heartbeats_rejected_total",
                                 reason=reason) >= times

            eventually(lambda: forge("99999999999999999999", "seq"), 60,
                       "a hash with a seq beyond int64 refused", interval=0.2)
            eventually(lambda: forge(str(now_us() + 10**12), "future"), 60,
                       "a hash numbered days ahead refused", interval=0.2)
            eventually(lambda: forge(str(now_us()), "future", 200.0, times=2), 60,
                       "a hash dated 200 s ahead refused", interval=0.2)
            later = datetime.now(UTC) + timedelta(seconds=200)
            # a well-formed `connected` of a never-linked company, dated 200 s ahead
            future = EventSource(company, name).event(ConnectedData(), ts=later)
            phone.redis.publish(events_channel(company), future.model_dump_json())
            eventually(lambda: op.metric("salon_operator_events_rejected_total",
                                         reason="future") >= 1, 30,
                       "the future-dated event refused")
            # real events are not refused as stale and patches still go through
            phone.scan()
            env.wait_status(name, "connected for real", phase="Connected", linked=True,
                            connected=True, phone=PHONE)
        finally:
            watch.close()
        assert not watch.saw(lambda s: s.get("phone") == FAKE_PHONE)
        assert not watch.saw(lambda s: s.get("lastEventSeq", 0) > now_us() + 10**9)
        assert not watch.saw(lambda s: s.get("connected") is True
                             and s.get("phone") != PHONE)
        assert op.metric("salon_operator_status_patches_total", result="422") == 0
    finally:
        phone.close()


def test_a_hand_edited_status_is_put_back(operator_env: OperatorEnv) -> None:
    env = operator_env
    op = env.start_operator()
    env.wait_role(op, "leader")
    _, name, phone = connected_session(env)
    try:
        for attempt in range(3):  # repeated: each edit is corrected, none sticks
            env.stack.kubectl(
                "patch", "salonsession", name, "-n", env.namespace, "--subresource=status",
                "--type=merge", "-p", json.dumps({"status": {
                    "phase": "Failed", "linked": False, "connected": False,
                    "phone": FAKE_PHONE, "lastEventSeq": 2**63 - 1}}))
            status = env.wait_status(name, f"the edit {attempt} put back", phase="Connected",
                                     linked=True, connected=True, phone=PHONE)
            assert status["lastEventSeq"] < now_us() + 10**9
        assert op.metric("salon_operator_status_reasserts_total", cause="foreign") >= 1
        # later real events do not mix with what the edit said
        phone.act(action="connect_failure", code=405)  # refused, not retried
        status = env.wait_status(name, "disconnected", phase="Disconnected", linked=True,
                                 connected=False, phone=PHONE)
        assert condition(status, "Linked")["status"] == "True"
        # an operator restart reloads the status: a forged seq there is not trusted either
        env.stack.kubectl(
            "patch", "salonsession", name, "-n", env.namespace, "--subresource=status",
            "--type=merge", "-p", json.dumps({"status": {"lastEventSeq": 2**63 - 1}}))
        op.kill()
        op2 = env.start_operator("op-b")
        env.wait_role(op2, "leader")
        env.wait_status(name, "back to its own seq", phase="Disconnected", linked=True)
        eventually(lambda: env.status(name).get("lastEventSeq", 0) < now_us() + 10**9, 60,
                   "the forged seq replaced")
    finally:
        phone.close()


def test_worker_troubles_are_warning_events_and_condition_reasons(
        operator_env: OperatorEnv) -> None:
    env = operator_env
    op = env.start_operator()
    env.wait_role(op, "leader")
    _, name, phone = connected_session(env)
    pod_name = f"{name}-0"
    watch = StatusWatch(env.stack, env.namespace, name).started()
    try:
        # ---- the worker loses its session lock (its lock connection is cut)
        def cut_lock() -> bool:
            db_rows(env.database, "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE "
                    "locktype = 'advisory' AND granted AND database = (SELECT oid FROM "
                    "pg_database WHERE datname = current_database())")
            return "LockLost" in reasons(env, name)

        eventually(cut_lock, 60, "a LockLost Warning", interval=1.0)
        eventually(lambda: saw_reason(watch, "WorkerHealthy", "LockLost"), 30,
                   "WorkerHealthy=False LockLost")
        env.wait_status(name, "connected again with the lock", phase="Connected",
                        connected=True)

        # ---- a frozen worker: heartbeat lost, pongs missed
        pid = worker_pid(env, pod_name)
        os.kill(pid, signal.SIGSTOP)
        try:
            status = env.wait_status(name, "the heartbeat lost", connected=False,
                                     phase="Disconnected")
            assert condition(status, "Connected")["reason"] == "HeartbeatLost"
            eventually(lambda: {"HeartbeatLost", "PongsMissed"} <= reasons(env, name), 60,
                       "HeartbeatLost and PongsMissed Warnings")
        finally:  # unless its liveness probe has had it killed meanwhile
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        assert saw_reason(watch, "WorkerHealthy", "HeartbeatLost")
        env.wait_status(name, "back after SIGCONT", phase="Connected", connected=True)

        # ---- the worker's container restarts
        os.kill(worker_pid(env, pod_name), signal.SIGKILL)
        eventually(lambda: "WorkerRestarted" in reasons(env, name), 60,
                   "a WorkerRestarted Warning")
        eventually(lambda: saw_reason(watch, "WorkerHealthy", "WorkerRestarted"), 30,
                   "WorkerHealthy=False WorkerRestarted")
        assert op.metric("salon_operator_worker_restarts_total") >= 1
        status = env.wait_status(name, "the restarted worker connected", phase="Connected",
                                 connected=True)
        eventually(lambda: condition(env.status(name), "WorkerHealthy")["status"] == "True",
                   60, "the restarted worker answers pings")
    finally:
        watch.close()
        phone.close()
    events = {e["reason"]: e for e in env.events(name)}
    for reason in ("LockLost", "HeartbeatLost", "PongsMissed", "WorkerRestarted"):
        assert events[reason]["type"] == "Warning"
        assert PHONE not in events[reason]["message"]


def test_a_frozen_worker_is_restarted_by_its_probe_and_resumes_without_a_new_link(
        operator_env: OperatorEnv) -> None:
    """SIGSTOP, never SIGCONT: the pod's liveness probe (`worker.fence`) fails, the node
    restarts the container, the operator posts WorkerRestarted, and the new process resumes
    the stored device: connected again with the same phone and no second link."""
    env = operator_env
    op = env.start_operator()
    env.wait_role(op, "leader")
    company, name, phone = connected_session(env)
    pod_name = f"{name}-0"
    try:
        frozen = worker_pid(env, pod_name)
        os.kill(frozen, signal.SIGSTOP)
        eventually(lambda: worker_pid(env, pod_name) != frozen, 120,
                   "the frozen container replaced")
        pod = env.pod(pod_name)
        assert pod is not None
        state = pod["status"]["containerStatuses"][0]
        assert state["restartCount"] >= 1
        killing = env.kubectl("get", "events", "-o", "json", "--field-selector",
                              f"involvedObject.name={pod_name},reason=Killing").stdout
        assert any("liveness probe" in e["message"] for e in json.loads(killing)["items"])
        eventually(lambda: "WorkerRestarted" in reasons(env, name), 60,
                   "a WorkerRestarted Warning")
        env.wait_status(name, "connected again", phase="Connected", linked=True,
                        connected=True, phone=PHONE)
        assert history(env.database, company).count("linked") == 1  # resumed, not relinked
    finally:
        phone.close()


def pending_cleanups(env: OperatorEnv) -> dict[str, Any]:
    out = env.kubectl("get", "configmap", CONFIGMAP, "-o", "json", check=False)
    if out.returncode != 0:
        return {}
    data: dict[str, str] = json.loads(out.stdout).get("data") or {}
    return {k: json.loads(v) for k, v in data.items()}


def test_a_cleanup_that_gave_up_finishes_once_postgres_is_back(
        operator_env: OperatorEnv,
        postgres_outage: Callable[[], AbstractContextManager[None]]) -> None:
    env = operator_env
    fast = {"SALON_PENDING_CLEANUP_RETRY_S": "1"}
    op = env.start_operator(**fast)
    env.wait_role(op, "leader")
    company = new_company()
    seed_credentials(env.database, company, env.namespace)
    name = env.apply_session(company, suspend=True)
    env.wait_status(name, "suspended", phase="Suspended")
    with postgres_outage():
        env.kubectl("delete", "salonsession", name, "--wait=false")
        eventually(lambda: not env.exists("salonsession", name), 90, "the CR released")
        entry = pending_cleanups(env)[company]
        assert (entry["namespace"], entry["name"]) == (env.namespace, name)
        assert "CleanupFailed" in reasons(env, name)
        eventually(lambda: op.metric("salon_operator_cleanups_pending") == 1, 30,
                   "the pending cleanup counted")
        # the record survives the operator: the next leader finishes it
        op.kill()
        op = env.start_operator(**fast)
        env.wait_role(op, "leader")
        eventually(lambda: "CleanupPending" in reasons(env, name), 60,
                   "a CleanupPending Warning while PostgreSQL is down")
    eventually(lambda: credentials(env.database, company) == {"simulator_device": 0,
                                                              "salon_sessions": 0},
               90, "the credentials deleted once PostgreSQL is back")
    assert history(env.database, company)[-1] == "deleted"
    eventually(lambda: company not in pending_cleanups(env), 30, "the record removed")
    eventually(lambda: "CredentialsDeleted" in reasons(env, name, "Normal"), 30,
               "a CredentialsDeleted Event")
    eventually(lambda: op.metric("salon_operator_cleanups_pending") == 0, 30,
               "nothing pending")


def test_a_statefulset_edited_by_hand_is_put_back(operator_env: OperatorEnv) -> None:
    env = operator_env
    op = env.start_operator()
    env.wait_role(op, "leader")
    name = env.apply_session(new_company(), suspend=True)  # no pod to roll meanwhile
    env.wait_status(name, "suspended", phase="Suspended")

    def template() -> dict[str, Any]:
        sts = next(s for s in env.statefulsets() if s["metadata"]["name"] == name)
        result: dict[str, Any] = sts["spec"]["template"]
        return result

    def env_names() -> set[str]:
        return {e["name"] for e in template()["spec"]["containers"][0]["env"]}

    # Suspended shows from the spec; the StatefulSet follows the session's credentials
    eventually(lambda: any(s["metadata"]["name"] == name for s in env.statefulsets()), 60,
               "the StatefulSet")
    original = env_names()
    env.kubectl("patch", "statefulset", name, "--type=json", "-p", json.dumps([
        {"op": "add", "path": "/spec/template/spec/containers/0/env/-",
         "value": {"name": "SALON_INJECTED", "value": "1"}},
        {"op": "add", "path": "/spec/template/spec/hostNetwork", "value": True},
        {"op": "add", "path": "/spec/template/spec/containers/0/image",
         "value": "evil:latest"}]))
    eventually(lambda: env_names() == original and "hostNetwork" not in template()["spec"]
               and template()["spec"]["containers"][0]["image"] != "evil:latest", 60,
               "the pod template put back")
    assert op.metric("salon_operator_statefulset_drift_total", kind="changed") >= 1
    env.kubectl("scale", "statefulset", name, "--replicas=1")
    eventually(lambda: next(s for s in env.statefulsets() if s["metadata"]["name"] == name)
               ["spec"]["replicas"] == 0, 60, "the replicas put back")
    # `kubectl rollout restart` is a way to restart the worker: it is kept
    env.kubectl("rollout", "restart", f"statefulset/{name}")
    eventually(lambda: "kubectl.kubernetes.io/restartedAt"
               in (template()["metadata"].get("annotations") or {}), 30, "the restart")
    generation = next(s for s in env.statefulsets()
                      if s["metadata"]["name"] == name)["metadata"]["generation"]
    env.kubectl("patch", "statefulset", name, "--type=json", "-p", json.dumps([
        {"op": "add", "path": "/spec/template/spec/containers/0/env/-",
         "value": {"name": "SALON_INJECTED", "value": "2"}}]))
    eventually(lambda: env_names() == original, 60, "put back again")
    annotations = template()["metadata"].get("annotations") or {}
    assert "kubectl.kubernetes.io/restartedAt" in annotations
    assert next(s for s in env.statefulsets() if s["metadata"]["name"] == name)[
        "metadata"]["generation"] > generation
