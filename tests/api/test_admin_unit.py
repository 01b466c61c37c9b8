"""The admin console's rows and fan-out, without servers: phone masking, which state wins,
the WorkerHealthy condition, company order, and the admin group of the hub."""

from __future__ import annotations

import asyncio

from prometheus_client import CollectorRegistry

from salon_sessions.api.fleet import make_row, slim, sort_key
from salon_sessions.api.hub import ADMIN, Hub
from salon_sessions.api.metrics import ApiMetrics
from salon_sessions.api.models import LiveState
from salon_sessions.api.ws_transport import CLOSE_TOO_SLOW
from salon_sessions.core.phone import mask_phone
from salon_sessions.core.resource import Phase

OBJ = {
    "metadata": {"name": "company-7", "creationTimestamp": "2026-11-29T10:00:00Z",
                 "managedFields": [{"manager": "kubectl"}]},
    "spec": {"companyId": "company_7", "displayName": "Salon Aurora",
             "link": {"method": "pairingCode", "phoneNumber": "79686484488"}},
    "status": {"phase": "Disconnected", "linked": True, "connected": False,
               "phone": "79686484488", "lastConnectedAt": "2026-11-29T11:00:00Z",
               "conditions": [{"type": "WorkerHealthy", "status": "False",
                               "reason": "HeartbeatLost"}]},
}


def test_phones_are_masked_but_the_last_four_digits() -> None:
    assert mask_phone("79686484488") == "•••••••4488"
    assert mask_phone("+7 968 648-44-88") == "•••••••4488"
    assert mask_phone("123") == "•••"
    assert mask_phone(None) is None
    assert mask_phone("") is None


def test_a_row_from_the_status_then_from_the_live_state() -> None:
    row = make_row("company_7", slim(OBJ), None)
    assert row["phase"] == "Disconnected"
    assert (row["linked"], row["connected"], row["worker_live"]) == (True, False, False)
    assert row["phone"] == "•••••••4488"
    assert "79686484488" not in str(row)
    assert (row["worker_healthy"], row["worker_reason"]) == (False, "HeartbeatLost")
    assert row["last_connected_at"] == "2026-11-29T11:00:00Z"
    assert row["display_name"] == "Salon Aurora"
    assert row["link_method"] == "pairingCode"

    live = LiveState(phase=Phase.CONNECTED, linked=True, connected=True, phone="79161234567")
    row = make_row("company_7", slim(OBJ), live)
    assert (row["phase"], row["connected"], row["worker_live"]) == ("Connected", True, True)
    assert row["phone"] == "•••••••4567"


def test_a_new_resource_is_pending_and_its_health_unknown() -> None:
    row = make_row("company_8", {"metadata": {"name": "company-8"},
                                 "spec": {"companyId": "company_8"}}, None)
    assert (row["phase"], row["worker_healthy"], row["phone"]) == ("Pending", None, None)
    assert "managedFields" not in str(slim(OBJ))


def test_numeric_company_order() -> None:
    ids = ["company_10", "company_9", "company_100", "company_11"]
    assert sorted(ids, key=sort_key) == ["company_9", "company_10", "company_11",
                                         "company_100"]


async def test_admin_consoles_get_broadcasts_and_a_slow_one_is_dropped() -> None:
    async def snapshot(company_id: str) -> str:
        assert company_id != ADMIN, "the fleet restates the consoles, not the hub"
        return "{}"

    hub = Hub(ApiMetrics(CollectorRegistry()), queue_size=2, heartbeat_s=60,
              max_per_company=3, snapshot=snapshot)
    fast, slow = hub.register(ADMIN), hub.register(ADMIN)
    page = hub.register("company_7")
    hub.broadcast_admin("a")
    assert await fast.next() == "a"
    hub.broadcast_admin("b")
    hub.broadcast_admin("c")
    assert not fast.closed.is_set()
    assert slow.closed.is_set()
    assert slow.close_code == CLOSE_TOO_SLOW
    assert page.queue.empty()  # a company's page never sees the fleet
    await asyncio.wait_for(hub.restate(), 5)
    assert page.queue.qsize() == 1
    assert hub.count(ADMIN) == 2
