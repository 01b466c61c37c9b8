from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from salon_sessions.core.phone import (
    InvalidJid,
    InvalidPhone,
    JidKind,
    NoLidResolver,
    NotAPhone,
    Resolved,
    Unresolved,
    parse_jid,
    parse_phone,
    phone_from_user_jid,
    phone_of,
)


class DictResolver:
    def __init__(self, known: dict[str, str]) -> None:
        self.known = known
        self.asked: list[str] = []

    async def phone_for_lid(self, lid_user: str) -> str | None:
        self.asked.append(lid_user)
        return self.known.get(lid_user)


@pytest.mark.parametrize("raw", [
    "+7 (968) 648-44-88", "79686484488", " 7 968 648 44 88 ", "+7.968.648.44.88",
    "+7-968-6484488",
])
def test_parses_human_phone_input(raw: str) -> None:
    assert parse_phone(raw) == "79686484488"


@pytest.mark.parametrize(("raw", "why"), [
    ("", "empty"),
    ("+", "empty"),
    ("1234567", "7 digits"),
    ("1234567890123456", "16 digits"),
    ("0079686484488", "never with 0"),
    ("+7 968 CALL-ME", "only digits"),
    ("٧٩٦٨٦٤٨٤٤٨٨", "only digits"),
    ("79686484488@s.whatsapp.net", "JID"),
    ("7968648448#8", "only digits"),
])
def test_rejects_non_phones(raw: str, why: str) -> None:
    with pytest.raises(InvalidPhone, match=why):
        parse_phone(raw)


@given(st.integers(min_value=10**7, max_value=10**15 - 1))
def test_e164_digits_round_trip(n: int) -> None:
    assert parse_phone(str(n)) == str(n)
    assert parse_phone(f"+{n}") == str(n)


@pytest.mark.parametrize(("jid", "kind", "user", "device"), [
    ("79686484488:32@s.whatsapp.net", JidKind.USER, "79686484488", 32),
    ("79686484488@s.whatsapp.net", JidKind.USER, "79686484488", 0),
    ("79686484488.0:5@s.whatsapp.net", JidKind.USER, "79686484488", 5),
    ("79686484488@c.us", JidKind.USER, "79686484488", 0),
    ("123456789012345@lid", JidKind.LID, "123456789012345", 0),
    ("123456789012345:7@lid", JidKind.LID, "123456789012345", 7),
    ("120363025246125486@g.us", JidKind.GROUP, "120363025246125486", 0),
    ("status@broadcast", JidKind.BROADCAST, "status", 0),
    ("1234567890@broadcast", JidKind.BROADCAST, "1234567890", 0),
    ("120363144038483540@newsletter", JidKind.NEWSLETTER, "120363144038483540", 0),
    ("@s.whatsapp.net", JidKind.SERVER, "", 0),
])
def test_parses_and_classifies_jids(jid: str, kind: JidKind, user: str, device: int) -> None:
    parsed = parse_jid(jid)
    assert (parsed.kind, parsed.user, parsed.device) == (kind, user, device)
    assert str(parse_jid(str(parsed))) == str(parsed)


@pytest.mark.parametrize("bad", ["79686484488", "79686484488@example.com", "a@b@c", ""])
def test_rejects_non_jids(bad: str) -> None:
    with pytest.raises(InvalidJid):
        parse_jid(bad)


@pytest.mark.parametrize("jid", [
    "79686484488:32@s.whatsapp.net", "79686484488@s.whatsapp.net", "79686484488@c.us",
])
async def test_user_jids_become_phones_with_the_device_stripped(jid: str) -> None:
    assert await phone_of(jid, NoLidResolver()) == Resolved("79686484488")
    assert phone_from_user_jid(jid) == "79686484488"


async def test_lid_resolves_through_the_injected_resolver() -> None:
    resolver = DictResolver({"123456789012345": "79686484488"})
    result = await phone_of("123456789012345:3@lid", resolver)
    assert result == Resolved("79686484488", via_lid="123456789012345@lid")
    assert resolver.asked == ["123456789012345"]


async def test_unresolved_lid_is_never_shown_as_a_number() -> None:
    result = await phone_of("123456789012345@lid", NoLidResolver())
    assert result == Unresolved(lid="123456789012345@lid")
    assert not hasattr(result, "phone")


async def test_resolver_returning_garbage_stays_unresolved() -> None:
    result = await phone_of("123456789012345@lid", DictResolver({"123456789012345": "n/a"}))
    assert isinstance(result, Unresolved)


@pytest.mark.parametrize("jid", [
    "120363025246125486@g.us", "status@broadcast", "1234567890@broadcast",
    "120363144038483540@newsletter", "@s.whatsapp.net", "not a jid",
])
async def test_groups_broadcasts_and_garbage_are_not_phones(jid: str) -> None:
    resolver = DictResolver({})
    result = await phone_of(jid, resolver)
    assert isinstance(result, NotAPhone)
    assert resolver.asked == []


@pytest.mark.parametrize("jid", ["123456789012345@lid", "120363025246125486@g.us"])
def test_resolverless_helper_refuses_lids_and_groups(jid: str) -> None:
    with pytest.raises(InvalidPhone, match="not a phone number"):
        phone_from_user_jid(jid)
