"""The API's SalonSession adapter without a cluster: the client's failures come out as domain
errors (`SpecRejected`, `KubeUnavailable`), and the routes' handler turns those into the
API's error bodies (422 on the body, 503 `kubernetes_unavailable`)."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import pytest
from kubernetes_asyncio.client.exceptions import ApiException

from salon_sessions.api.kube import KubeUnavailable, SessionResources, SpecRejected
from salon_sessions.api.routes.sessions import kube_error, on_kube_error


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
    rejected = kube_error(SpecRejected("rejected by the SalonSession schema: x"))
    assert (rejected.status, rejected.code, rejected.field) == (422, "invalid", "body")
    unavailable = kube_error(KubeUnavailable("the Kubernetes API is unreachable"))
    assert (unavailable.status, unavailable.code) == (503, "kubernetes_unavailable")
    response = await on_kube_error(None, KubeUnavailable("the Kubernetes API is unreachable"))  # type: ignore[arg-type]
    assert response.status_code == 503
    assert json.loads(bytes(response.body)) == {"error": {
        "code": "kubernetes_unavailable", "message": "the Kubernetes API is unreachable",
        "field": None, "fields": []}}
