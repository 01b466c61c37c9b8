"""One company, one session: which SalonSession owns a company, and when that changes."""

from __future__ import annotations

from typing import Any

from salon_sessions.operator.registry import Registry, Session


def body(namespace: str, name: str, company: str, created: str, uid: str = "") -> dict[str, Any]:
    return {"metadata": {"namespace": namespace, "name": name, "uid": uid or f"{namespace}-{name}",
                         "generation": 1, "creationTimestamp": created},
            "spec": {"companyId": company}}


def test_the_oldest_owns_the_company_and_changes_are_reported() -> None:
    registry = Registry()
    changes: list[tuple[str, str | None]] = []

    def changed(old: Session, new: Session | None) -> None:
        changes.append((old.name, new.name if new else None))

    registry.on_owner_change = changed
    young = registry.observe(body("b", "young", "company_7", "2026-11-25T10:00:05Z"))
    assert young is not None
    assert registry.is_owner(young)
    assert changes == []  # the first session of a company is no change
    other = registry.observe(body("a", "other", "7", "2026-11-25T09:00:00Z"))  # legacy form
    assert other is not None
    assert other.company == "company_7"
    assert changes == [("young", "other")]  # an older one appeared: both are reconciled
    assert registry.owner("company_7") is other
    assert not registry.is_owner(young)
    registry.observe(body("c", "third", "company_7", "2026-11-25T11:00:00Z"))
    assert len(changes) == 1  # a younger one changes nothing
    registry.forget(("a", "other"))
    assert changes[-1] == ("other", "young")  # the owner is gone: the next oldest takes over
    assert registry.owner("company_7") is young
    registry.forget(("c", "third"))
    assert len(changes) == 2
    registry.forget(("b", "young"))
    assert changes[-1] == ("young", None)
    assert registry.owner("company_7") is None


def test_same_creation_time_is_decided_by_namespace_and_name() -> None:
    registry = Registry()
    at = "2026-11-25T10:00:00Z"
    registry.observe(body("z", "s", "company_8", at))
    first = registry.observe(body("a", "s", "company_8", at))
    assert registry.owner("company_8") is first
    other = registry.observe(body("a", "t", "company_9", at))
    assert registry.owner("company_9") is other  # other companies are independent
