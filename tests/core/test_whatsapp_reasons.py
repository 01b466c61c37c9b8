"""WhatsApp's codes and the names every part of the system uses for them."""

from __future__ import annotations

import re

import pytest

from salon_sessions.core import whatsapp_reasons as wr


@pytest.mark.parametrize(("code", "name"), [
    (401, "logged_out"), (403, "locked"), (406, "banned"), (503, "service_unavailable"),
    (405, "client_outdated"), (419, "code_419"),
])
def test_failure_codes_have_names_and_unknown_ones_keep_their_number(code: int,
                                                                     name: str) -> None:
    assert wr.failure_name(code) == name


def test_logout_reasons_follow_whatsmeows_is_logged_out() -> None:
    assert [wr.logout_reason(c) for c in (401, 403, 406, None, 499)] == [
        "logged_out", "locked", "banned", "logged_out", "code_499"]


def test_temp_ban_codes() -> None:
    assert wr.temp_ban_name(101) == "sent_to_too_many_people"
    assert wr.temp_ban_name(107) == "code_107"


@pytest.mark.parametrize(("neonize", "ours"), [
    ("main_device_gone", "locked"), ("unknown_logout", "banned"), ("logged_out", "logged_out"),
])
def test_neonize_enum_names_are_translated(neonize: str, ours: str) -> None:
    assert wr.from_neonize_enum(neonize) == ours


def test_every_known_name_makes_a_valid_condition_reason_and_has_a_description() -> None:
    pattern = re.compile(r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")
    for name in [*sorted(wr.KNOWN), "code_419"]:
        assert pattern.match(wr.condition_reason(name)), name
        assert wr.describe(name), name
    assert wr.condition_reason("code_419") == "Code419"
    assert "419" in wr.describe("code_419")


@pytest.mark.parametrize("value", ["", "Banned", "owned by mallory", "code_", "code_x", None,
                                   "banned\n", "x" * 70])
def test_free_text_is_not_a_reason(value: str | None) -> None:
    assert not wr.is_name(value)
