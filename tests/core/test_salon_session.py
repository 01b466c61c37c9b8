"""The typed SalonSession views: the CRD's defaults, and bodies that are not what the CRD
accepts read as absent rather than raising."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from salon_sessions.core.events import LinkMethod
from salon_sessions.core.resource import DeletionPolicy, DriverName, Phase
from salon_sessions.core.salon_session import SalonSession, SalonSessionSpec, SalonSessionStatus

CRD = Path(__file__).resolve().parents[2] / "crds" / "salonsessions.wa.salonsessions.io.yaml"


def _schema() -> dict[str, Any]:
    crd = yaml.safe_load(CRD.read_text())
    schema: dict[str, Any] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def test_a_minimal_spec_reads_with_the_crds_defaults() -> None:
    spec = SalonSessionSpec.from_dict({"companyId": "company_1"})
    props = _schema()["properties"]["spec"]["properties"]
    assert spec.company_id == "company_1"
    assert spec.driver is DriverName(props["driver"]["default"])
    assert spec.suspend is props["suspend"]["default"]
    assert spec.deletion_policy is DeletionPolicy(props["deletionPolicy"]["default"])
    assert spec.link.method is LinkMethod(props["link"]["default"]["method"])
    assert spec.link.expire_after is None
    assert spec.link.expire_after_s == 30 * 60  # props["link"]["default"]["expireAfter"]
    assert (spec.proxy, spec.image, spec.display_name, dict(spec.resources)) == (
        None, None, None, {})


def test_a_full_spec() -> None:
    spec = SalonSessionSpec.from_dict({
        "companyId": "company_7", "displayName": "Salon", "driver": "simulator",
        "suspend": True, "deletionPolicy": "Retain", "image": "reg/x:1",
        "link": {"method": "pairingCode", "phoneNumber": "79686484488", "expireAfter": "2h"},
        "proxy": {"secretRef": {"name": "px"}},
        "resources": {"requests": {"cpu": 1, "memory": "64Mi"}}})
    assert spec.driver is DriverName.SIMULATOR
    assert spec.deletion_policy is DeletionPolicy.RETAIN
    assert (spec.link.method, spec.link.phone_number, spec.link.expire_after_s) == (
        LinkMethod.PAIRING_CODE, "79686484488", 7200)
    assert spec.proxy is not None
    assert spec.proxy.secret_key == "url"
    assert spec.proxy.to_dict() == {"secretRef": {"name": "px"}}  # as written
    assert spec.resources == {"requests": {"cpu": "1", "memory": "64Mi"}}


def test_values_the_crd_refuses_read_as_defaults() -> None:
    spec = SalonSessionSpec.from_dict({"companyId": "company_1", "driver": "x",
                                       "deletionPolicy": "Keep",
                                       "link": {"method": "sms", "expireAfter": "1d"}})
    assert spec.driver is DriverName.NEONIZE
    assert spec.deletion_policy is DeletionPolicy.DELETE
    assert spec.link.method is LinkMethod.QR
    assert spec.link.expire_after_s == 30 * 60


def test_a_status_reads_what_it_can() -> None:
    status = SalonSessionStatus.from_dict({
        "phase": "Connected", "linked": True, "connected": True, "phone": "79686484488",
        "lastEventSeq": 5, "observedGeneration": 2, "servedBy": "ns/company-1",
        "lastEventAt": "2026-11-25T10:00:00Z",
        "conditions": [{"type": "Ready", "status": "True", "reason": "SessionReady"},
                       "junk", {"status": "True"}]})
    assert status.phase is Phase.CONNECTED
    assert (status.linked, status.connected, status.phone) == (True, True, "79686484488")
    assert (status.last_event_seq, status.observed_generation) == (5, 2)
    assert status.served_by == "ns/company-1"
    assert status.last_event_at is not None
    assert status.last_event_at.tzinfo is not None
    assert list(status.conditions) == ["Ready"]
    assert status.reason("Ready") == "SessionReady"
    assert status.reason("Linked") is None

    forged = SalonSessionStatus.from_dict({"phase": "Linked", "linked": "yes",
                                           "connected": "true", "phone": "1@lid",
                                           "lastEventSeq": "9", "conditions": {}})
    assert (forged.phase, forged.linked, forged.connected, forged.phone,
            forged.last_event_seq, dict(forged.conditions)) == (None, None, False, None, None, {})
    assert SalonSessionStatus.from_dict(None) == SalonSessionStatus.from_dict({})


def test_a_body() -> None:
    body = SalonSession.from_body({
        "metadata": {"name": "company-1", "namespace": "ns", "uid": "u", "generation": 3,
                     "creationTimestamp": "2026-11-25T10:00:00Z",
                     "deletionTimestamp": "2026-11-25T11:00:00Z"},
        "spec": {"companyId": "company_1"}, "status": {"phase": "Pending"}})
    assert body.key == ("ns", "company-1")
    assert (body.uid, body.generation, body.deleting) == ("u", 3, True)
    assert body.spec.company_id == "company_1"
    assert body.status.phase is Phase.PENDING
