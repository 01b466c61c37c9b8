"""The local real node's figures: stack start, pod apply -> Ready, a SalonSession's worker
from created to container running to `connected`, and what a session pod costs in memory.

    .venv/bin/python -m benchmarks.node_pods [--state-dir DIR] [--settle 20]

Starts the local stack (the one per machine; its start time is the first figure: with the
images cached and already imported it is the warm start), then:

- a pod of the project image with an exec readiness probe: apply -> Ready;
- the operator on the host and a SalonSession (simulator driver): created -> container
  running -> QR shown -> (the phone scans at once) -> status `connected`;
- memory after `--settle` seconds: the containerd shim and the pause process of the session
  pod (RSS and PSS from /proc), the worker container's cgroup (working set = usage minus
  inactive file pages, as the kubelet reports it; RSS from memory.stat), and the RSS of the
  node's daemons (containerd, kubelet, kube-proxy, kube-router);
- a second SalonSession with the neonize driver (its Go core loaded, in its network-retry
  loop: no WhatsApp network here): its worker container's working set and RSS.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from devstack import node, stack

MIB = 2**20


def smaps(pid: int) -> tuple[float, float]:
    """RSS and PSS of one process, MiB."""
    values = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        key, _, rest = line.partition(":")
        values[key] = int(rest.split()[0]) * 1024
    return values["Rss"] / MIB, values["Pss"] / MIB


def cgroup_memory(pod_uid: str, container_id: str) -> tuple[float, float]:
    """Working set and RSS of a container's memory cgroup (v1), MiB."""
    cid = container_id.removeprefix("containerd://")
    matches = list(Path("/sys/fs/cgroup/memory/kubepods").rglob(f"pod{pod_uid}/{cid}"))
    cg = matches[0]
    stat = dict(line.split() for line in (cg / "memory.stat").read_text().splitlines())
    usage = int((cg / "memory.usage_in_bytes").read_text())
    return (usage - int(stat["total_inactive_file"])) / MIB, int(stat["total_rss"]) / MIB


def shim_and_pause(sandbox_pid: int) -> dict[str, tuple[float, float]]:
    """The shim is the parent of the pause process (pid 1 of the sandbox)."""
    stat = Path(f"/proc/{sandbox_pid}/stat").read_text()
    shim = int(stat.rsplit(")", 1)[1].split()[1])
    return {"containerd-shim": smaps(shim), "pause": smaps(sandbox_pid)}


def get(info: stack.StackInfo, *args: str) -> dict[str, Any]:
    out = info.kubectl("get", *args, "-o", "json", check=False)
    return json.loads(out.stdout) if out.returncode == 0 else {}


def wait(what: str, check: Any, timeout: float = 120) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise SystemExit(f"timed out: {what}")


def pod_ready(info: stack.StackInfo, ns: str) -> float:
    manifest = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "probe"},
                "spec": {"automountServiceAccountToken": False, "containers": [{
                    "name": "main", "image": info.worker_image, "imagePullPolicy": "Never",
                    "command": ["python", "-c", "import time; open('/tmp/ok', 'w'); "
                                "time.sleep(600)"],
                    "readinessProbe": {"exec": {"command": ["cat", "/tmp/ok"]},
                                       "periodSeconds": 1}}]}}
    t0 = time.monotonic()
    info.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(manifest))
    wait("pod Ready", lambda: any(
        c["type"] == "Ready" and c["status"] == "True"
        for c in get(info, "pod", "probe", "-n", ns).get("status", {}).get("conditions", [])))
    elapsed = time.monotonic() - t0
    info.kubectl("delete", "pod", "probe", "-n", ns, "--wait=false")
    return elapsed


def scan_when_shown(info: stack.StackInfo, company: str) -> float:
    """Play the phone: scan the QR once the worker shows one; when it was shown."""
    import redis

    from salon_sessions.core import channels

    r = redis.Redis.from_url(info.redis_url)
    try:
        qr = wait("a QR on screen", lambda: r.get(channels.latest_qr_key(company)))
        shown = time.time()
        r.publish(channels.simulator_channel(company), json.dumps(
            {"action": "scan", "qr": qr.decode(), "phone": "79686484488"}))
        return shown
    finally:
        r.close()


def session(info: stack.StackInfo, ns: str, settle: float) -> dict[str, Any]:
    company = f"company_{random.randint(10**8, 10**9)}"
    name = company.replace("_", "-")
    # the simulator shows its first QR after 0.5 s (default 60 s, a human's pace)
    stack.start_operator(Path(info.state_dir), info, namespace=ns, env={
        "SALON_WORKER_ENV": json.dumps({"SALON_SIMULATOR_FIRST_QR_S": "0.5"})})
    body = {"apiVersion": "wa.salonsessions.io/v1alpha1", "kind": "SalonSession",
            "metadata": {"name": name},
            "spec": {"companyId": company, "driver": "simulator"}}
    created = time.time()
    info.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(body))
    wait("the worker container running", lambda: "running" in (
        (get(info, "pod", f"{name}-0", "-n", ns).get("status", {})
         .get("containerStatuses") or [{}])[0].get("state", {})))
    running = time.time()
    shown = scan_when_shown(info, company)
    status = wait("connected", lambda: (s := get(info, "salonsession", name, "-n", ns)
                                        .get("status", {})).get("connected") and s)
    connected = time.time()
    pod = get(info, "pod", f"{name}-0", "-n", ns)
    state = pod["status"]["containerStatuses"][0]
    time.sleep(settle)
    cid = state["containerID"]
    sandbox = node.container_pid(cid)  # the worker; its sandbox's pause is found below
    pause = next(int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()
                 and (p / "cmdline").read_bytes().startswith(b"/pause")
                 and _same_pod(int(p.name), sandbox))
    working_set, rss = cgroup_memory(pod["metadata"]["uid"], cid)
    return {"phase": status.get("phase"),
            "created_to_running_s": round(running - created, 1),
            "created_to_qr_shown_s": round(shown - created, 1),
            "created_to_connected_s": round(connected - created, 1),
            "worker_working_set_mib": round(working_set, 1), "worker_rss_mib": round(rss, 1),
            **{f"{k}_rss_pss_mib": [round(v, 1) for v in rss_pss]
               for k, rss_pss in shim_and_pause(pause).items()}}


def neonize_session(info: stack.StackInfo, ns: str, settle: float) -> dict[str, float]:
    """The neonize driver's worker container, `settle` s after it started."""
    company = f"company_{random.randint(10**8, 10**9)}"
    name = company.replace("_", "-")
    body = {"apiVersion": "wa.salonsessions.io/v1alpha1", "kind": "SalonSession",
            "metadata": {"name": name}, "spec": {"companyId": company, "driver": "neonize"}}
    info.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(body))
    wait("the neonize worker container running", lambda: "running" in (
        (get(info, "pod", f"{name}-0", "-n", ns).get("status", {})
         .get("containerStatuses") or [{}])[0].get("state", {})))
    time.sleep(settle)
    pod = get(info, "pod", f"{name}-0", "-n", ns)
    state = pod["status"]["containerStatuses"][0]
    working_set, rss = cgroup_memory(pod["metadata"]["uid"], state["containerID"])
    return {"neonize_worker_working_set_mib": round(working_set, 1),
            "neonize_worker_rss_mib": round(rss, 1),
            "neonize_worker_restarts": state.get("restartCount", 0)}


def _same_pod(pause: int, worker: int) -> bool:
    """Both in one pod: they share the network namespace."""
    try:
        return (Path(f"/proc/{pause}/ns/net").readlink()
                == Path(f"/proc/{worker}/ns/net").readlink())
    except OSError:
        return False


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--state-dir", type=Path)
    p.add_argument("--settle", type=float, default=20)
    p.add_argument("--bin-dir", type=Path, help="the Kubernetes binaries (default: "
                   "scripts/build-k8s.sh's); give it to time a cold start with an empty "
                   "SALON_CACHE_DIR (images built and imported from nothing)")
    args = p.parse_args()
    state_dir = args.state_dir or Path(tempfile.mkdtemp(prefix="salon-node-bench-"))
    t0 = time.monotonic()
    info = stack.start(state_dir, bin_dir=args.bin_dir)
    figures: dict[str, Any] = {"stack_start_s": round(time.monotonic() - t0, 1)}
    try:
        ns = "bench"
        info.kubectl("create", "namespace", ns)
        info.kubectl("wait", "--for=create", "serviceaccount/default", "-n", ns,
                     "--timeout=60s")
        info.kubectl("apply", "-f", str(stack.REPO / "crds"))
        figures["pod_apply_to_ready_s"] = round(pod_ready(info, ns), 1)
        figures.update(session(info, ns, args.settle))
        figures.update(neonize_session(info, ns, args.settle))
        figures["node_rss_mib"] = {
            name: round(smaps(int((state_dir / "pids" / f"{name}.pid").read_text()))[0], 1)
            for name in node.STOP_ORDER}
    finally:
        stack.stop(state_dir)
        if args.state_dir is None:
            shutil.rmtree(state_dir, ignore_errors=True)
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
