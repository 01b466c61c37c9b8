"""End to end: SalonSession -> StatefulSet -> worker container (on the real node) -> status,
with the simulator driver, the real control plane, Redis and PostgreSQL."""

from __future__ import annotations

import json

import pytest

from salon_sessions.core import channels
from salon_sessions.core.settings import MANAGED_WORKER_ENV
from tests.helpers import eventually
from tests.operator.conftest import OperatorEnv
from tests.operator.helpers import (
    PHONE,
    Phone,
    StatusWatch,
    condition,
    credentials,
    history,
    new_company,
)

pytestmark = [pytest.mark.slow, pytest.mark.e2e]


def check_statefulset(env: OperatorEnv, name: str, company: str, uid: str) -> None:
    sts = eventually(lambda: [s for s in env.statefulsets()
                              if s["metadata"]["name"] == name], 30, "the StatefulSet")[0]
    meta, spec = sts["metadata"], sts["spec"]
    assert meta["labels"] == {
        "app.kubernetes.io/name": "salon-sessions",
        "app.kubernetes.io/component": "session-worker",
        "app.kubernetes.io/instance": name,
        "app.kubernetes.io/managed-by": "salon-sessions-operator",
        "wa.salonsessions.io/company-id": company,
    }
    owner = meta["ownerReferences"][0]
    assert (owner["kind"], owner["uid"], owner["controller"]) == ("SalonSession", uid, True)
    assert spec["replicas"] == 1
    pod = spec["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    container = pod["containers"][0]
    assert container["command"] == ["salon-sessions", "worker"]
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    env_vars = {e["name"]: e for e in container["env"]}
    assert env_vars["SALON_DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {
        "name": f"{name}-credentials", "key": "database-url"}
    assert env_vars["SALON_REDIS_URL"]["valueFrom"]["secretKeyRef"] == {
        "name": f"{name}-credentials", "key": "redis-url"}
    assert env_vars["SALON_POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    optional = {"SALON_PROXY_URL", "SALON_POST_CONNECT_URL",  # only behind a PgBouncer:
                "SALON_LOCK_DATABASE_URL", "SALON_DATABASE_POOLER",
                "SALON_LINK_EXPIRE_AFTER_S"}  # only for a bound other than the default
    assert set(MANAGED_WORKER_ENV) - optional <= \
        set(env_vars)
    text = json.dumps(sts)
    for secret in (env.database, env.redis_url):
        assert secret.rsplit("@", 1)[0] not in text  # no credentials in the StatefulSet


def delete_and_check_cleanup(env: OperatorEnv, phone: Phone, name: str, company: str) -> None:
    env.kubectl("delete", "salonsession", name, "--timeout=60s")
    assert not env.exists("salonsession", name)
    assert credentials(env.database, company) == {"simulator_device": 0, "salon_sessions": 0}
    assert history(env.database, company)[-1] == "deleted"
    assert phone.keys() == []
    eventually(lambda: not env.exists("statefulset", name), 30, "StatefulSet collected")
    reasons = [e["reason"] for e in env.events(name)]
    assert "CredentialsDeleted" in reasons


def test_qr_link_connect_disconnect_delete(operator_env: OperatorEnv) -> None:
    env = operator_env
    op = env.start_operator()
    env.wait_role(op, "leader")
    company = new_company()
    name = env.apply_session(company, displayName="Salon QR")
    uid = env.session(name)["metadata"]["uid"]
    check_statefulset(env, name, company, uid)
    phone = Phone(env.redis_url, company)
    try:
        status = env.wait_status(name, "awaiting the scan", phase="AwaitingLink")
        assert status["linked"] is False
        assert status["connected"] is False
        assert status["podName"] == f"{name}-0"
        assert eventually(phone.qr, 30, "a QR in Redis")

        phone.scan()
        status = env.wait_status(name, "connected", phase="Connected", linked=True,
                                 connected=True, phone=PHONE)
        generation = env.session(name)["metadata"]["generation"]
        assert status["observedGeneration"] == generation
        for ctype in ("Linked", "Connected"):
            cond = condition(status, ctype)
            assert cond["status"] == "True"
            assert cond["observedGeneration"] == generation
            assert cond["lastTransitionTime"]
        assert status["lastConnectedAt"]
        assert status["lastEventAt"]
        env.wait_status(name, "ready", phase="Connected")
        eventually(lambda: condition(env.status(name), "Ready")["status"] == "True", 30,
                   "Ready=True (the worker answers pings)")
        assert condition(env.status(name), "WorkerHealthy")["reason"] == "PongReceived"
        row = env.kubectl("get", "salonsession", name, "--no-headers").stdout.split()
        assert row[:5] == [name, company, "Connected", "true", "true"]
        assert row[5] == PHONE

        watch = StatusWatch(env.stack, env.namespace, name).started()
        try:
            phone.act(action="disconnect")  # network loss: the worker reconnects by itself
            eventually(lambda: watch.saw(lambda s: s.get("connected") is False
                                         and s.get("linked") is True
                                         and s.get("phase") == "Disconnected"),
                       30, "connected=false, linked=true")
            eventually(lambda: watch.saw(lambda s: s.get("phase") == "Connected")
                       and env.status(name).get("connected") is True, 30, "reconnected")
        finally:
            watch.close()
        reasons = {e["reason"] for e in env.events(name)}
        assert {"Starting", "AwaitingLink", "Connected", "Disconnected"} <= reasons

        # a send with the default pacing (jitter, typing) goes out; then WhatsApp refuses
        # one as rate-limited: the worker stops sending, the operator posts a Warning
        # Event, and the session stays connected
        def send(key: str) -> None:
            phone.redis.xadd(channels.outbound_stream(company), {"payload": json.dumps(
                {"v": 1, "type": "send_text", "company_id": company, "idempotency_key": key,
                 "to": "79001234567", "text": "hello"})})

        def result_of(key: str) -> list[str]:
            return [f[b"status"].decode() for _, f in phone.redis.xrange(
                channels.results_stream(company)) if f[b"idempotency_key"] == key.encode()]

        send("e2e-0")
        eventually(lambda: result_of("e2e-0") == ["sent"], 30, "sent with default pacing")
        phone.act(action="send_limit", code=429, expire_s=600)
        send("e2e-1")
        eventually(lambda: [e for e in env.events(name) if e["reason"] == "SendingPaused"],
                   30, "a SendingPaused Warning Event")
        assert result_of("e2e-1") == ["delayed"]  # waits, not dropped
        paused = next(e for e in env.events(name) if e["reason"] == "SendingPaused")
        assert paused["type"] == "Warning"
        assert "rate_limited" in paused["message"]
        assert env.status(name).get("connected") is True
        assert op.metric("salon_operator_sessions", phase="Connected") == 1
        assert op.metric("salon_operator_sessions_linked") == 1
        assert op.metric("salon_operator_pubsub_roundtrip_seconds_count") > 0
        assert op.metric("salon_operator_session_roundtrip_seconds", company_id=company) > 0

        delete_and_check_cleanup(env, phone, name, company)
    finally:
        phone.close()


def test_pairing_code_link_and_delete(operator_env: OperatorEnv) -> None:
    env = operator_env
    env.wait_role(env.start_operator(), "leader")
    company = new_company()
    name = env.apply_session(company, link={"method": "pairingCode", "phoneNumber": PHONE})
    phone = Phone(env.redis_url, company)
    try:
        env.wait_status(name, "worker up", phase="AwaitingLink")
        code = phone.control("pairing_code", phone=PHONE)["code"]
        env.wait_status(name, "code issued", phase="PairingCodeIssued", linked=False)
        phone.act(action="enter_code", code=code)
        status = env.wait_status(name, "connected", phase="Connected", linked=True,
                                 connected=True, phone=PHONE)
        assert condition(status, "Linked")["reason"] == "Linked"
        delete_and_check_cleanup(env, phone, name, company)
    finally:
        phone.close()
