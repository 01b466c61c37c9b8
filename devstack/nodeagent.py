"""A dev-only node agent: the virtual-kubelet idea without a container runtime.

It registers a Ready Node, runs the containers of pods bound to it as local processes (the
pod's command, args and env, with Secret and ConfigMap references resolved), reports the
Pod's phase, conditions, container statuses and restart counts, restarts containers per the
pod's restartPolicy, runs their liveness probes (httpGet, exec) and restarts a container
that fails one, kills the process group when the pod is deleted (honouring the grace
period), and serves `kubectl logs`. Limits are listed in docs/NODE_AGENT.md.

    python -m devstack.nodeagent --kubeconfig K --node-name N --state-dir D \
        --tls-cert C --tls-key K
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import datetime as dt
import json
import logging
import os
import shutil
import signal
import ssl
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from aiohttp import web

from devstack.kubeclient import JSON, KubeClient, KubeConfig, KubeError
from devstack.procs import free_port

log = logging.getLogger("nodeagent")
BACKOFF_START, BACKOFF_MAX = 1.0, 30.0
LEASE_SECONDS = 40
PR_SET_PDEATHSIG = 1


def now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def load_kubeconfig(path: Path) -> KubeConfig:
    cfg = json.loads(path.read_text())
    cluster = cfg["clusters"][0]["cluster"]
    return KubeConfig(cluster["server"], cfg["users"][0]["user"]["token"],
                      cluster["certificate-authority"])


class ConfigError(Exception):
    """The container cannot be started as specified (CreateContainerConfigError)."""


def _die_with_parent() -> None:  # runs in the child between fork and exec
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


@dataclass
class Container:
    """One container of a pod, run as a local process group."""

    pod: PodRunner
    spec: JSON
    restart_count: int = 0
    state: JSON = field(default_factory=lambda: {"waiting": {"reason": "ContainerCreating"}})
    last_state: JSON = field(default_factory=dict)
    proc: asyncio.subprocess.Process | None = None
    stopping: bool = False
    task: asyncio.Task[None] | None = None
    env: dict[str, str] = field(default_factory=dict)
    cwd: str = ""
    probe_failure: str = ""

    @property
    def name(self) -> str:
        return str(self.spec["name"])

    @property
    def log_path(self) -> Path:
        return self.pod.dir / f"{self.name}.log"

    def status(self) -> JSON:
        running = "running" in self.state
        return {
            "name": self.name,
            "image": self.spec.get("image", ""),
            "imageID": "",
            "containerID": f"local://{self.proc.pid}" if self.proc and running else "",
            "ready": running,
            "started": running,
            "restartCount": self.restart_count,
            "state": self.state,
            "lastState": self.last_state,
        }

    async def run(self) -> None:
        if self.pod.agent.no_run:
            # benchmark mode: report the container running, start nothing
            self.state = {"running": {"startedAt": now()}}
            await self.pod.report()
            return
        backoff = BACKOFF_START
        policy = self.pod.spec.get("restartPolicy", "Always")
        while not self.stopping:
            try:
                argv, env, cwd = await self.pod.agent.resolve(self.pod, self.spec)
                self.env, self.cwd = env, cwd
                self.log_path.parent.mkdir(parents=True, exist_ok=True)
                with open(self.log_path, "ab") as out:
                    self.proc = await asyncio.create_subprocess_exec(
                        *argv, env=env, cwd=cwd, stdin=asyncio.subprocess.DEVNULL,
                        stdout=out, stderr=asyncio.subprocess.STDOUT,
                        start_new_session=True, preexec_fn=_die_with_parent,
                    )
            except (ConfigError, OSError) as exc:
                reason = ("CreateContainerConfigError" if isinstance(exc, ConfigError)
                          else "RunContainerError")
                self.state = {"waiting": {"reason": reason, "message": str(exc)}}
                await self.pod.report()
                await self._sleep(BACKOFF_START * 2)
                continue
            self.pod.agent.track(self.proc.pid)
            started = now()
            self.state = {"running": {"startedAt": started}}
            self.probe_failure = ""
            await self.pod.report()
            prober = asyncio.create_task(self._liveness(self.proc))
            code = await self.proc.wait()
            prober.cancel()
            self.pod.agent.untrack(self.proc.pid)
            self.last_state = {}
            terminated = {
                "exitCode": code if code >= 0 else 128 - code,
                "reason": "Completed" if code == 0 else ("Error" if code > 0 else "Killed"),
                "startedAt": started, "finishedAt": now(),
            }
            if code < 0:
                terminated["signal"] = -code
            if self.probe_failure:
                terminated["message"] = f"liveness probe failed: {self.probe_failure}"[:1024]
            self.state = {"terminated": terminated}
            if self.stopping:
                break
            restart = policy == "Always" or (policy == "OnFailure" and code != 0)
            if not restart:
                await self.pod.report()
                break
            self.last_state = {"terminated": terminated}
            self.state = {"waiting": {"reason": "CrashLoopBackOff",
                                      "message": f"back-off {backoff:.0f}s restarting"}}
            self.restart_count += 1
            await self.pod.report()
            await self._sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX)

    # ---- liveness probes (as the kubelet runs them)
    async def _liveness(self, proc: asyncio.subprocess.Process) -> None:
        """Probe every periodSeconds after initialDelaySeconds; after failureThreshold
        failures in a row kill the container (SIGTERM, the probe's or the pod's grace,
        SIGKILL, which also ends a SIGSTOPped process); `run` then restarts it."""
        probe: JSON | None = self.spec.get("livenessProbe")
        if not probe:
            return
        await asyncio.sleep(float(probe.get("initialDelaySeconds", 0)))
        failures = 0
        while proc.returncode is None:
            ok, detail = await self.probe_once(probe)
            failures = 0 if ok else failures + 1
            if failures >= int(probe.get("failureThreshold", 3)):
                self.probe_failure = detail
                log.warning("%s/%s container %s failed its liveness probe (%s); restarting",
                            self.pod.namespace, self.pod.name, self.name, detail)
                grace = float(probe.get("terminationGracePeriodSeconds")
                              or self.pod.spec.get("terminationGracePeriodSeconds") or 30)
                await self._kill(proc, grace)
                return
            await asyncio.sleep(float(probe.get("periodSeconds", 10)))

    async def probe_once(self, probe: JSON) -> tuple[bool, str]:
        """One probe: httpGet (2xx/3xx) or exec (exit 0), within timeoutSeconds."""
        timeout = float(probe.get("timeoutSeconds", 1))
        if "httpGet" in probe:
            get = probe["httpGet"]
            port = self._port(get["port"])
            url = f"{get.get('scheme', 'HTTP').lower()}://{get.get('host') or '127.0.0.1'}:" \
                  f"{port}{get.get('path', '/')}"
            try:
                async with aiohttp.ClientSession(
                        timeout=aiohttp.ClientTimeout(total=timeout)) as http, \
                        http.get(url, headers={h["name"]: h["value"] for h in
                                               get.get("httpHeaders", [])}) as resp:
                    return 200 <= resp.status < 400, f"HTTP probe {url}: {resp.status}"
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                return False, f"HTTP probe {url}: {type(exc).__name__}"
        if "exec" in probe:
            cmd = [str(a) for a in probe["exec"]["command"]]
            try:
                child = await asyncio.create_subprocess_exec(
                    *cmd, env=self.env, cwd=self.cwd or None, stdin=asyncio.subprocess.DEVNULL,
                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
                    start_new_session=True)
            except OSError as exc:
                return False, f"exec probe {cmd[0]}: {exc}"
            try:
                async with asyncio.timeout(timeout):
                    out, _ = await child.communicate()
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.pid, signal.SIGKILL)
                await child.wait()
                return False, f"exec probe timed out after {timeout:.0f}s"
            text = out.decode(errors="replace").strip()[:200]
            return child.returncode == 0, f"exec probe exit {child.returncode}: {text}"
        return True, "no supported probe handler (grpc/tcpSocket are not run)"

    def _port(self, port: int | str) -> int:
        if isinstance(port, int) or str(port).isdigit():
            return int(port)
        for p in self.spec.get("ports", []):
            if p.get("name") == port:
                return int(p["containerPort"])
        raise ValueError(f"no container port named {port!r}")

    async def _kill(self, proc: asyncio.subprocess.Process, grace: float) -> None:
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(proc.wait(), timeout=max(wait, 0.1))
                return

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(seconds)

    async def stop(self, grace: float) -> None:
        self.stopping = True
        proc = self.proc
        if proc is not None and proc.returncode is None:
            await self._kill(proc, grace)
        # the group may hold children that outlive the leader
        if proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task


class PodRunner:
    def __init__(self, agent: NodeAgent, pod: JSON) -> None:
        self.agent = agent
        self.meta: JSON = pod["metadata"]
        self.spec: JSON = pod["spec"]
        self.uid: str = self.meta["uid"]
        self.dir = agent.state_dir / "pods" / f"{self.namespace}_{self.name}_{self.uid}"
        self.containers = [Container(self, c) for c in self.spec.get("containers", [])]
        self.start_time = now()
        self.deleting = False
        self._report_lock = asyncio.Lock()
        self._last_report: JSON | None = None
        self._transitions: dict[str, str] = {}

    @property
    def name(self) -> str:
        return str(self.meta["name"])

    @property
    def namespace(self) -> str:
        return str(self.meta["namespace"])

    @property
    def path(self) -> str:
        return f"/api/v1/namespaces/{self.namespace}/pods/{self.name}"

    def start(self) -> None:
        for c in self.containers:
            c.task = asyncio.create_task(c.run(), name=f"{self.name}/{c.name}")

    def phase(self) -> str:
        states = [c.state for c in self.containers]
        if any("running" in s for s in states):
            return "Running"
        if states and all("terminated" in s for s in states):
            if all(s["terminated"]["exitCode"] == 0 for s in states):
                return "Succeeded"
            return "Failed"
        if any(c.restart_count for c in self.containers):
            return "Running"
        return "Pending"

    def _condition(self, ctype: str, ok: bool, reason: str = "") -> JSON:
        status = "True" if ok else "False"
        key = f"{ctype}={status}"
        if self._transitions.get(ctype, "").split("@")[0] != key:
            self._transitions[ctype] = f"{key}@{now()}"
        cond: JSON = {"type": ctype, "status": status,
                      "lastTransitionTime": self._transitions[ctype].split("@")[1]}
        if reason and not ok:
            cond["reason"] = reason
        return cond

    def status(self) -> JSON:
        ready = bool(self.containers) and all("running" in c.state for c in self.containers)
        phase = self.phase()
        reason = "PodCompleted" if phase in ("Succeeded", "Failed") else "ContainersNotReady"
        return {
            "phase": phase,
            "hostIP": "127.0.0.1", "hostIPs": [{"ip": "127.0.0.1"}],
            "podIP": "127.0.0.1", "podIPs": [{"ip": "127.0.0.1"}],
            "startTime": self.start_time,
            "conditions": [
                self._condition("PodReadyToStartContainers", True),
                self._condition("Initialized", True),
                self._condition("Ready", ready, reason),
                self._condition("ContainersReady", ready, reason),
                self._condition("PodScheduled", True),
            ],
            "containerStatuses": [c.status() for c in self.containers],
        }

    async def report(self) -> None:
        async with self._report_lock:
            status = self.status()
            if status == self._last_report or (self.deleting and status["phase"] == "Running"):
                return
            try:
                await self.agent.kube.merge_patch(f"{self.path}/status", {"status": status})
                self._last_report = status
            except KubeError as exc:
                if exc.status != 404:
                    log.warning("status of %s/%s: %s", self.namespace, self.name, exc)

    async def terminate(self, grace: float, final_delete: bool) -> None:
        """Stop every container (SIGTERM, grace, SIGKILL); then remove the pod object."""
        self.deleting = True
        await asyncio.gather(*(c.stop(grace) for c in self.containers))
        if final_delete:
            with contextlib.suppress(KubeError):
                await self.agent.kube.delete(self.path, {
                    "kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 0,
                    "preconditions": {"uid": self.uid},
                })
        shutil.rmtree(self.dir, ignore_errors=True)


class NodeAgent:
    def __init__(self, kube: KubeClient, node_name: str, state_dir: Path,
                 tls_cert: Path, tls_key: Path, no_run: bool = False) -> None:
        self.kube = kube
        self.no_run = no_run
        self.node_name = node_name
        self.state_dir = state_dir
        self.tls_cert, self.tls_key = tls_cert, tls_key
        self.pods: dict[str, PodRunner] = {}
        self.port = free_port()
        self.pid_dir = state_dir / "container-pids"
        self.pid_dir.mkdir(parents=True, exist_ok=True)

    # ---- process bookkeeping (so that `devstack down` and a restarted agent find them)
    def track(self, pid: int) -> None:
        (self.pid_dir / f"{pid}.pid").write_text(str(pid))

    def untrack(self, pid: int) -> None:
        (self.pid_dir / f"{pid}.pid").unlink(missing_ok=True)

    def kill_leftovers(self) -> None:
        for f in self.pid_dir.glob("*.pid"):
            with contextlib.suppress(ProcessLookupError, ValueError, PermissionError):
                os.killpg(int(f.stem), signal.SIGKILL)
            f.unlink(missing_ok=True)

    # ---- env and command resolution
    async def resolve(self, pod: PodRunner, spec: JSON) -> tuple[list[str], dict[str, str], str]:
        argv = [*spec.get("command", []), *spec.get("args", [])]
        if not spec.get("command"):
            raise ConfigError("this node agent has no images: the container needs a command")
        env: dict[str, str] = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(pod.dir),
            "LANG": "C.UTF-8",
            "HOSTNAME": pod.name,
        }
        server = self.kube.config.server.removeprefix("https://")
        host, _, port = server.partition(":")
        env |= {"KUBERNETES_SERVICE_HOST": host, "KUBERNETES_SERVICE_PORT": port}
        # the container's own /tmp (pods share this host): kept across restarts, like an
        # emptyDir, so that an exec probe sees what the container wrote there
        tmp = pod.dir / f"{spec['name']}.tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        env["TMPDIR"] = str(tmp)
        for src in spec.get("envFrom", []):
            prefix = src.get("prefix", "")
            if "secretRef" in src:
                data = await self._object_data("secrets", pod.namespace, src["secretRef"])
            else:
                data = await self._object_data("configmaps", pod.namespace, src["configMapRef"])
            env |= {prefix + k: v for k, v in data.items()}
        for var in spec.get("env", []):
            env[var["name"]] = await self._env_value(pod, var)
        argv = [_expand(a, env) for a in argv]
        cwd = spec.get("workingDir") or str(pod.dir)
        Path(cwd).mkdir(parents=True, exist_ok=True)
        return argv, env, cwd

    async def _object_data(self, kind: str, ns: str, ref: JSON) -> dict[str, str]:
        try:
            obj = await self.kube.get(f"/api/v1/namespaces/{ns}/{kind}/{ref['name']}")
        except KubeError as exc:
            if exc.status == 404 and ref.get("optional"):
                return {}
            raise ConfigError(f"{kind[:-1]} {ref['name']!r}: {exc.body}") from exc
        data: dict[str, str] = dict(obj.get("data") or {})
        if kind == "secrets":
            import base64

            data = {k: base64.b64decode(v).decode() for k, v in data.items()}
        return data

    async def _env_value(self, pod: PodRunner, var: JSON) -> str:
        if "value" in var:
            return str(var["value"])
        src = var.get("valueFrom", {})
        if "secretKeyRef" in src or "configMapKeyRef" in src:
            kind, ref = (("secrets", src["secretKeyRef"]) if "secretKeyRef" in src
                         else ("configmaps", src["configMapKeyRef"]))
            data = await self._object_data(kind, pod.namespace, ref)
            if ref["key"] not in data:
                if ref.get("optional"):
                    return ""
                raise ConfigError(f"key {ref['key']!r} not found in {kind[:-1]} {ref['name']!r}")
            return data[ref["key"]]
        if "fieldRef" in src:
            fields = {
                "metadata.name": pod.name, "metadata.namespace": pod.namespace,
                "metadata.uid": pod.uid, "spec.nodeName": self.node_name,
                "spec.serviceAccountName": pod.spec.get("serviceAccountName", ""),
                "status.podIP": "127.0.0.1", "status.hostIP": "127.0.0.1",
            }
            path = src["fieldRef"]["fieldPath"]
            if path.startswith("metadata.labels['"):
                return str(pod.meta.get("labels", {}).get(path[17:-2], ""))
            if path.startswith("metadata.annotations['"):
                return str(pod.meta.get("annotations", {}).get(path[22:-2], ""))
            if path not in fields:
                raise ConfigError(f"fieldRef {path!r} is not supported by the node agent")
            return str(fields[path])
        raise ConfigError(f"env {var['name']!r}: unsupported valueFrom {sorted(src)}")

    # ---- node registration and heartbeat
    def node_object(self) -> JSON:
        return {
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": self.node_name, "labels": {
                "kubernetes.io/hostname": self.node_name, "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64", "salonsessions.io/dev-node": "true"}},
        }

    def node_status(self) -> JSON:
        t = now()
        cpu = str(os.cpu_count() or 2)
        mem = f"{os.sysconf('SC_PHYS_PAGES') * os.sysconf('SC_PAGE_SIZE') // 1024}Ki"
        pods = "110"
        if self.no_run:  # nothing runs, so nothing is scarce: room for thousands of pods
            cpu, mem, pods = "10000", "100Ti", "5000"
        return {
            "capacity": {"cpu": cpu, "memory": mem, "pods": pods},
            "allocatable": {"cpu": cpu, "memory": mem, "pods": pods},
            "addresses": [{"type": "InternalIP", "address": "127.0.0.1"},
                          {"type": "Hostname", "address": self.node_name}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": self.port}},
            "nodeInfo": {
                "machineID": "", "systemUUID": "", "bootID": "",
                "kernelVersion": os.uname().release,
                "osImage": "salon-sessions dev node agent", "containerRuntimeVersion": "local://0",
                "kubeletVersion": "v1.35.4-devnode", "kubeProxyVersion": "",
                "operatingSystem": "linux", "architecture": "amd64",
            },
            "conditions": [
                {"type": t_, "status": "False", "reason": f"No{t_}", "lastHeartbeatTime": t,
                 "lastTransitionTime": t, "message": "node agent has no such pressure"}
                for t_ in ("MemoryPressure", "DiskPressure", "PIDPressure")
            ] + [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                  "message": "node agent is posting ready status", "lastHeartbeatTime": t,
                  "lastTransitionTime": t}],
        }

    async def register(self) -> None:
        path = f"/api/v1/nodes/{self.node_name}"
        try:
            await self.kube.get(path)
        except KubeError as exc:
            if exc.status != 404:
                raise
            await self.kube.create("/api/v1/nodes", self.node_object())
        await self.kube.merge_patch(f"{path}/status", {"status": self.node_status()})

    async def heartbeat(self) -> None:
        leases = "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases"
        lease_path = f"{leases}/{self.node_name}"
        while True:
            t = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            spec = {"holderIdentity": self.node_name, "leaseDurationSeconds": LEASE_SECONDS,
                    "renewTime": t}
            try:
                try:
                    await self.kube.merge_patch(lease_path, {"spec": spec})
                except KubeError as exc:
                    if exc.status != 404:
                        raise
                    await self.kube.create(
                        leases,
                        {"metadata": {"name": self.node_name}, "spec": spec})
                await self.kube.merge_patch(f"/api/v1/nodes/{self.node_name}/status",
                                            {"status": self.node_status()})
            except Exception as exc:
                log.warning("heartbeat failed: %s", exc)
            await asyncio.sleep(10)

    # ---- pods
    async def sync_pods(self) -> None:
        selector = {"fieldSelector": f"spec.nodeName={self.node_name}"}
        while True:
            try:
                listing = await self.kube.get("/api/v1/pods", selector)
                seen = {p["metadata"]["uid"] for p in listing["items"]}
                for pod in listing["items"]:
                    await self.on_pod("MODIFIED", pod)
                for uid in list(self.pods):
                    if uid not in seen:
                        await self.on_pod("DELETED", {"metadata": {"uid": uid}})
                rv = listing["metadata"]["resourceVersion"]
                async for event in self.kube.watch(
                        "/api/v1/pods", {**selector, "resourceVersion": rv}):
                    if event["type"] == "ERROR":
                        break
                    if event["type"] != "BOOKMARK":
                        await self.on_pod(event["type"], event["object"])
            except Exception as exc:
                log.warning("pod watch restarting: %s", exc)
                await asyncio.sleep(1)

    async def on_pod(self, kind: str, pod: JSON) -> None:
        uid = pod["metadata"]["uid"]
        runner = self.pods.get(uid)
        if kind == "DELETED":
            if runner is not None:
                del self.pods[uid]
                log.info("pod %s/%s removed: killing its processes", runner.namespace, runner.name)
                await runner.terminate(0, final_delete=False)
            return
        deleting = pod["metadata"].get("deletionTimestamp")
        if runner is None:
            if deleting or pod.get("status", {}).get("phase") in ("Succeeded", "Failed"):
                if deleting:
                    await PodRunner(self, pod).terminate(0, final_delete=True)
                return
            runner = self.pods[uid] = PodRunner(self, pod)
            log.info("starting pod %s/%s", runner.namespace, runner.name)
            runner.start()
            await runner.report()
        elif deleting and not runner.deleting:
            grace = float(pod["metadata"].get("deletionGracePeriodSeconds", 30))
            log.info("pod %s/%s deleted: stopping (grace %.0fs)", runner.namespace, runner.name,
                     grace)

            async def finish() -> None:
                await runner.terminate(grace, final_delete=True)
                self.pods.pop(uid, None)

            asyncio.create_task(finish())  # noqa: RUF006 - tracked by self.pods

    async def shutdown(self) -> None:
        await asyncio.gather(*(r.terminate(2, final_delete=False) for r in self.pods.values()))

    # ---- kubelet API subset: /containerLogs (used by `kubectl logs`) and /healthz
    async def serve(self) -> web.AppRunner:
        app = web.Application()
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/containerLogs/{ns}/{pod}/{container}", self.container_logs)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(self.tls_cert, self.tls_key)
        await web.TCPSite(runner, "127.0.0.1", self.port, ssl_context=ctx).start()
        return runner

    async def healthz(self, _: web.Request) -> web.StreamResponse:
        return web.Response(text="ok")

    async def container_logs(self, request: web.Request) -> web.StreamResponse:
        ns, name, cname = (request.match_info[k] for k in ("ns", "pod", "container"))
        runner = next((p for p in self.pods.values()
                       if p.namespace == ns and p.name == name), None)
        if runner is None:
            raise web.HTTPNotFound(text=f"pod {ns}/{name} is not on this node")
        path = runner.dir / f"{cname}.log"
        if not path.exists():
            raise web.HTTPNotFound(text=f"no logs for container {cname!r}")
        data = path.read_bytes()
        tail = request.query.get("tailLines")
        if tail is not None:
            data = b"".join(data.splitlines(keepends=True)[-int(tail):])
        resp = web.StreamResponse(headers={"Content-Type": "text/plain"})
        await resp.prepare(request)
        await resp.write(data)
        if request.query.get("follow") == "true":
            offset = path.stat().st_size
            while uid_alive(self, runner.uid):
                await asyncio.sleep(0.5)
                with contextlib.suppress(FileNotFoundError):
                    with open(path, "rb") as f:
                        f.seek(offset)
                        chunk = f.read()
                    if chunk:
                        offset += len(chunk)
                        await resp.write(chunk)
        await resp.write_eof()
        return resp


def uid_alive(agent: NodeAgent, uid: str) -> bool:
    return uid in agent.pods


def _expand(arg: str, env: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion in command and args ($$ escapes)."""
    out, i = [], 0
    while i < len(arg):
        if arg.startswith("$$", i):
            out.append("$")
            i += 2
        elif arg.startswith("$(", i) and ")" in arg[i:]:
            end = arg.index(")", i)
            name = arg[i + 2:end]
            out.append(env.get(name, arg[i:end + 1]))
            i = end + 1
        else:
            out.append(arg[i])
            i += 1
    return "".join(out)


async def amain(args: argparse.Namespace) -> None:
    state_dir = Path(args.state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    async with KubeClient(load_kubeconfig(Path(args.kubeconfig))) as kube:
        agent = NodeAgent(kube, args.node_name, state_dir, Path(args.tls_cert),
                          Path(args.tls_key), no_run=args.no_run)
        agent.kill_leftovers()
        server = await agent.serve()
        await agent.register()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        tasks = [asyncio.create_task(agent.heartbeat()), asyncio.create_task(agent.sync_pods())]
        log.info("node %s ready; kubelet endpoint 127.0.0.1:%d", agent.node_name, agent.port)
        await stop.wait()
        log.info("shutting down: stopping %d pods", len(agent.pods))
        for t in tasks:
            t.cancel()
        await agent.shutdown()
        await server.cleanup()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--kubeconfig", required=True)
    p.add_argument("--node-name", required=True)
    p.add_argument("--state-dir", required=True)
    p.add_argument("--tls-cert", required=True)
    p.add_argument("--tls-key", required=True)
    p.add_argument("--no-run", action="store_true",
                   help="benchmarks: report pods Running without starting any process")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    asyncio.run(amain(args))


if __name__ == "__main__":
    main()

