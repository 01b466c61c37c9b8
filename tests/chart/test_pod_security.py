"""What the chart promises, checked on the running pods of a release on the real node (the
kernel's view of each container's process, not the pod spec):

- every container runs as uid/gid 10001, without capabilities, without new privileges,
  under seccomp, on a read-only root filesystem (a write to / fails, /tmp is writable);
- its cgroup carries the chart's resource limits;
- both worker drivers work under all that: a simulator session shows a QR, a neonize
  session loads neonize's Go core and sits in its network-retry loop (there is no
  WhatsApp network here) without crashing;
- the probes are real: a worker whose event loop stops fails its liveness probe and the
  kubelet restarts it;
- SIGTERM (pod deletion) within the grace period: the worker publishes its final state
  (disconnected, not reconnecting), releases the session's PostgreSQL advisory lock and
  exits before the kubelet would kill it.
"""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from salon_sessions.core import channels
from salon_sessions.db.locks import key_halves, session_lock_key
from salon_sessions.worker.neonize.goenv import exec_environment
from tests.chart.conftest import Release, pod_pid, psql
from tests.helpers import eventually
from tests.worker.harness import observing

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

SIMULATOR = f"company_{uuid.uuid4().int % 10**9 + 10**9}"
NEONIZE = f"company_{uuid.uuid4().int % 10**9 + 10**9}"
PHONE = "79686484488"
UID = 10001
MEMORY_LIMIT = 512 * 1024 * 1024  # the chart's default limits: 512Mi, 1 CPU
CPU_QUOTA_US, CPU_PERIOD_US = 100_000, 100_000


@pytest.fixture(scope="module")
def sessions(release_on_node: Release) -> Iterator[dict[str, str]]:
    """A simulator and a neonize session, both started at once; their names by driver."""
    rel = release_on_node
    names = {"simulator": rel.create_session(SIMULATOR, "simulator"),
             "neonize": rel.create_session(NEONIZE, "neonize")}
    for name in names.values():
        eventually(lambda n=name: _running(rel.worker_pod(n)), 180, f"{name}'s worker runs")
    yield names
    for name in names.values():
        rel.kubectl("delete", "salonsession", name, "--wait=false", check=False)


def _running(pod: dict[str, Any]) -> bool:
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    return bool(statuses) and "running" in statuses[0]["state"]


def _all_pods(rel: Release, sessions: dict[str, str]) -> list[dict[str, Any]]:
    return [*rel.pods("operator"), *rel.pods("api"),
            *(rel.worker_pod(name) for name in sessions.values())]


def _proc_status(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {k: v.strip() for k, _, v in (line.partition(":") for line in lines)}


def _cgroup(pid: int, controller: str) -> Path:
    """The container's cgroup v1 directory of `controller` (from /proc/<pid>/cgroup)."""
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if controller in controllers.split(","):
            return Path("/sys/fs/cgroup") / controllers / path.lstrip("/")
    raise AssertionError(f"pid {pid} has no {controller} cgroup")


def _exec(rel: Release, pod: str, code: str) -> tuple[int, str]:
    out = rel.kubectl("exec", pod, "--", "python", "-c", code, check=False)
    return out.returncode, out.stdout + out.stderr


# ---- the kernel's view of every container -----------------------------------------------

def test_every_container_runs_as_10001_without_capabilities(
        release_on_node: Release, sessions: dict[str, str]) -> None:
    pods = _all_pods(release_on_node, sessions)
    assert len(pods) == 6
    for pod in pods:
        name = pod["metadata"]["name"]
        status = _proc_status(pod_pid(pod))
        assert status["Uid"].split() == [str(UID)] * 4, (name, status["Uid"])
        assert status["Gid"].split() == [str(UID)] * 4, (name, status["Gid"])
        for caps in ("CapEff", "CapPrm", "CapInh", "CapAmb"):
            assert int(status[caps], 16) == 0, (name, caps, status[caps])
        assert status["NoNewPrivs"] == "1", name
        assert status["Seccomp"] == "2", name  # a filter: RuntimeDefault


def test_root_filesystem_is_read_only_and_tmp_writable(
        release_on_node: Release, sessions: dict[str, str]) -> None:
    for pod in _all_pods(release_on_node, sessions):
        name = pod["metadata"]["name"]
        mounts = Path(f"/proc/{pod_pid(pod)}/mountinfo").read_text().splitlines()
        root = [m.split() for m in mounts if m.split()[4] == "/"][-1]
        assert "ro" in root[5].split(","), (name, root)
        code, out = _exec(release_on_node, name, "open('/salon-probe', 'w')")
        assert code != 0, (name, out)
        assert "Read-only file system" in out, (name, out)
        code, out = _exec(release_on_node, name,
                          "import os; open('/tmp/salon-probe', 'w').write('x'); "
                          "os.remove('/tmp/salon-probe'); print(os.getuid())")
        assert code == 0, (name, out)
        assert out.strip() == str(UID), (name, out)


def test_the_cgroups_carry_the_charts_limits(
        release_on_node: Release, sessions: dict[str, str]) -> None:
    for pod in _all_pods(release_on_node, sessions):
        name = pod["metadata"]["name"]
        pid = pod_pid(pod)
        memory = _cgroup(pid, "memory")
        assert int((memory / "memory.limit_in_bytes").read_text()) == MEMORY_LIMIT, name
        cpu = _cgroup(pid, "cpu")
        assert int((cpu / "cpu.cfs_quota_us").read_text()) == CPU_QUOTA_US, name
        assert int((cpu / "cpu.cfs_period_us").read_text()) == CPU_PERIOD_US, name
        assert int((cpu / "cpu.shares").read_text()) == 51, name  # the 50m request


# ---- both drivers work under it -----------------------------------------------------------

def test_simulator_worker_shows_a_qr(release_on_node: Release,
                                     sessions: dict[str, str]) -> None:
    name = sessions["simulator"]
    eventually(lambda: release_on_node.status(name).get("phase") == "AwaitingLink", 120,
               "the simulator worker shows a QR")
    r = redis.Redis.from_url(release_on_node.stack.redis_url)
    try:
        assert r.get(channels.latest_qr_key(SIMULATOR))
    finally:
        r.close()


def test_neonize_worker_loads_its_go_core_and_retries_the_network(
        release_on_node: Release, sessions: dict[str, str]) -> None:
    """No WhatsApp network here: the neonize worker must sit in its retry loop holding
    the session lock, not crash and not claim linked or connected."""
    rel = release_on_node
    name = sessions["neonize"]
    r = redis.Redis.from_url(rel.stack.redis_url)
    try:
        state = eventually(lambda: (s := {k.decode(): v.decode() for k, v in r.hgetall(
            channels.session_state_key(NEONIZE)).items()}).get("lock")
            == "holding the session lock" and s, 120, "the neonize worker holds the lock")
    finally:
        r.close()
    assert state["driver"] == "neonize"
    assert state["linked"] == "false"
    assert state["connected"] == "false"

    def retrying() -> bool:
        logs = rel.kubectl("logs", f"{name}-0", check=False).stdout
        return "WhatsApp unreachable, retrying" in logs

    eventually(retrying, 120, "the network-retry loop")
    pod = rel.worker_pod(name)
    maps = Path(f"/proc/{pod_pid(pod)}/maps").read_text()
    assert "neonize-linux-amd64.so" in maps  # the Go core is loaded in the process
    # the Go core's environment, as Go reads it (the exec-time one; the worker re-executed
    # itself with GOMEMLIMIT derived from the container's limit, read by the downward API)
    env = exec_environment(pod_pid(pod))
    assert env["NEONIZE_BOT_TAG"] == "off"
    assert env["SALON_MEMORY_LIMIT_BYTES"] == str(MEMORY_LIMIT)
    assert env["GOMEMLIMIT"] == str(MEMORY_LIMIT // 2)
    assert env["GOGC"] == "100"
    assert pod["status"]["containerStatuses"][0]["restartCount"] == 0
    assert rel.status(name).get("connected") is not True


# ---- probes --------------------------------------------------------------------------------

def test_a_stuck_worker_fails_its_liveness_probe_and_is_restarted(
        release_on_node: Release, sessions: dict[str, str]) -> None:
    """SIGSTOP freezes the worker's event loop: its fence state in /tmp goes stale, the
    exec probe `python -m salon_sessions.worker.fence` fails, the kubelet kills and
    restarts the container."""
    rel = release_on_node
    name = sessions["neonize"]
    pod = rel.worker_pod(name)
    before = pod["status"]["containerStatuses"][0]["restartCount"]
    os.kill(pod_pid(pod), signal.SIGSTOP)
    status = eventually(
        lambda: (s := rel.worker_pod(name)["status"]["containerStatuses"][0])
        ["restartCount"] > before and s, 120, "the kubelet restarts the container")
    assert "terminated" in status["lastState"], status
    events = rel.get("events", "--field-selector", f"involvedObject.name={name}-0")["items"]
    reasons = " ".join(f"{e['reason']}: {e['message']}" for e in events)
    assert "Liveness probe failed" in reasons, reasons
    eventually(lambda: _running(rel.worker_pod(name)), 60, "running again")


# ---- SIGTERM -------------------------------------------------------------------------------

def _lock_holders(rel: Release, company: str) -> list[int]:
    classid, objid = key_halves(session_lock_key(company))
    out = psql(rel.stack, "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted "
               f"AND classid = {classid} AND objid = {objid} AND objsubid = 1 AND database = "
               "(SELECT oid FROM pg_database WHERE datname = current_database())",
               rel.database)
    return [int(p) for p in out.split()]


async def test_sigterm_publishes_the_final_state_and_releases_the_lock(
        release_on_node: Release, sessions: dict[str, str]) -> None:
    rel = release_on_node
    name = sessions["simulator"]
    async with observing(rel.stack.redis_url, SIMULATOR) as obs:
        r = redis.Redis.from_url(rel.stack.redis_url)
        try:
            qr = eventually(lambda: r.get(channels.latest_qr_key(SIMULATOR)), 60, "a QR")
            r.publish(channels.simulator_channel(SIMULATOR), json.dumps(
                {"action": "scan", "qr": qr.decode(), "phone": PHONE}))
        finally:
            r.close()
        await obs.wait_event("connected", timeout=60)
        eventually(lambda: rel.status(name).get("connected") is True, 60, "connected")
        holders = _lock_holders(rel, SIMULATOR)
        assert len(holders) == 1, holders
        grace = rel.worker_pod(name)["spec"]["terminationGracePeriodSeconds"]
        old_uid = rel.worker_pod(name)["metadata"]["uid"]
        started = time.monotonic()
        rel.kubectl("delete", "pod", f"{name}-0", "--wait=false")
        final = await obs.wait_event("disconnected", timeout=grace)
        assert final["data"]["will_reconnect"] is False, final
        # the operator turns it into the status before the next worker is up
        eventually(lambda: rel.status(name).get("connected") is False, 10,
                   "the status says disconnected", interval=0.1)
        eventually(lambda: holders[0] not in _lock_holders(rel, SIMULATOR), grace,
                   "the lock released")
        eventually(lambda: rel.worker_pod(name).get("metadata", {}).get("uid") != old_uid,
                   grace, "the old pod gone")
        elapsed = time.monotonic() - started
        assert elapsed < grace - 5, f"{elapsed:.1f} s: the kubelet had to kill the worker"
    # the StatefulSet's new pod takes the lock and reconnects (the link is kept)
    eventually(lambda: rel.status(name).get("connected") is True, 120,
               "the new worker reconnects")
