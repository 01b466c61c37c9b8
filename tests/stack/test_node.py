"""The local stack's real node (containerd + kubelet + kube-proxy + CoreDNS): pods run from
the locally built image, in-cluster DNS resolves Service names, the backing services are
reachable under them, killed containers are restarted, limits are enforced, `kubectl logs`
works through the kubelet, a frozen session worker is restarted by its liveness probe. Each
pod costs seconds: the tests share pods where they can."""

from __future__ import annotations

import json
import os
import signal
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from devstack import node
from devstack.procs import StartError, pid_alive
from devstack.stack import NODE_NAME, StackInfo, backing_services, start
from tests.helpers import eventually, get_json

pytestmark = pytest.mark.slow


def pod_manifest(image: str, name: str, script: str, restart: str = "Always",
                 **container: Any) -> str:
    return json.dumps({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "stacktest"}},
        "spec": {
            "restartPolicy": restart, "terminationGracePeriodSeconds": 5,
            "automountServiceAccountToken": False,
            "containers": [{"name": "main", "image": image, "imagePullPolicy": "Never",
                            "command": ["python", "-u", "-c", textwrap.dedent(script)],
                            **container}],
        },
    })


def pod(stack: StackInfo, ns: str, name: str) -> dict[str, Any]:
    return get_json(stack, "pod", name, "-n", ns)


def main_status(p: dict[str, Any]) -> dict[str, Any]:
    statuses: list[dict[str, Any]] = p["status"].get("containerStatuses") or [{}]
    return statuses[0]


def ready(stack: StackInfo, ns: str, name: str, restarts: int = 0) -> dict[str, Any] | None:
    p = pod(stack, ns, name)
    status = main_status(p)
    if status.get("ready") and status.get("restartCount") == restarts:
        return p
    return None


RESOLVER = """
    import socket, time

    def retry(what, step):  # kube-proxy programs a new Service within a second or two
        for attempt in range(60):
            try:
                return step()
            except OSError as exc:
                print("retrying", what, exc, flush=True)
                time.sleep(0.5)
        raise SystemExit(f"gave up on {what}")

    for name in ("kubernetes.default.svc.cluster.local", "postgresql", "redis"):
        print("resolved", name, retry(name, lambda: socket.gethostbyname(name)), flush=True)
    for name, port in (("postgresql", 5432), ("redis", 6379)):
        retry(name, lambda: socket.create_connection((name, port), timeout=5).close())
        print(f"reached {name}:{port}", flush=True)
    open("/tmp/ready", "w").close()
    while True:
        time.sleep(1)
"""


def test_pod_from_local_image_dns_backing_services_logs_and_restart(
        stack: StackInfo, namespace: str) -> None:
    ns = namespace
    backing_services(stack, ns)
    probe = {"exec": {"command": ["cat", "/tmp/ready"]}, "periodSeconds": 1}
    applied = time.monotonic()
    stack.kubectl("apply", "-n", ns, "-f", "-", input=pod_manifest(
        stack.worker_image, "resolver", RESOLVER, readinessProbe=probe))
    p = eventually(lambda: ready(stack, ns, "resolver"), 90, "pod Ready")
    print(f"pod apply -> Ready: {time.monotonic() - applied:.1f}s")
    assert p["spec"]["nodeName"] == NODE_NAME
    assert p["status"]["podIP"].startswith("10.244.0.")

    # kubectl logs: apiserver -> kubelet (client certificate, webhook authorization)
    logs = stack.kubectl("logs", "resolver", "-n", ns).stdout
    services = {s["metadata"]["name"]: s["spec"]["clusterIP"]
                for s in get_json(stack, "services", "-n", ns)["items"]}
    assert f"resolved postgresql {services['postgresql']}" in logs
    assert f"resolved redis {services['redis']}" in logs
    assert "resolved kubernetes.default.svc.cluster.local 10.96.0.1" in logs
    assert "reached postgresql:5432" in logs
    assert "reached redis:6379" in logs

    # a killed container is restarted (restartPolicy Always), the restart counted
    cid = main_status(p)["containerID"]
    pid = node.container_pid(cid)
    os.kill(pid, signal.SIGKILL)
    p = eventually(lambda: ready(stack, ns, "resolver", restarts=1), 90, "restarted")
    assert main_status(p)["lastState"]["terminated"]["exitCode"] == 137
    assert node.container_pid(main_status(p)["containerID"]) != pid
    stack.kubectl("delete", "pod", "resolver", "-n", ns, "--wait=true", "--timeout=60s")
    assert not pid_alive(pid)


def test_memory_limit_is_enforced(stack: StackInfo, namespace: str) -> None:
    script = "b = bytearray(200 * 1024 * 1024)\nfor i in range(0, len(b), 4096): b[i] = 1\n"
    stack.kubectl("apply", "-n", namespace, "-f", "-", input=pod_manifest(
        stack.worker_image, "greedy", script, restart="Never",
        resources={"limits": {"memory": "64Mi", "cpu": "500m"}}))
    terminated = eventually(
        lambda: main_status(pod(stack, namespace, "greedy")).get("state", {})
        .get("terminated"), 90, "terminated")
    assert terminated["reason"] == "OOMKilled"


def test_a_second_stack_is_refused(stack: StackInfo, tmp_path: Path) -> None:
    with pytest.raises(StartError, match=stack.state_dir):
        start(tmp_path / "second")
    assert not (tmp_path / "second").exists()


def test_liveness_probe_restarts_a_frozen_worker_which_resumes_its_session(
        stack: StackInfo, namespace: str, database: str) -> None:
    """A SIGSTOPped session worker keeps its lock (its socket stays open) until its exec
    liveness probe (the session pod template's) fails; the kubelet kills it (SIGKILL ends a
    stopped process) and restarts it, and the session is connected again with the device it
    had: no new link."""
    import asyncio
    import random

    import asyncpg
    import redis

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
        "SALON_REDIS_URL": stack.redis_url, "SALON_HEARTBEAT_TTL_S": "6"}.items()]
    env.append({"name": "SALON_POD_NAME",
                "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}})
    manifest = {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "worker"},
        "spec": {"restartPolicy": "Always", "terminationGracePeriodSeconds": 30,
                 "automountServiceAccountToken": False,
                 "containers": [{"name": "worker", "image": stack.worker_image,
                                 "imagePullPolicy": "Never",
                                 "command": ["salon-sessions", "worker"], "env": env,
                                 "livenessProbe": LIVENESS_PROBE}]},
    }
    stack.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(manifest))
    r = redis.Redis.from_url(stack.redis_url)
    key = channels.session_state_key(company)
    try:
        eventually(lambda: r.hget(key, "connected") == b"true", 90, "connected")
        # the worker can say so before the kubelet has reported its container (seen once
        # on a loaded machine): wait for the pod status to name it
        p = eventually(lambda: "containerID" in main_status(pod(stack, namespace, "worker"))
                       and pod(stack, namespace, "worker"), 30, "the container in the status")
        pid = node.container_pid(main_status(p)["containerID"])
        os.kill(pid, signal.SIGSTOP)  # frozen: lock held, nothing answers

        p = eventually(lambda: main_status(pod(stack, namespace, "worker"))
                       .get("restartCount") == 1 and pod(stack, namespace, "worker"), 120,
                       "restarted by its liveness probe")
        assert not pid_alive(pid)
        assert main_status(p)["lastState"]["terminated"]["exitCode"] == 137
        killing = get_json(stack, "events", "-n", namespace, "--field-selector",
                           "involvedObject.name=worker,reason=Killing")["items"]
        assert any("liveness probe" in e["message"] for e in killing)
        # the new process took the lock over and resumed the linked device
        eventually(lambda: r.hget(key, "connected") == b"true"
                   and r.hget(key, "linked") == b"true", 90, "connected again")
        logs = stack.kubectl("logs", "worker", "-n", namespace).stdout
        assert "lock acquired" in logs
    finally:
        r.close()
        stack.kubectl("delete", "pod", "worker", "-n", namespace, "--wait=false", check=False)
