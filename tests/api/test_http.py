"""The HTTP API against a real `salon-sessions api` process, the Kubernetes API server, Redis
and session workers started directly (simulator driver)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest

from devstack.stack import StackInfo
from salon_sessions.core.company import resource_name
from tests.api.conftest import WorkerFactory
from tests.api.server import ApiServer
from tests.api.zbar import decode
from tests.worker.harness import new_company, observing

pytestmark = pytest.mark.slow


def _error(resp: httpx.Response) -> dict[str, object]:
    assert resp.headers["content-type"].startswith("application/json"), resp.text
    body = resp.json()
    assert set(body) == {"error"}, body
    error: dict[str, object] = body["error"]
    assert error["code"]
    assert error["message"]
    return error


async def test_create_is_idempotent_accepts_legacy_ids_and_deletes(
        api: ApiServer, crd: StackInfo, api_namespace: str) -> None:
    company = new_company()
    digits = company.removeprefix("company_")
    async with api.client(headers=api.admin()) as http:
        created = await http.post("/v1/sessions", json={
            "company_id": digits, "display_name": "Salon Aurora", "driver": "simulator"})
        assert created.status_code == 201, created.text
        body = created.json()
        assert (body["company_id"], body["name"], body["created"]) == (
            company, resource_name(company), True)
        assert body["spec"]["driver"] == "simulator"
        again = await http.post("/v1/sessions", json={"company_id": company,
                                                      "link_method": "pairingCode",
                                                      "phone_number": "+7 968 648 44 88"})
        assert again.status_code == 200
        assert again.json()["created"] is False
        assert again.json()["spec"]["link_method"] == "qr"  # returned unchanged
        cr = json.loads(crd.kubectl("get", "salonsession", resource_name(company), "-n",
                                    api_namespace, "-o", "json").stdout)
        assert cr["spec"]["companyId"] == company
        assert cr["spec"]["displayName"] == "Salon Aurora"

        status = await http.get(f"/v1/sessions/{digits}")
        assert status.status_code == 200
        assert status.json()["live"] is None
        assert (await http.delete(f"/v1/sessions/{company}")).status_code == 204
        gone = await http.delete(f"/v1/sessions/{company}")
        assert gone.status_code == 404
        assert _error(gone)["field"] == "path.company_id"
        assert (await http.get(f"/v1/sessions/{company}")).status_code == 404


async def test_pairing_code_session_needs_a_phone(api: ApiServer) -> None:
    async with api.client(headers=api.admin()) as http:
        resp = await http.post("/v1/sessions", json={"company_id": new_company(),
                                                     "link_method": "pairingCode"})
        assert resp.status_code == 422
        assert "phone_number" in str(_error(resp)["message"])
        ok = await http.post("/v1/sessions", json={
            "company_id": new_company(), "link_method": "pairingCode",
            "phone_number": "+7 968 648-44-88"})
        assert ok.status_code == 201, ok.text
        assert ok.json()["spec"]["phone_number"] == "79686484488"


async def test_status_and_qr_follow_the_worker(api: ApiServer, workers: WorkerFactory,
                                               redis_url: str, company: str,
                                               tmp_path: Path) -> None:
    async with (observing(redis_url, company) as obs,
                api.client(headers=api.bearer(company)) as http):
        assert (await http.get(f"/v1/sessions/{company}/qr.png")).status_code == 404
        workers()
        await obs.wait_event("qr")
        status = (await http.get(f"/v1/sessions/{company}")).json()
        assert status["live"]["pod"] == "w0"
        assert status["qr_available"] is True
        assert (status["linked"], status["connected"]) == (False, False)

        png = await http.get(f"/v1/sessions/{company}/qr.png")
        assert png.status_code == 200
        assert png.headers["content-type"] == "image/png"
        assert "no-store" in png.headers["cache-control"]
        (tmp_path / "qr.png").write_bytes(png.content)
        [payload] = decode(tmp_path / "qr.png")
        await obs.wait_published_qr(payload)
        published = {e["data"]["code"] for e in obs.of("qr")}
        api.secrets_seen |= published
        svg = await http.get(f"/v1/sessions/{company}/qr.svg")
        assert svg.status_code == 200
        assert svg.headers["content-type"].startswith("image/svg+xml")
        assert "no-store" in svg.headers["cache-control"]

        await obs.scan()
        await obs.wait_event("connected")
        await obs.wait_state(lambda s: s["connected"] == "true")
        linked = await http.get(f"/v1/sessions/{company}/qr.svg")
        assert linked.status_code == 409
        assert _error(linked)["code"] == "already_linked"
        status = (await http.get(f"/v1/sessions/{company}")).json()
        assert (status["phase"], status["linked"], status["connected"], status["phone"]) == (
            "Connected", True, True, "79686484488")
        assert status["qr_available"] is False


async def test_pairing_code_repeat_conflict_and_restart(api: ApiServer, workers: WorkerFactory,
                                                        redis_url: str, company: str) -> None:
    async with (observing(redis_url, company) as obs,
                api.client(headers=api.bearer(company)) as http,
                api.client(headers=api.admin()) as admin):
        url = f"/v1/sessions/{company}/pairing-code"
        none = await http.post(url, json={"phone": "79686484488"})
        assert none.status_code == 503
        assert _error(none)["code"] == "no_worker"
        workers()
        await obs.wait_event("qr")
        first = await http.post(url, json={"phone": "+7 (968) 648-44-88"})
        assert first.status_code == 200, first.text
        code = first.json()
        assert code["display"] == f"{code['code'][:4]}-{code['code'][4:]}"
        assert code["phone"] == "79686484488"
        assert 0 < code["expires_in_s"] <= 180
        api.secrets_seen.add(code["code"])
        qrs = len(obs.of("qr"))
        await obs.wait_event("qr", count=qrs + 2)  # two rotations: the code stays
        again = await http.post(url, json={"phone": "79686484488"})
        assert (again.json()["code"], again.json()["expires_at"]) == (
            code["code"], code["expires_at"])
        other = await http.post(url, json={"phone": "79001234567"})
        assert other.status_code == 409
        assert _error(other) | {"message": ""} == {
            "code": "pairing_code_pending", "message": "", "field": "body.phone", "fields": []}

        refused = await admin.post(f"/v1/sessions/{company}/restart")
        assert refused.status_code == 409
        assert _error(refused)["field"] == "query.force"
        forced = await admin.post(f"/v1/sessions/{company}/restart", params={"force": "true"})
        assert forced.status_code == 200
        assert forced.json() == {"restarting": True}
        await obs.wait_state(lambda s: s["pairing_code_pending"] == "false")


async def test_a_pending_code_can_be_cancelled_and_another_number_gets_one(
        api: ApiServer, workers: WorkerFactory, redis_url: str, company: str) -> None:
    """A mistyped number: DELETE ends the code on the worker (the simulated phone can no
    longer type it in), the state says which number a pending code belongs to, and a code
    for the right number is issued at once."""
    async with (observing(redis_url, company) as obs,
                api.client(headers=api.bearer(company)) as http):
        url = f"/v1/sessions/{company}/pairing-code"
        nobody = await http.delete(url)
        assert nobody.status_code == 503
        assert _error(nobody)["code"] == "no_worker"
        workers()
        await obs.wait_event("qr")
        idle = await http.delete(url)
        assert idle.status_code == 204, idle.text  # nothing pending: idempotent
        wrong = await http.post(url, json={"phone": "+7 968 648-44-88"})
        assert wrong.status_code == 200, wrong.text
        api.secrets_seen.add(wrong.json()["code"])
        live = (await http.get(f"/v1/sessions/{company}")).json()["live"]
        assert (live["pairing_code_pending"], live["pairing_code_phone"]) == (
            True, "79686484488")
        assert (await http.post(url, json={"phone": "79001234567"})).status_code == 409

        cancelled = await http.delete(url)
        assert cancelled.status_code == 204
        assert cancelled.content == b""
        assert "no-store" in cancelled.headers["cache-control"]
        live = (await http.get(f"/v1/sessions/{company}")).json()["live"]
        assert (live["pairing_code_pending"], live["pairing_code_phone"]) == (False, None)
        assert live["phase"] == "AwaitingLink"
        assert (await http.delete(url)).status_code == 204  # again: still 204

        right = await http.post(url, json={"phone": "+7 900 123-45-67"})
        assert right.status_code == 200, right.text
        assert right.json()["phone"] == "79001234567"
        assert right.json()["code"] != wrong.json()["code"]
        api.secrets_seen.add(right.json()["code"])
        await obs.act({"action": "enter_code", "code": wrong.json()["code"]})  # refused
        await obs.act({"action": "enter_code", "code": right.json()["code"]})
        linked = await obs.wait_event("linked")
        assert linked["data"]["phone"] == "79001234567"
        assert len(obs.of("linked")) == 1
        await obs.wait_state(lambda s: s["linked"] == "true")
        assert (await http.delete(url)).status_code == 204  # linked: nothing to cancel


async def test_typed_numbers_are_valid_numbers_read_with_the_default_region(
        tmp_path: Path, stack: StackInfo, api: ApiServer, api_namespace: str,
        api_database: str, workers: WorkerFactory, redis_url: str, company: str) -> None:
    """`89161234567` is how Russians write their numbers: refused with the expected form
    when no region is set, read as +7 916 ... with SALON_DEFAULT_REGION=RU."""
    from tests.api.server import start_api

    async with api.client(headers=api.admin()) as http:
        for typed in ("89161234567", "8 (916) 123-45-67", "+7 000 000-00-00"):
            refused = await http.post(f"/v1/sessions/{company}/pairing-code",
                                      json={"phone": typed})
            assert refused.status_code == 422, typed
            error = _error(refused)
            assert error["field"] == "body.phone"
            assert "like +7 912 345-67-89" in str(error["message"]), error
            assert typed not in str(error["message"])
            created = await http.post("/v1/sessions", json={
                "company_id": new_company(), "link_method": "pairingCode",
                "phone_number": typed})
            assert created.status_code == 422
            assert _error(created)["field"] == "body.phone_number"

    server = await asyncio.to_thread(start_api, tmp_path, database=api_database,
                                     redis_url=stack.redis_api_url,
                                     kubeconfig=stack.kubeconfig, namespace=api_namespace,
                                     env={"SALON_DEFAULT_REGION": "RU"})
    try:
        async with (observing(redis_url, company) as obs,
                    server.client(headers=server.admin()) as http):
            created = await http.post("/v1/sessions", json={
                "company_id": new_company(), "link_method": "pairingCode",
                "phone_number": "8 916 123-45-67"})
            assert created.status_code == 201, created.text
            assert created.json()["spec"]["phone_number"] == "79161234567"
            workers()
            await obs.wait_event("qr")
            url = f"/v1/sessions/{company}/pairing-code"
            code = await http.post(url, json={"phone": "89161234567"})
            assert code.status_code == 200, code.text
            assert code.json()["phone"] == "79161234567"
            server.secrets_seen.add(code.json()["code"])
            same = await http.post(url, json={"phone": "+7 916 123-45-67"})
            assert same.json()["code"] == code.json()["code"]
            refused = await http.post(url, json={"phone": "8 916 123"})
            assert refused.status_code == 422
            assert "a number of RU or one with its country code, like +7 912 345-67-89" in \
                str(_error(refused)["message"])
            assert (await http.delete(url)).status_code == 204
            abroad = await http.post(url, json={"phone": "55 11 98765-4321"})
            assert abroad.status_code == 200, abroad.text
            assert abroad.json()["phone"] == "5511987654321"
            server.secrets_seen.add(abroad.json()["code"])
    finally:
        await asyncio.to_thread(server.stop)
    for secret in server.secrets_seen:
        assert secret not in server.log()


async def test_tokens_only_for_sessions_that_exist(api: ApiServer) -> None:
    company = new_company()
    async with api.client(headers=api.admin()) as http:
        missing = await http.post(f"/v1/sessions/{company}/tokens", json={"ttl_s": 3600})
        assert missing.status_code == 404
        assert _error(missing) | {"message": ""} == {
            "code": "not_found", "message": "", "field": "path.company_id", "fields": []}
        assert (await http.post("/v1/sessions", json={"company_id": company})).status_code \
            == 201
        issued = await http.post(f"/v1/sessions/{company}/tokens", json={"ttl_s": 3600})
        assert issued.status_code == 201, issued.text
        api.secrets_seen.add(issued.json()["token"])


async def test_pairing_codes_are_rate_limited(api: ApiServer) -> None:
    """Requests and cancellations count together."""
    company = new_company()
    url = f"/v1/sessions/{company}/pairing-code"
    async with api.client(headers=api.bearer(company)) as http:
        statuses = [(await (http.post(url, json={"phone": "79686484488"}) if i % 2
                            else http.delete(url))) for i in range(31)]
    assert {r.status_code for r in statuses[:30]} == {503}  # no worker, but counted
    limited = statuses[30]
    assert limited.status_code == 429
    assert int(limited.headers["retry-after"]) >= 1
    assert _error(limited)["code"] == "rate_limited"


COMPANY_ENDPOINTS = [
    ("GET", "/v1/sessions/{c}", None),
    ("GET", "/v1/sessions/{c}/qr.png", None),
    ("GET", "/v1/sessions/{c}/qr.svg", None),
    ("POST", "/v1/sessions/{c}/pairing-code", {"phone": "79686484488"}),
    ("DELETE", "/v1/sessions/{c}/pairing-code", None),
    ("GET", "/health/pubsub?company_id={c}", None),
]
ADMIN_ENDPOINTS = [
    ("POST", "/v1/sessions", {"company_id": "{c}"}),
    ("DELETE", "/v1/sessions/{c}", None),
    ("POST", "/v1/sessions/{c}/restart", None),
    ("POST", "/v1/sessions/{c}/logout", None),
    ("POST", "/v1/sessions/{c}/tokens", None),
    ("GET", "/health/pubsub", None),
    ("GET", "/health/pubsub/simple", None),
]


def _request(http: httpx.AsyncClient, method: str, path: str, body: object, company: str,
             headers: dict[str, str]) -> object:
    text = json.dumps(body).replace("{c}", company) if body is not None else None
    extra = {"content-type": "application/json"} if text else {}
    return http.request(method, path.replace("{c}", company), content=text,
                        headers=headers | extra)


async def test_company_token_is_refused_everywhere_else(api: ApiServer) -> None:
    mine, theirs = new_company(), new_company()
    token = api.token(mine)
    expired = api.token(mine, ttl_s=-1)
    tampered = token[:-3] + ("AAA" if not token.endswith("AAA") else "BBB")
    async with api.client() as http:
        for method, path, body in COMPANY_ENDPOINTS:
            cases = [
                (theirs, {"Authorization": f"Bearer {token}"}, 403),
                (mine, {}, 401),
                (mine, {"Authorization": f"Bearer {expired}"}, 401),
                (mine, {"Authorization": f"Bearer {tampered}"}, 401),
                (mine, {"Authorization": f"Basic {token}"}, 401),
            ]
            for company, headers, expected in cases:
                resp = await _request(http, method, path, body, company, headers)  # type: ignore[misc]
                assert resp.status_code == expected, (method, path, expected, resp.text)
                assert _error(resp)["field"] == "header.authorization"
        for method, path, body in ADMIN_ENDPOINTS:
            resp = await _request(http, method, path, body, mine,  # type: ignore[misc]
                                  {"Authorization": f"Bearer {token}"})
            assert resp.status_code == 403, (method, path, resp.text)
            resp = await _request(http, method, path, body, mine, {})  # type: ignore[misc]
            assert resp.status_code == 401, (method, path, resp.text)


async def test_bad_input_gets_json_errors_naming_the_field(api: ApiServer) -> None:
    company = new_company()
    async with api.client(headers=api.bearer(company)) as http, \
            api.client(headers=api.admin()) as admin:
        url = f"/v1/sessions/{company}/pairing-code"
        big = await http.post(url, content=b'{"phone": "' + b"1" * 20000 + b'"}',
                              headers={"content-type": "application/json"})
        assert big.status_code == 413
        assert _error(big)["field"] == "body"

        async def chunks() -> object:
            for _ in range(40):
                yield b" " * 1000

        chunked = await http.post(url, content=chunks(),  # type: ignore[arg-type]
                                  headers={"content-type": "application/json"})
        assert chunked.status_code == 413

        text = await http.post(url, content=b"phone=79686484488",
                               headers={"content-type": "application/x-www-form-urlencoded"})
        assert text.status_code == 415
        assert _error(text)["field"] == "header.content-type"

        for phone in ("123", "0079686484488", "+7 968 abc", "", "7" * 16):
            bad = await http.post(url, json={"phone": phone})
            assert bad.status_code == 422, phone
            error = _error(bad)
            assert error["field"] == "body.phone"
            assert phone not in str(error["message"]) or not phone  # never echoed
        for body in ([], "79686484488", {"phone": "79686484488", "extra": 1}, {}):
            bad = await http.post(url, json=body)
            assert bad.status_code == 422, body
            assert str(_error(bad)["field"]).startswith("body")
        malformed = await http.post(url, content=b"{not json",
                                    headers={"content-type": "application/json"})
        assert malformed.status_code == 422

        for raw in ("abc", "0962302", "company_", "company_0", "1" * 19, "-5", "company-5"):
            resp = await admin.get(f"/v1/sessions/{raw}")
            assert resp.status_code == 422, raw
            assert _error(resp)["field"] == "path.company_id"
        unknown = await admin.get(f"/v1/sessions/{new_company()}")
        assert unknown.status_code == 404
        assert _error(unknown)["field"] == "path.company_id"
        for raw in ("abc", "0962302", ""):
            resp = await admin.post("/v1/sessions", json={"company_id": raw})
            assert resp.status_code == 422
            assert _error(resp)["field"] == "body.company_id"
        for display in ("Salon\u202eexe.gnp", "Salon\x00", "Salon\nAurora", "\u2067x\u2069"):
            resp = await admin.post("/v1/sessions", json={"company_id": new_company(),
                                                          "display_name": display})
            assert resp.status_code == 422, repr(display)
            assert _error(resp)["field"] == "body.display_name"
        nowhere = await admin.get("/v1/nothing")
        assert nowhere.status_code == 404
        assert _error(nowhere)["field"] == "path"


async def test_health_readiness_and_metrics(api: ApiServer, workers: WorkerFactory,
                                            redis_url: str, company: str) -> None:
    async with (observing(redis_url, company) as obs, api.client() as http):
        workers()
        await obs.wait_state(lambda s: s.get("lock") == "holding the session lock")
        mine = api.bearer(company)
        ok = await http.get("/health/pubsub", params={"company_id": company}, headers=mine)
        assert ok.status_code == 200, ok.text
        body = ok.json()
        assert body["channel"] == f"whatsapp:health:{company}"
        assert body["latency_ms"] > 0
        assert body["worker_phase"] in ("Starting", "AwaitingLink")
        legacy = await http.get("/health/pubsub", headers=api.admin(),
                                params={"company_id": company.removeprefix("company_")})
        assert legacy.status_code == 200
        chosen = await http.get("/health/pubsub", headers=api.admin())
        assert chosen.status_code == 200
        simple = await http.get("/health/pubsub/simple", headers=api.admin())
        assert simple.status_code == 200
        assert simple.json()["latency_ms"] > 0

        missing = new_company()
        down = await http.get("/health/pubsub", params={"company_id": missing},
                              headers=api.admin())
        assert down.status_code == 503
        assert _error(down)["code"] == "no_worker"
        assert f"whatsapp:health:{missing}" in str(_error(down)["message"])

        assert (await http.get("/healthz")).json() == {"status": "ok"}
        ready = await http.get("/readyz")
        assert ready.status_code == 200
        assert {k: v["ok"] for k, v in ready.json()["checks"].items()} == {
            "redis": True, "postgres": True, "kubernetes": True, "redis_persistence": True}

        metrics = (await http.get("/metrics")).text
        for name in ("salon_api_request_seconds_bucket", "salon_api_websocket_clients",
                     'salon_api_health_roundtrip_seconds_count{check="pubsub"}',
                     'salon_api_health_roundtrip_seconds_count{check="simple"}',
                     'salon_api_health_failures_total{check="pubsub",reason="no_worker"}',
                     'salon_pubsub_subscriber_connected{subscriber="api"} 1.0'):
            assert name in metrics, name
        assert '/v1/sessions/{company_id}' in metrics  # route templates, not ids
        assert company not in metrics


async def test_readiness_reports_a_dependency_down(tmp_path: Path, stack: StackInfo,
                                                   api_namespace: str,
                                                   api_database: str) -> None:
    """Without a Kubernetes API the process serves, but is not ready (and says why)."""
    from tests.api.server import start_api

    server = await asyncio.to_thread(start_api, tmp_path, database=api_database,
                                     redis_url=stack.redis_url, kubeconfig=None,
                                     namespace=api_namespace)
    try:
        async with server.client() as http:
            ready = await http.get("/readyz")
            assert ready.status_code == 503
            checks = ready.json()["checks"]
            assert checks["kubernetes"] == {"ok": False, "latency_ms": None,
                                            "error": "RuntimeError", "message": None}
            assert checks["redis"]["ok"] is True
            create = await http.post("/v1/sessions", headers=server.admin(),
                                     json={"company_id": new_company()})
            assert create.status_code == 503
            assert _error(create)["code"] == "kubernetes_unconfigured"
    finally:
        await asyncio.to_thread(server.stop)


async def test_no_secret_reaches_the_log(api: ApiServer) -> None:
    """Runs after the tests above in this module (same API process): no token, QR payload
    or pairing code it handed out appears in its log."""
    log = api.log()
    assert "GET /v1/sessions/{company_id}/qr.png 200" in log
    assert api.secrets_seen
    assert "> TEXT" not in log  # WebSocket frames are not logged, even at DEBUG
    for secret in (*api.secrets_seen, api.admin_token, api.token_secret):
        assert secret not in log
