"""Linked vs connected, the QR flow and the pairing-code flow, with the simulator driver."""

from __future__ import annotations

import asyncio
import re

import asyncpg
import pytest

from salon_sessions.core.control import ControlError
from tests.worker.conftest import WorkerFactory
from tests.worker.harness import observing

pytestmark = pytest.mark.slow


async def test_qr_flow_linked_only_after_pairing_connected_only_while_open(
        workers: WorkerFactory, redis_url: str, company: str) -> None:
    async with observing(redis_url, company) as obs:
        w = workers()
        await obs.wait_event("qr", count=2)  # rotated by the server side
        state = await obs.wait_state(lambda s: s["phase"] == "AwaitingLink")
        assert state["linked"] == "false"
        assert state["connected"] == "false"

        await obs.wait_published_qr(await obs.qr())  # the stored QR is one it published
        linked = await obs.scan(phone="+7 (968) 648-44-88")
        assert linked["data"]["phone"] == "79686484488"
        assert linked["data"]["method"] == "qr"
        assert re.fullmatch(r"79686484488:\d+@s\.whatsapp\.net", linked["data"]["jid"])
        await obs.wait_event("connected")
        # linked strictly before connected, in publication order
        assert obs.types().index("linked") < obs.types().index("connected")
        state = await obs.wait_state(lambda s: s["connected"] == "true")
        assert (state["phase"], state["linked"], state["phone"]) == (
            "Connected", "true", "79686484488")

        await obs.act({"action": "disconnect"})
        await obs.wait_event("disconnected")
        state = await obs.wait_state(lambda s: s["connected"] == "false")
        assert state["linked"] == "true"
        assert state["phase"] == "Disconnected"
        await obs.wait_event("connected", count=2)  # the driver reconnects by itself
        assert w.proc is not None
        assert w.proc.poll() is None


async def test_stale_qr_scan_does_not_link(workers: WorkerFactory, redis_url: str,
                                           company: str) -> None:
    async with observing(redis_url, company) as obs:
        workers()
        first = (await obs.wait_event("qr"))["data"]["code"]
        await obs.wait_event("qr", count=2)
        await obs.act({"action": "scan", "qr": first, "phone": "79686484488"})
        await asyncio.sleep(1.0)
        assert "linked" not in obs.types()
        assert (await obs.state())["linked"] == "false"


async def test_stored_me_jid_alone_is_not_linked(workers: WorkerFactory, redis_url: str,
                                                 company: str, database: str) -> None:
    """The seed system treated a stored `me` JID as linked; only the store's device counts."""
    async with observing(redis_url, company) as obs:
        w = workers()
        await obs.wait_event("qr")
        await w.stop()
        conn = await asyncpg.connect(database)
        try:
            await conn.execute(
                "INSERT INTO salon_sessions (company_id, namespace, resource_name, device_jid, "
                "phone, linked_at) VALUES ($1, 'ns', $2, '79686484488:3@s.whatsapp.net', "
                "'79686484488', now()) ON CONFLICT (company_id) DO UPDATE SET "
                "device_jid = EXCLUDED.device_jid, linked_at = now()",
                company, company.replace("_", "-"))
        finally:
            await conn.close()
        workers(name="w1")
        await obs.wait_event("qr", count=2)
        state = await obs.wait_state(lambda s: s["lock"] == "holding the session lock"
                                     and s["phase"] == "AwaitingLink")
        assert state["linked"] == "false"


async def test_linked_session_resumes_after_restart_without_new_link(
        workers: WorkerFactory, redis_url: str, company: str) -> None:
    async with observing(redis_url, company) as obs:
        w = workers()
        await obs.wait_event("qr")
        await obs.scan()
        await obs.wait_event("connected")
        await w.stop()
        qrs_before = len(obs.of("qr"))
        workers(name="w1")
        await obs.wait_event("connected", count=2)
        state = await obs.wait_state(lambda s: s["connected"] == "true")
        assert state["linked"] == "true"
        assert len(obs.of("qr")) == qrs_before  # no QR for a linked device
        assert len(obs.of("linked")) == 1  # no new link


async def test_pairing_code_survives_qr_rotation_and_repeated_requests(
        workers: WorkerFactory, redis_url: str, company: str) -> None:
    async with observing(redis_url, company) as obs:
        workers()
        await obs.wait_event("qr")
        first = await obs.control("pairing_code", phone="+7 968 648 44 88")
        assert re.fullmatch(r"[A-Z0-9]{8}", first["code"])
        event = await obs.wait_event("pairing_code")
        assert event["data"]["code"] == first["code"]
        state = await obs.wait_state(lambda s: s["phase"] == "PairingCodeIssued")
        assert state["linked"] == "false"
        assert state["connected"] == "false"

        qrs = len(obs.of("qr"))
        await obs.wait_event("qr", count=qrs + 2)  # two QR rotations while it is pending
        for _ in range(3):  # repeated status requests leave it alone
            state = await obs.control("state")
            assert state["pairing_code_pending"] == "true"
        again = await obs.control("pairing_code", phone="79686484488")
        assert again == first
        assert len(obs.of("pairing_code")) == 1
        assert (await obs.state())["phase"] == "PairingCodeIssued"

        # another number while a code is pending: refused, the pending code stays
        with pytest.raises(ControlError) as refused:
            await obs.control("pairing_code", phone="79001234567")
        assert refused.value.code == "pairing_code_pending"
        # restart refused while pending, unless forced
        with pytest.raises(ControlError) as refused:
            await obs.control("restart")
        assert refused.value.code == "pairing_code_pending"

        await obs.act({"action": "enter_code", "code": first["code"][:4] + "-" + first["code"][4:]})
        linked = await obs.wait_event("linked")
        assert linked["data"]["method"] == "pairingCode"
        assert linked["data"]["phone"] == "79686484488"
        await obs.wait_event("connected")
        with pytest.raises(ControlError) as refused:
            await obs.control("pairing_code", phone="79686484488")
        assert refused.value.code == "already_linked"


async def test_forced_restart_discards_pending_code(workers: WorkerFactory, redis_url: str,
                                                    company: str) -> None:
    async with observing(redis_url, company) as obs:
        workers()
        await obs.wait_event("qr")
        await obs.control("pairing_code", phone="79686484488")
        assert await obs.control("restart", force=True) == {"restarting": True}
        await obs.wait_state(lambda s: s["pairing_code_pending"] == "false")


async def test_logout_from_phone_removes_link_and_shows_qr_again(
        workers: WorkerFactory, redis_url: str, company: str, database: str) -> None:
    async with observing(redis_url, company) as obs:
        workers()
        await obs.wait_event("qr")
        await obs.scan()
        await obs.wait_event("connected")
        qrs = len(obs.of("qr"))
        await obs.act({"action": "logout"})
        await obs.wait_event("logged_out")
        await obs.wait_event("qr", count=qrs + 1)
        state = await obs.wait_state(lambda s: s["phase"] == "AwaitingLink")
        assert (state["linked"], state["connected"], state["phone"]) == ("false", "false", "")
        conn = await asyncpg.connect(database)
        try:
            history = [r["action"] for r in await conn.fetch(
                "SELECT action FROM salon_link_history WHERE company_id = $1 ORDER BY id",
                company)]
            row = await conn.fetchrow("SELECT device_jid FROM salon_sessions "
                                      "WHERE company_id = $1", company)
        finally:
            await conn.close()
        assert history == ["linked", "logged_out"]
        assert row is not None
        assert row["device_jid"] is None
