"""The SalonSession custom resources of one namespace, through the Kubernetes API.

The API creates, reads and deletes SalonSessions; the operator does the rest (and is the
only writer of `.status`). Creation is idempotent: a second create returns the existing
resource unchanged.

Like the operator's adapter (`operator.kube`), this one speaks in domain errors
(`SpecRejected`, `KubeUnavailable`), not HTTP: the routes decide what a caller sees
(`routes.sessions.kube_error`).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import aiohttp
from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException

from salon_sessions.core import resource
from salon_sessions.core.company import resource_name

log = logging.getLogger(__name__)
JSON = dict[str, Any]
T = TypeVar("T")
MANAGED_BY = "salon-sessions-api"


class KubeError(Exception):
    """A SalonSession call failed; `message` says why without echoing the request."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class SpecRejected(KubeError):
    """The API server refused the SalonSession as invalid (its schema, HTTP 422)."""


class KubeUnavailable(KubeError):
    """The Kubernetes API refused the call (other than 404/409/422) or could not be
    reached: try again later."""


class SessionResources:
    def __init__(self, api_client: Any, namespace: str, timeout_s: float) -> None:
        self._client = api_client
        self._api = client.CustomObjectsApi(api_client)
        self.namespace = namespace
        self._timeout = timeout_s

    @classmethod
    async def connect(cls, kubeconfig: str | None, namespace: str,
                      timeout_s: float) -> SessionResources | None:
        """From a kubeconfig file, else the pod's service account; None when neither."""
        cfg = client.Configuration()
        if kubeconfig:
            await config.load_kube_config(config_file=kubeconfig, client_configuration=cfg,
                                          persist_config=False)
        elif os.environ.get("KUBERNETES_SERVICE_HOST"):
            config.load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
        else:
            log.warning("no kubeconfig and not in a cluster: session management disabled")
            return None
        return cls(client.ApiClient(configuration=cfg), namespace, timeout_s)

    async def close(self) -> None:
        await self._client.close()

    def _args(self) -> tuple[str, str, str, str]:
        return resource.GROUP, resource.VERSION, self.namespace, resource.PLURAL

    async def _unless_absent(self, doing: str, call: Callable[[], Awaitable[T]]) -> T | None:
        """`call`'s result, None on 404; the client's other errors as domain errors."""
        try:
            return await call()
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise _unavailable(exc, doing) from None
        except (OSError, aiohttp.ClientError) as exc:
            raise _unreachable(exc) from None

    async def get(self, company_id: str) -> JSON | None:
        """The resource; None when there is none."""
        async def call() -> JSON:
            obj: JSON = await self._api.get_namespaced_custom_object(
                *self._args(), resource_name(company_id), _request_timeout=self._timeout)
            return obj

        return await self._unless_absent("reading", call)

    async def create(self, company_id: str, spec: JSON) -> tuple[JSON, bool]:
        """(resource, True) when created now, (existing resource, False) when it existed."""
        body: JSON = {
            "apiVersion": resource.API_VERSION, "kind": resource.KIND,
            "metadata": {"name": resource_name(company_id),
                         "labels": {"app.kubernetes.io/managed-by": MANAGED_BY,
                                    "app.kubernetes.io/part-of": "salon-sessions"}},
            "spec": {"companyId": company_id, **spec},
        }
        try:
            created: JSON = await self._api.create_namespaced_custom_object(
                *self._args(), body, _request_timeout=self._timeout)
            return created, True
        except ApiException as exc:
            if exc.status == 409:
                existing = await self.get(company_id)
                if existing is not None:
                    return existing, False
            if exc.status == 422:
                raise SpecRejected(f"rejected by the SalonSession schema: "
                                   f"{_message(exc)}") from None
            raise _unavailable(exc, "creating") from None
        except (OSError, aiohttp.ClientError) as exc:
            raise _unreachable(exc) from None

    async def delete(self, company_id: str) -> bool:
        """True when deleted (the operator's finalizer then cleans up), False when absent."""
        async def call() -> bool:
            await self._api.delete_namespaced_custom_object(
                *self._args(), resource_name(company_id), _request_timeout=self._timeout)
            return True

        return await self._unless_absent("deleting", call) or False

    async def list_page(self, limit: int, cont: str | None = None) -> JSON:
        """One page of the namespace's SalonSessions (`metadata.continue` for the next);
        errors are raised as they are (the admin feed retries)."""
        kwargs: dict[str, Any] = {"limit": limit, "_request_timeout": self._timeout}
        if cont:
            kwargs["_continue"] = cont
        page: JSON = await self._api.list_namespaced_custom_object(*self._args(), **kwargs)
        return page

    async def watch(self, resource_version: str, timeout_s: int) -> AsyncIterator[JSON]:
        """The watch events (`{"type", "object"}`, bookmarks included) after
        `resource_version`, until the API server ends the watch (after about `timeout_s`).
        A 410 Gone arrives as an `ERROR` event; the caller lists again."""
        response = await self._api.list_namespaced_custom_object(
            *self._args(), watch=True, resource_version=resource_version,
            allow_watch_bookmarks=True, timeout_seconds=timeout_s,
            _preload_content=False, _request_timeout=timeout_s + 30)
        async with response:
            while line := await response.content.readline():
                if line.strip():
                    event: JSON = json.loads(line)
                    yield event

    async def ping(self) -> None:
        """Raises when the API server (or the CRD, or our RBAC) is not usable."""
        await self._api.list_namespaced_custom_object(*self._args(), limit=1,
                                                      _request_timeout=self._timeout)


def _message(exc: ApiException) -> str:
    try:
        body = json.loads(exc.body) if exc.body else {}
    except (ValueError, TypeError):
        body = {}
    message = body.get("message") if isinstance(body, dict) else None
    return str(message or exc.reason or exc.status)[:500]


def _unavailable(exc: ApiException, doing: str) -> KubeUnavailable:
    log.warning("Kubernetes API error %s while %s a SalonSession: %s", exc.status, doing,
                exc.reason)
    return KubeUnavailable(
        f"the Kubernetes API refused {doing} the SalonSession (HTTP {exc.status})")


def _unreachable(exc: Exception) -> KubeUnavailable:
    log.warning("Kubernetes API unreachable: %s", type(exc).__name__)
    return KubeUnavailable("the Kubernetes API is unreachable")
