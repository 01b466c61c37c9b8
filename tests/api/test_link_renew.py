"""`POST /v1/sessions/{company_id}/link/renew` and what the API shows of an onboarding that
ended, against a real `salon-sessions api` process, the Kubernetes API server and a worker
(simulator) whose onboarding ends after a few seconds."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import httpx
import pytest
from websockets.asyncio.client import connect

from tests.api.conftest import WorkerFactory
from tests.api.server import ApiServer
from tests.worker.harness import new_company, observing

pytestmark = pytest.mark.slow
BOUND_S = 5
EXPIRING = {"SALON_LINK_EXPIRE_AFTER_S": str(BOUND_S)}


def _error(resp: httpx.Response) -> dict[str, object]:
    assert resp.headers["content-type"].startswith("application/json"), resp.text
    error: dict[str, object] = resp.json()["error"]
    return error


async def test_renew_brings_qr_codes_back_and_the_views_show_the_end(
        api: ApiServer, workers: WorkerFactory, redis_url: str, company: str) -> None:
    async with (observing(redis_url, company) as obs,
                api.client(headers=api.admin()) as admin,
                api.client(headers=api.bearer(company)) as http):
        url = f"/v1/sessions/{company}/link/renew"
        missing = await http.post(url)
        assert missing.status_code == 404
        assert _error(missing)["code"] == "not_found"
        created = await admin.post("/v1/sessions", json={"company_id": company,
                                                         "driver": "simulator"})
        assert created.status_code == 201, created.text
        assert created.json()["spec"]["link_expire_after"] == "30m"  # the CRD's default
        none = await http.post(url)
        assert none.status_code == 503
        assert _error(none)["code"] == "no_worker"

        workers(env=EXPIRING)
        qr = await obs.wait_event("qr")
        view = (await http.get(f"/v1/sessions/{company}")).json()
        assert view["phase"] == "AwaitingLink"
        ends = datetime.fromisoformat(view["link_expires_at"])
        assert ends == datetime.fromisoformat(qr["data"]["link_expires_at"])

        await obs.wait_event("link_expired", timeout=BOUND_S + 10)
        await obs.wait_state(lambda s: s["phase"] == "LinkExpired")
        view = (await http.get(f"/v1/sessions/{company}")).json()
        assert (view["phase"], view["linked"], view["qr_available"]) == (
            "LinkExpired", False, False)
        assert datetime.fromisoformat(view["link_expires_at"]) == ends
        assert view["live"]["link_expires_at"] == view["link_expires_at"]
        qr_svg = await http.get(f"/v1/sessions/{company}/qr.svg")
        assert qr_svg.status_code == 409
        assert _error(qr_svg)["code"] == "link_expired"
        code = await http.post(f"/v1/sessions/{company}/pairing-code",
                               json={"phone": "+7 968 648-44-88"})
        assert code.status_code == 409
        assert _error(code)["code"] == "link_expired"
        token = api.token(company)
        async with connect(f"{api.ws_url}/v1/sessions/{company}/ws",
                           subprotocols=["salon.v1", f"bearer.{token}"]) as ws:  # type: ignore[list-item]
            snapshot = json.loads(await ws.recv())
            assert snapshot["kind"] == "snapshot"
            assert snapshot["state"]["phase"] == "LinkExpired"
            assert datetime.fromisoformat(snapshot["state"]["link_expires_at"]) == ends

            # another company's token cannot renew this one
            theirs = await http.post(f"/v1/sessions/{new_company()}/link/renew")
            assert theirs.status_code == 403
            renewed = await http.post(url)
            assert renewed.status_code == 202, renewed.text
            body = renewed.json()
            assert set(body) == {"phase", "expires_at"}
            assert body["phase"] == "Starting"
            new_end = datetime.fromisoformat(body["expires_at"])
            assert new_end > ends + timedelta(seconds=BOUND_S)
            event = None
            while event is None or event.get("event", {}).get("type") != "qr":
                event = json.loads(await ws.recv())
            assert datetime.fromisoformat(event["event"]["data"]["link_expires_at"]) == new_end
        view = (await http.get(f"/v1/sessions/{company}")).json()
        assert view["phase"] == "AwaitingLink"
        assert view["qr_available"] is True
        assert datetime.fromisoformat(view["link_expires_at"]) == new_end

        await obs.scan()
        await obs.wait_state(lambda s: s["connected"] == "true")
        linked = await admin.post(url)
        assert linked.status_code == 409
        assert _error(linked)["code"] == "already_linked"
        assert (await http.get(f"/v1/sessions/{company}")).json()["link_expires_at"] is None


async def test_renew_is_in_the_openapi_document_and_rate_limited(api: ApiServer) -> None:
    async with api.client() as http:
        doc = (await http.get("/openapi.json")).json()
        op = doc["paths"]["/v1/sessions/{company_id}/link/renew"]["post"]
        assert {"202", "401", "403", "404", "409", "429", "503"} <= set(op["responses"])
        schema = op["responses"]["202"]["content"]["application/json"]["schema"]
        assert schema["$ref"].endswith("/RenewView")
        assert "link_expires_at" in doc["components"]["schemas"]["SessionView"]["properties"]
    company = new_company()
    async with api.client(headers=api.bearer(company)) as http:
        statuses = [(await http.post(f"/v1/sessions/{company}/link/renew")).status_code
                    for _ in range(31)]
    # no SalonSession: 404 before the limit is counted; the limit counts real attempts
    assert set(statuses) == {404}
    async with api.client(headers=api.admin()) as admin:
        assert (await admin.post("/v1/sessions", json={"company_id": company})).status_code \
            == 201
    async with api.client(headers=api.bearer(company)) as http:
        statuses = [(await http.post(f"/v1/sessions/{company}/link/renew")).status_code
                    for _ in range(31)]
        assert set(statuses[:30]) == {503}  # no worker, but counted
        assert statuses[30] == 429
