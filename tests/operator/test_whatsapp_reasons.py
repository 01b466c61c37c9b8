"""WhatsApp's answers reach the SalonSession's status (issue 12): the simulator plays a
passkey request, a temporary ban and a replaced stream against a worker pod that the
operator runs on the real node, and the conditions say why, as a person reads them with
`kubectl describe`. Real apiserver, Redis, PostgreSQL and workers."""

from __future__ import annotations

from typing import Any

import pytest

from tests.helpers import eventually
from tests.operator.conftest import OperatorEnv
from tests.operator.helpers import PHONE, Phone, condition, new_company

pytestmark = [pytest.mark.slow, pytest.mark.e2e]


def reason_of(env: OperatorEnv, name: str, ctype: str) -> str:
    return str(condition(env.status(name), ctype)["reason"])


def test_passkey_ban_and_replaced_stream_are_condition_reasons(
        operator_env: OperatorEnv) -> None:
    env = operator_env
    op = env.start_operator()
    env.wait_role(op, "leader")
    company = new_company()
    name = env.apply_session(company)
    phone = Phone(env.redis_url, company)
    try:
        env.wait_status(name, "awaiting the scan", phase="AwaitingLink")
        # the first QR lasts 60 s (default timings): the request lands in its login
        eventually(lambda: phone.act(action="passkey", stage="request") == 1, 30,
                   "the simulated phone heard")
        status: dict[str, Any] = env.wait_status(name, "asked for a passkey",
                                                 phase="PasskeyRequired", linked=False)
        assert condition(status, "Linked")["reason"] == "PasskeyRequired"
        assert "passkey" in condition(status, "Linked")["message"]
        phone.scan()  # the QR login stayed open
        env.wait_status(name, "connected", phase="Connected", connected=True, phone=PHONE)

        phone.act(action="temporary_ban", code=102, expire_s=None)
        env.wait_status(name, "banned", phase="Disconnected", connected=False, linked=True)
        eventually(lambda: reason_of(env, name, "Connected") == "TemporaryBan", 60,
                   "Connected=False TemporaryBan")
        assert "blocked by users" in condition(env.status(name), "Connected")["message"]

        assert phone.control("restart") == {"restarting": True}
        env.wait_status(name, "connected after the restart", phase="Connected",
                        connected=True)
        before = phone.state()["last_connected_at"]
        phone.act(action="stream_replaced")  # retried once, after a pause
        eventually(lambda: phone.state().get("connected") == "true"
                   and phone.state().get("last_connected_at") != before, 60,
                   "reconnected by itself")
        env.wait_status(name, "connected again", phase="Connected", connected=True)
        phone.act(action="stream_replaced")  # within the window: halted
        env.wait_status(name, "replaced", phase="Disconnected", connected=False, linked=True)
        eventually(lambda: reason_of(env, name, "Connected") == "StreamReplaced", 60,
                   "Connected=False StreamReplaced")
        assert condition(env.status(name), "Ready")["status"] == "False"
    finally:
        phone.close()
