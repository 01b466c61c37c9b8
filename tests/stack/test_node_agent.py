"""The dev node agent runs pods as local processes, like a kubelet without containers."""

from __future__ import annotations

import os
import signal
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from devstack.procs import pid_alive
from devstack.stack import NODE_NAME, StackInfo
from tests.helpers import eventually, get_json

pytestmark = pytest.mark.slow


def pod_manifest(name: str, script: str, restart: str = "Always", grace: int = 30,
                 env: list[dict[str, Any]] | None = None) -> str:
    import json

    return json.dumps({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "stacktest"}},
        "spec": {
            "restartPolicy": restart,
            "terminationGracePeriodSeconds": grace,
            "automountServiceAccountToken": False,
            "containers": [{
                "name": "main", "image": "local/python",
                "command": [sys.executable, "-u", "-c", textwrap.dedent(script)],
                "env": env or [],
            }],
        },
    })


def pod(stack: StackInfo, ns: str, name: str) -> dict[str, Any]:
    return get_json(stack, "pod", name, "-n", ns)


def container_pid(p: dict[str, Any]) -> int:
    cid = p["status"]["containerStatuses"][0]["containerID"]
    assert cid.startswith("local://"), cid
    return int(cid.removeprefix("local://"))


def running(stack: StackInfo, ns: str, name: str, restarts: int = 0) -> dict[str, Any] | None:
    p = pod(stack, ns, name)
    statuses = p["status"].get("containerStatuses") or [{}]
    if (p["status"].get("phase") == "Running" and "running" in statuses[0].get("state", {})
            and statuses[0].get("restartCount") == restarts):
        return p
    return None


SLEEPER = """
    import os, time
    print("hello from", os.environ["POD_NAME"], "greeting", os.environ["GREETING"],
          "token-length", len(os.environ["API_TOKEN"]), "mode", os.environ["MODE"], flush=True)
    while True:
        time.sleep(1)
"""


def test_pod_runs_restarts_and_is_killed_on_delete(stack: StackInfo, namespace: str) -> None:
    ns = namespace
    stack.kubectl("create", "secret", "generic", "creds", "-n", ns,
                  "--from-literal=token=s3cr3t-value")
    stack.kubectl("create", "configmap", "cfg", "-n", ns, "--from-literal=greeting=privet")
    env = [
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "GREETING", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "greeting"}}},
        {"name": "API_TOKEN", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token"}}},
        {"name": "MODE", "value": "demo"},
    ]
    stack.kubectl("apply", "-n", ns, "-f", "-", input=pod_manifest("sleeper", SLEEPER, env=env))

    # bound to the node by the scheduler, running as a local process
    p = eventually(lambda: running(stack, ns, "sleeper"), what="pod Running")
    assert p["spec"]["nodeName"] == NODE_NAME
    conditions = {c["type"]: c["status"] for c in p["status"]["conditions"]}
    assert conditions["Ready"] == "True"
    assert conditions["PodScheduled"] == "True"
    pid = container_pid(p)
    assert pid_alive(pid)

    # its output can be read through the API (kubectl logs -> node agent)
    logs = eventually(lambda: stack.kubectl("logs", "sleeper", "-n", ns).stdout,
                      what="logs")
    assert "hello from sleeper greeting privet token-length 12 mode demo" in logs

    # killed -> restarted per restartPolicy Always, with the restart counted
    os.kill(pid, signal.SIGKILL)
    p = eventually(lambda: running(stack, ns, "sleeper", restarts=1), what="restart")
    new_pid = container_pid(p)
    assert new_pid != pid
    last = p["status"]["containerStatuses"][0]["lastState"]["terminated"]
    assert last["exitCode"] == 137

    # deleted -> the process group is gone and the pod object removed
    stack.kubectl("delete", "pod", "sleeper", "-n", ns, "--wait=true", "--timeout=60s")
    eventually(lambda: not pid_alive(new_pid), what="process gone")
    gone = stack.kubectl("get", "pod", "sleeper", "-n", ns, check=False)
    assert "NotFound" in gone.stderr


def test_grace_period_is_honoured(stack: StackInfo, namespace: str, tmp_path: Path) -> None:
    marker = tmp_path / "terminated"
    script = f"""
        import signal, sys, time
        def bye(*_):
            open({str(marker)!r}, "w").write("SIGTERM")
            sys.exit(0)
        signal.signal(signal.SIGTERM, bye)
        print("ready", flush=True)
        while True:
            time.sleep(0.2)
    """
    stack.kubectl("apply", "-n", namespace, "-f", "-", input=pod_manifest("polite", script))
    pid = container_pid(eventually(lambda: running(stack, namespace, "polite"), what="Running"))
    stack.kubectl("delete", "pod", "polite", "-n", namespace, "--wait=true", "--timeout=60s")
    assert marker.read_text() == "SIGTERM"
    assert not pid_alive(pid)


def test_process_ignoring_sigterm_is_killed_after_grace(
        stack: StackInfo, namespace: str) -> None:
    script = """
        import signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        while True:
            time.sleep(0.2)
    """
    stack.kubectl("apply", "-n", namespace, "-f", "-",
                  input=pod_manifest("stubborn", script, grace=2))
    pid = container_pid(eventually(lambda: running(stack, namespace, "stubborn"),
                                   what="Running"))
    stack.kubectl("delete", "pod", "stubborn", "-n", namespace, "--wait=true", "--timeout=60s")
    eventually(lambda: not pid_alive(pid), what="process killed")


def test_restart_policies(stack: StackInfo, namespace: str) -> None:
    stack.kubectl("apply", "-n", namespace, "-f", "-",
                  input=pod_manifest("fails", "raise SystemExit(3)", restart="Never"))
    stack.kubectl("apply", "-n", namespace, "-f", "-",
                  input=pod_manifest("done", "print('ok')", restart="OnFailure"))
    failed = eventually(lambda: (p := pod(stack, namespace, "fails"))["status"].get("phase")
                        == "Failed" and p, what="Failed")
    status = failed["status"]["containerStatuses"][0]
    assert status["state"]["terminated"]["exitCode"] == 3
    assert status["restartCount"] == 0
    done = eventually(lambda: (p := pod(stack, namespace, "done"))["status"].get("phase")
                      == "Succeeded" and p, what="Succeeded")
    assert done["status"]["containerStatuses"][0]["restartCount"] == 0


def test_missing_secret_is_reported_then_resolved(stack: StackInfo, namespace: str) -> None:
    env = [{"name": "API_TOKEN",
            "valueFrom": {"secretKeyRef": {"name": "later", "key": "token"}}}]
    script = "import os, time; print(len(os.environ['API_TOKEN']), flush=True); time.sleep(300)"
    stack.kubectl("apply", "-n", namespace, "-f", "-",
                  input=pod_manifest("waits", script, env=env))

    def waiting_reason() -> str | None:
        statuses = pod(stack, namespace, "waits")["status"].get("containerStatuses") or [{}]
        waiting = statuses[0].get("state", {}).get("waiting", {})
        return str(waiting["reason"]) if waiting.get("reason") else None

    assert eventually(
        lambda: waiting_reason() == "CreateContainerConfigError" and waiting_reason(),
        what="CreateContainerConfigError") == "CreateContainerConfigError"
    stack.kubectl("create", "secret", "generic", "later", "-n", namespace,
                  "--from-literal=token=abcd")
    eventually(lambda: running(stack, namespace, "waits"), what="Running once the Secret exists")


def test_liveness_probe_restarts_a_frozen_worker_which_resumes_its_session(
        stack: StackInfo, namespace: str, database: str) -> None:
    """A SIGSTOPped session worker keeps its lock (its socket stays open) until its liveness
    probe (the session pod template's) fails; the node agent then kills it (SIGKILL ends a
    stopped process) and restarts it, and the session is connected again with the device it
    had: no new link."""
    import asyncio
    import json
    import random

    import asyncpg

    from salon_sessions.core import channels
    from salon_sessions.db.migrator import migrate_database
    from salon_sessions.operator.statefulset import LIVENESS_PROBE

    company = f"company_{random.randint(10**8, 10**9)}"

    async def seed() -> None:  # an already linked device
        await migrate_database(database)
        conn = await asyncpg.connect(database)
        try:
            await conn.execute("INSERT INTO simulator_device (company_id, jid, phone) VALUES "
                               "($1, '79686484488:1@s.whatsapp.net', '79686484488')", company)
        finally:
            await conn.close()

    asyncio.run(seed())
    env = [{"name": k, "value": v} for k, v in {
        "SALON_COMPANY_ID": company, "SALON_SESSION_NAME": company.replace("_", "-"),
        "SALON_DRIVER": "simulator", "SALON_DATABASE_URL": database,
        "SALON_REDIS_URL": stack.redis_url, "SALON_METRICS_PORT": "0",
        "SALON_HEARTBEAT_TTL_S": "6"}.items()]
    env.append({"name": "SALON_POD_NAME",
                "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}})
    manifest = {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "worker"},
        "spec": {"restartPolicy": "Always", "terminationGracePeriodSeconds": 30,
                 "automountServiceAccountToken": False,
                 "containers": [{"name": "worker", "image": "local/salon-sessions",
                                 "command": ["salon-sessions", "worker"], "env": env,
                                 "livenessProbe": LIVENESS_PROBE}]},
    }
    stack.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(manifest))
    import redis

    r = redis.Redis.from_url(stack.redis_url)
    key = channels.session_state_key(company)
    try:
        eventually(lambda: r.hget(key, "connected") == b"true", 90, "connected")
        p = eventually(lambda: running(stack, namespace, "worker"), what="pod Running")
        pid = container_pid(p)
        os.kill(pid, signal.SIGSTOP)  # frozen: lock held, nothing answers

        p = eventually(lambda: running(stack, namespace, "worker", restarts=1), 180,
                       "restarted by its liveness probe")
        assert not pid_alive(pid)
        last = p["status"]["containerStatuses"][0]["lastState"]["terminated"]
        assert last["exitCode"] == 137
        assert "liveness probe failed" in last["message"]
        new_pid = container_pid(p)
        assert new_pid != pid
        # the new process took the lock over and resumed the linked device
        eventually(lambda: r.hget(key, "connected") == b"true"
                   and r.hget(key, "linked") == b"true", 90, "connected again")
        logs = stack.kubectl("logs", "worker", "-n", namespace).stdout
        assert "lock acquired" in logs
    finally:
        r.close()
        stack.kubectl("delete", "pod", "worker", "-n", namespace, "--wait=false", check=False)
