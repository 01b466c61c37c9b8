"""The API's SalonSession adapter without a cluster: the client's failures come out as domain
errors (`SpecRejected`, `KubeUnavailable`), and the app turns those (and the Redis reads'
`RedisUnavailable`) into the API's error bodies (422 on the body, 503)."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import httpx
import pytest
from fastapi import FastAPI
from kubernetes_asyncio.client.exceptions import ApiException

from salon_sessions.api import errors
from salon_sessions.api.kube import KubeError, KubeUnavailable, SessionResources, SpecRejected
from salon_sessions.api.live import RedisUnavailable, redis_error
from salon_sessions.api.routes.sessions import kube_error


class FakeApi:
    """`CustomObjectsApi` whose every call raises `failure`."""

    def __init__(self, failure: BaseException) -> None:
        self.failure = failure

    async def _fail(self, *_: Any, **__: Any) -> Any:
        raise self.failure

    get_namespaced_custom_object = _fail
    create_namespaced_custom_object = _fail
    delete_namespaced_custom_object = _fail


def _resources(failure: BaseException) -> SessionResources:
    resources = SessionResources.__new__(SessionResources)
    resources.namespace = "ns"
    resources._api = FakeApi(failure)
    resources._timeout = 1.0
    return resources


def _api_exception(status: int, message: str = "") -> ApiException:
    exc = ApiException(status=status, reason="Reason")
    exc.body = json.dumps({"message": message}) if message else None
    return exc


async def test_absent_is_none_and_false() -> None:
    resources = _resources(_api_exception(404))
    assert await resources.get("company_1") is None
    assert await resources.delete("company_1") is False


@pytest.mark.parametrize("failure", [_api_exception(500), _api_exception(403),
                                     aiohttp.ClientConnectionError(), OSError()])
async def test_other_failures_are_unavailable(failure: BaseException) -> None:
    resources = _resources(failure)
    for call in (resources.get("company_1"), resources.delete("company_1"),
                 resources.create("company_1", {})):
        with pytest.raises(KubeUnavailable):
            await call


async def test_schema_refusal_is_spec_rejected() -> None:
    resources = _resources(_api_exception(422, "spec.driver: Unsupported value"))
    with pytest.raises(SpecRejected) as err:
        await resources.create("company_1", {"driver": "x"})
    assert err.value.message == ("rejected by the SalonSession schema: spec.driver: "
                                 "Unsupported value")


async def test_routes_map_domain_errors_to_the_error_bodies() -> None:
    app = FastAPI()
    errors.install(app)
    errors.translate(app, KubeError, kube_error)
    errors.translate(app, RedisUnavailable, redis_error)
    failures: dict[str, Exception] = {
        "rejected": SpecRejected("rejected by the SalonSession schema: x"),
        "kube": KubeUnavailable("the Kubernetes API is unreachable"),
        "redis": RedisUnavailable("Redis is unavailable"),
    }

    @app.get("/{name}")
    async def fail(name: str) -> None:
        raise failures[name]

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as http:
        bodies = {name: await http.get(f"/{name}") for name in failures}
    assert {name: (r.status_code, r.json()["error"]) for name, r in bodies.items()} == {
        "rejected": (422, {"code": "invalid", "field": "body", "fields": [],
                           "message": "rejected by the SalonSession schema: x"}),
        "kube": (503, {"code": "kubernetes_unavailable", "field": None, "fields": [],
                       "message": "the Kubernetes API is unreachable"}),
        "redis": (503, {"code": "redis_unavailable", "field": None, "fields": [],
                        "message": "Redis is unavailable"}),
    }
