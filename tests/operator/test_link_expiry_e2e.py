"""End to end: an onboarding that ends. A SalonSession with `spec.link.expireAfter` of a few
seconds -> StatefulSet -> worker container (the simulator) -> QR codes stop -> `.status`
phase `LinkExpired`, Linked condition reason `LinkExpired`, `linkExpiresAt` -> the worker's
pod deleted (a restart) -> still expired, no QR -> renewed -> QR codes again -> a scan
links."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest

from salon_sessions.core import channels
from tests.helpers import eventually
from tests.operator.conftest import OperatorEnv
from tests.operator.helpers import PHONE, Phone, condition, new_company

pytestmark = [pytest.mark.slow, pytest.mark.e2e]
BOUND = "8s"


def when(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def qr_events(phone: Phone, seconds: float) -> int:
    """Listen to the session's events for `seconds`; the number of `qr` events."""
    pubsub = phone.redis.pubsub()
    count = 0
    try:
        pubsub.subscribe(channels.events_channel(phone.company))
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            msg = pubsub.get_message(ignore_subscribe_messages=True, timeout=min(left, 1.0))
            if msg is not None and b'"type":"qr"' in msg["data"].replace(b" ", b""):
                count += 1
    finally:
        pubsub.close()
    return count


def test_link_expires_survives_a_restart_and_renews(operator_env: OperatorEnv) -> None:
    env = operator_env
    op = env.start_operator()
    env.wait_role(op, "leader")
    company = new_company()
    name = env.apply_session(company, link={"method": "qr", "expireAfter": BOUND})
    sts = eventually(lambda: [s for s in env.statefulsets()
                              if s["metadata"]["name"] == name], 30, "the StatefulSet")[0]
    container = sts["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "SALON_LINK_EXPIRE_AFTER_S", "value": "8"} in container["env"]
    phone = Phone(env.redis_url, company)
    try:
        status = env.wait_status(name, "awaiting the scan", 90, phase="AwaitingLink")
        ends = when(eventually(lambda: env.status(name).get("linkExpiresAt"), 30,
                               "linkExpiresAt"))
        assert ends <= datetime.now(UTC) + timedelta(seconds=8)

        status = env.wait_status(name, "the onboarding ended", 30, phase="LinkExpired")
        linked = condition(status, "Linked")
        assert (linked["status"], linked["reason"]) == ("False", "LinkExpired")
        assert "expireAfter" in linked["message"]
        assert condition(status, "Ready")["reason"] == "LinkExpired"
        assert (status["linked"], status["connected"]) == (False, False)
        assert when(status["linkExpiresAt"]) == ends
        assert qr_events(phone, 6) == 0  # QR period 3 s: two rotations would have come
        assert phone.qr() is None
        row = env.kubectl("get", "salonsession", name, "--no-headers").stdout.split()
        assert row[2:4] == ["LinkExpired", "false"]
        assert "LinkExpired" in {e["reason"] for e in env.events(name)}

        # the worker restarts (its pod deleted): the new one stays expired, asks for nothing
        pod_uid = env.pod(f"{name}-0")["metadata"]["uid"]  # type: ignore[index]
        env.kubectl("delete", "pod", f"{name}-0", "--wait=false")
        eventually(lambda: (p := env.pod(f"{name}-0")) is not None
                   and p["metadata"]["uid"] != pod_uid
                   and phone.state().get("lock") == "holding the session lock"
                   and phone.state().get("phase") == "LinkExpired", 90,
                   "a new worker holding the expired session")
        assert qr_events(phone, 6) == 0
        assert env.status(name)["phase"] == "LinkExpired"

        # renewed (what POST /v1/sessions/{id}/link/renew sends): QR codes again, a scan links
        renewed = phone.control("renew_link")
        assert renewed["phase"] == "Starting"
        assert when(renewed["expires_at"]) > ends + timedelta(seconds=8)
        env.wait_status(name, "awaiting the scan again", 30, phase="AwaitingLink")
        new_end = when(renewed["expires_at"]).replace(microsecond=0)  # status: RFC 3339 s
        eventually(lambda: env.status(name).get("linkExpiresAt")
                   and when(env.status(name)["linkExpiresAt"]) == new_end,
                   30, "the new end in the status")
        phone.scan()
        status = env.wait_status(name, "connected", 30, phase="Connected", linked=True,
                                 connected=True, phone=PHONE)
        assert "linkExpiresAt" not in status
        time.sleep(9)  # past the renewed bound: a linked session never expires
        assert env.status(name)["phase"] == "Connected"
    finally:
        phone.close()
