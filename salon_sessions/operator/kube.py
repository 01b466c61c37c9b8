"""The few Kubernetes API calls the operator makes itself (kopf makes the others), on
kubernetes_asyncio's client (authentication, TLS, token refresh) with plain JSON bodies.

Every verb used here is listed in deploy/rbac/ (and nothing else is).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any, Final

import aiohttp
from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException

from salon_sessions.core.resource import GROUP, PLURAL, VERSION

log = logging.getLogger(__name__)
FIELD_MANAGER: Final = "salon-sessions-operator"
MERGE_PATCH: Final = "application/merge-patch+json"
APPLY_PATCH: Final = "application/apply-patch+yaml"
JSON_PATCH: Final = "application/json-patch+json"
_OBJECT: Final = {200: "object", 201: "object", 202: "object"}


class KubeError(Exception):
    """An API call failed; `status` is the HTTP status (0 for transport errors)."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        super().__init__(message)

    @property
    def retryable(self) -> bool:
        return self.status in (0, 408, 409, 425, 429) or self.status >= 500


async def load_configuration(max_connections: int = 64) -> client.Configuration:
    """In-cluster service account first, else $KUBECONFIG / ~/.kube/config."""
    cfg = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
    except config.ConfigException:
        await config.load_kube_config(client_configuration=cfg)
    cfg.connection_pool_maxsize = max_connections
    return cfg


class Kube:
    def __init__(self, configuration: client.Configuration, timeout_s: float = 30.0) -> None:
        self._api = client.ApiClient(configuration=configuration)
        self._timeout = timeout_s

    async def close(self) -> None:
        await self._api.close()

    async def request(self, method: str, path: str, *, body: Any = None,
                      query: Mapping[str, str] | None = None,
                      content_type: str | None = None) -> dict[str, Any]:
        headers = {"Accept": "application/json"}
        if content_type is not None:
            headers["Content-Type"] = content_type
        elif body is not None:
            headers["Content-Type"] = "application/json"
        try:
            result = await self._api.call_api(
                path, method, query_params=list((query or {}).items()),
                header_params=headers, body=body, response_types_map=_OBJECT,
                auth_settings=["BearerToken"], _return_http_data_only=True,
                _preload_content=True, _request_timeout=self._timeout)
        except ApiException as exc:
            raise KubeError(int(exc.status or 0), _reason(exc)) from None
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise KubeError(0, f"{type(exc).__name__}: {exc}") from None
        return result if isinstance(result, dict) else {}

    # ---- SalonSessions --------------------------------------------------------------------
    async def patch_session_status(self, namespace: str, name: str,
                                   status: dict[str, Any]) -> dict[str, Any]:
        path = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}/{name}/status"
        return await self.request("PATCH", path, body={"status": status},
                                  content_type=MERGE_PATCH)

    async def list_sessions(self, namespace: str | None) -> list[dict[str, Any]]:
        """Every SalonSession in `namespace` (None: all), page by page."""
        path = (f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}" if namespace
                else f"/apis/{GROUP}/{VERSION}/{PLURAL}")
        items: list[dict[str, Any]] = []
        token = ""
        while True:
            query = {"limit": "500", **({"continue": token} if token else {})}
            page = await self.request("GET", path, query=query)
            for item in page.get("items") or []:
                item.setdefault("metadata", {}).setdefault(
                    "namespace", namespace or item["metadata"].get("namespace", ""))
                items.append(item)
            token = str((page.get("metadata") or {}).get("continue") or "")
            if not token:
                return items

    # ---- StatefulSets and pods -------------------------------------------------------------
    async def apply_statefulset(self, body: dict[str, Any]) -> dict[str, Any]:
        """Server-side apply: creates or updates, idempotent, fields we stop setting go."""
        meta = body["metadata"]
        path = f"/apis/apps/v1/namespaces/{meta['namespace']}/statefulsets/{meta['name']}"
        return await self.request("PATCH", path, body=body, content_type=APPLY_PATCH,
                                  query={"fieldManager": FIELD_MANAGER, "force": "true"})

    async def replace_pod_template(self, namespace: str, name: str, template: dict[str, Any],
                                   resource_version: str | None) -> dict[str, Any]:
        """Replace the StatefulSet's pod template as a whole (a JSON patch): unlike an
        apply, this also drops what someone else added to it (an env var, a field).
        `resource_version` (the version `template` was built from) makes it conditional:
        a write in between (a `kubectl rollout restart`) fails it with 422, never lost."""
        path = f"/apis/apps/v1/namespaces/{namespace}/statefulsets/{name}"
        ops: list[dict[str, Any]] = []
        if resource_version is not None:
            ops.append({"op": "test", "path": "/metadata/resourceVersion",
                        "value": resource_version})
        ops.append({"op": "replace", "path": "/spec/template", "value": template})
        return await self.request("PATCH", path, body=ops, content_type=JSON_PATCH,
                                  query={"fieldManager": FIELD_MANAGER})

    async def scale_statefulset(self, namespace: str, name: str, replicas: int) -> bool:
        """Set the replicas of an existing StatefulSet; False when there is none."""
        path = f"/apis/apps/v1/namespaces/{namespace}/statefulsets/{name}"
        try:
            await self.request("PATCH", path, body={"spec": {"replicas": replicas}},
                               content_type=MERGE_PATCH)
        except KubeError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    async def delete_statefulset(self, namespace: str, name: str, uid: str) -> None:
        """Delete it if it is still the one owned by `uid` (404 is fine)."""
        path = f"/apis/apps/v1/namespaces/{namespace}/statefulsets/{name}"
        try:
            existing = await self.request("GET", path)
        except KubeError as exc:
            if exc.status == 404:
                return
            raise
        owners = {o.get("uid") for o in existing["metadata"].get("ownerReferences") or []}
        if uid not in owners:
            return
        try:
            await self.request("DELETE", path, body={
                "kind": "DeleteOptions", "apiVersion": "v1",
                "propagationPolicy": "Background",
                "preconditions": {"uid": existing["metadata"]["uid"]}})
        except KubeError as exc:
            if exc.status not in (404, 409):
                raise

    # ---- the sessions' credentials Secrets (never read: created, patched, deleted) ---------
    async def apply_secret(self, body: dict[str, Any]) -> None:
        """Server-side apply of a Secret we own. The response (which carries the data) is
        dropped at once."""
        meta = body["metadata"]
        path = f"/api/v1/namespaces/{meta['namespace']}/secrets/{meta['name']}"
        await self.request("PATCH", path, body=body, content_type=APPLY_PATCH,
                           query={"fieldManager": FIELD_MANAGER, "force": "true"})

    async def delete_secret(self, namespace: str, name: str) -> bool:
        """Delete a Secret; False when there was none."""
        try:
            await self.request("DELETE", f"/api/v1/namespaces/{namespace}/secrets/{name}")
        except KubeError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    async def get_pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return await self.request("GET", f"/api/v1/namespaces/{namespace}/pods/{name}")
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise

    # ---- the operator's own ConfigMap (pending cleanups) ------------------------------------
    def configmap_path(self, namespace: str, name: str | None = None) -> str:
        base = f"/api/v1/namespaces/{namespace}/configmaps"
        return base if name is None else f"{base}/{name}"

    async def get_configmap(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return await self.request("GET", self.configmap_path(namespace, name))
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise

    async def create_configmap(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        return await self.request("POST", self.configmap_path(namespace), body=body)

    async def update_configmap(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        """PUT with the body's resourceVersion: 409 when someone changed it meanwhile."""
        name = body["metadata"]["name"]
        return await self.request("PUT", self.configmap_path(namespace, name), body=body)

    # ---- Events and Leases --------------------------------------------------------------------
    async def create_event(self, namespace: str, body: dict[str, Any]) -> None:
        await self.request("POST", f"/api/v1/namespaces/{namespace}/events", body=body)

    def lease_path(self, namespace: str, name: str | None = None) -> str:
        base = f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"
        return base if name is None else f"{base}/{name}"


def _reason(exc: ApiException) -> str:
    raw: bytes | str | None = exc.body
    body = raw.decode(errors="replace") if isinstance(raw, bytes) else raw
    try:
        message = json.loads(body).get("message", "") if body else ""
    except (ValueError, AttributeError):
        message = ""
    return f"{exc.status} {exc.reason}: {message}"[:1000]
