"""Leader election on a coordination.k8s.io Lease: two replicas, one active.

The standby polls the Lease and takes it when it is free (released on a clean shutdown) or
when its holder stopped renewing it for `duration_s`. Like client-go, expiry is judged by
when *this* process last saw the record change (its local monotonic clock), not by the
timestamps written by another machine, so clock skew between nodes does not matter.

The leader renews every `renew_s`; when it cannot renew for `duration_s` it must assume a
standby took over: `lost` is set and the process stops everything it runs (and exits, to
be restarted as a standby). A process that restarts under the same identity (a container
restart in the same pod) takes its own Lease back at once.

Why not `kubernetes_asyncio.leaderelection` (read at 36.1): it judges expiry and its renew
deadline by the wall clock (`time.time()`), has no release (a clean shutdown would leave
the standby waiting a whole lease duration; its `LeaseLock` cannot even write an empty
holder), and a transport error while renewing raises out of its `renew_loop()` without
cancelling the leader's work. docs/OPERATOR.md ("Why `leader.py`") has the details.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime
from typing import Any

from salon_sessions.operator.kube import Kube, KubeError

log = logging.getLogger(__name__)


def _micro_time() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElector:
    def __init__(self, kube: Kube, namespace: str, name: str, identity: str, *,
                 duration_s: float = 15.0, renew_s: float = 5.0,
                 retry_s: float | None = None) -> None:
        self._kube = kube
        self._namespace = namespace
        self._name = name
        self.identity = identity
        self._duration = duration_s
        self._renew = renew_s
        self._retry = retry_s or max(0.2, min(renew_s, duration_s / 4))
        self._observed: tuple[str, str] | None = None  # (holder, renewTime)
        self._observed_at = 0.0
        self._resource_version: str | None = None
        self._transitions = 0
        self.leading = asyncio.Event()
        self.lost = asyncio.Event()

    @property
    def _path(self) -> str:
        return self._kube.lease_path(self._namespace, self._name)

    async def acquire(self) -> None:
        """Return once this process holds the Lease."""
        announced = False
        while True:
            try:
                if await self._try_acquire():
                    log.info("became the leader (lease %s/%s)", self._namespace, self._name)
                    self.leading.set()
                    return
            except KubeError as exc:
                log.warning("leader election: %s", exc)
            if not announced:
                log.info("standing by: lease %s/%s is held by %s", self._namespace,
                         self._name, self._observed[0] if self._observed else "?")
                announced = True
            await asyncio.sleep(self._retry)

    async def _try_acquire(self) -> bool:
        try:
            lease = await self._kube.request("GET", self._path)
        except KubeError as exc:
            if exc.status != 404:
                raise
            body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                    "metadata": {"name": self._name, "namespace": self._namespace},
                    "spec": self._spec(acquire=True)}
            try:
                created = await self._kube.request(
                    "POST", self._kube.lease_path(self._namespace), body=body)
            except KubeError as conflict:
                if conflict.status == 409:
                    return False
                raise
            self._remember(created)
            return True
        spec = lease.get("spec") or {}
        holder = str(spec.get("holderIdentity") or "")
        record = (holder, str(spec.get("renewTime") or ""))
        now = time.monotonic()
        if record != self._observed:
            self._observed, self._observed_at = record, now
        self._transitions = int(spec.get("leaseTransitions") or 0)
        duration = float(spec.get("leaseDurationSeconds") or self._duration)
        free = not holder or holder == self.identity or now - self._observed_at >= duration
        if not free:
            return False
        lease["spec"] = self._spec(acquire=True, takeover=holder != self.identity)
        try:
            replaced = await self._kube.request("PUT", self._path, body=lease)
        except KubeError as exc:
            if exc.status == 409:  # somebody else was faster
                return False
            raise
        self._remember(replaced)
        return True

    def _spec(self, *, acquire: bool = False, takeover: bool = False) -> dict[str, Any]:
        now = _micro_time()
        spec: dict[str, Any] = {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": max(1, round(self._duration)),
            "renewTime": now,
            "leaseTransitions": self._transitions + (1 if takeover else 0),
        }
        if acquire:
            spec["acquireTime"] = now
        return spec

    def _remember(self, lease: dict[str, Any]) -> None:
        self._resource_version = str((lease.get("metadata") or {}).get("resourceVersion", ""))
        spec = lease.get("spec") or {}
        self._transitions = int(spec.get("leaseTransitions") or 0)
        self._observed = (self.identity, str(spec.get("renewTime") or ""))
        self._observed_at = time.monotonic()

    async def keep(self) -> None:
        """Renew until cancelled; set `lost` (and return) when renewing fails too long."""
        last_ok = time.monotonic()
        while True:
            await asyncio.sleep(self._renew)
            try:
                if await self._renew_once():
                    last_ok = time.monotonic()
                    continue
                log.error("lost the lease %s/%s to another replica", self._namespace,
                          self._name)
            except KubeError as exc:
                log.warning("renewing the lease failed: %s", exc)
                if time.monotonic() - last_ok < self._duration - self._renew:
                    continue
                log.error("could not renew the lease for %.0fs: stepping down",
                          time.monotonic() - last_ok)
            self.leading.clear()
            self.lost.set()
            return

    async def _renew_once(self) -> bool:
        lease = await self._kube.request("GET", self._path)
        spec = lease.get("spec") or {}
        if spec.get("holderIdentity") != self.identity:
            return False
        spec.update({"renewTime": _micro_time()})
        lease["spec"] = spec
        try:
            self._remember(await self._kube.request("PUT", self._path, body=lease))
        except KubeError as exc:
            if exc.status == 409:
                return await self._renew_once_after_conflict()
            raise
        return True

    async def _renew_once_after_conflict(self) -> bool:
        lease = await self._kube.request("GET", self._path)
        return bool((lease.get("spec") or {}).get("holderIdentity") == self.identity)

    async def release(self) -> None:
        """Give the Lease up (clean shutdown) so that the standby takes over at once."""
        if not self.leading.is_set():
            return
        self.leading.clear()
        try:
            lease = await self._kube.request("GET", self._path)
            spec = lease.get("spec") or {}
            if spec.get("holderIdentity") != self.identity:
                return
            spec.update({"holderIdentity": None, "renewTime": _micro_time(),
                         "leaseDurationSeconds": 1})
            lease["spec"] = spec
            await self._kube.request("PUT", self._path, body=lease)
            log.info("released the lease %s/%s", self._namespace, self._name)
        except KubeError as exc:
            log.warning("releasing the lease failed: %s", exc)
