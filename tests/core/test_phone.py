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
    device_jid,
    e164_digits,
    parse_device_jid,
    parse_jid,
    parse_phone,
    phone_example,
    phone_from_user_jid,
    phone_of,
    user_jid,
    valid_region,
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
    ("1234567", "not a valid international number"),
    ("1234567890123456", "not a valid international number"),
    ("0079686484488", "never with 0"),
    ("+7 968 CALL-ME", "only digits"),
    ("٧٩٦٨٦٤٨٤٤٨٨", "only digits"),
    ("79686484488@s.whatsapp.net", "JID"),
    ("7968648448#8", "only digits"),
    ("+7 968 648-44-88 " + "0" * 40, "too long"),
])
def test_rejects_non_phones(raw: str, why: str) -> None:
    with pytest.raises(InvalidPhone, match=why) as refused:
        parse_phone(raw)
    assert "+7 912 345-67-89" in refused.value.why, "the error shows the expected form"
    if len(raw) > 4:
        assert raw.strip() not in refused.value.why, "the reason never quotes the input"


# ---- national formats with a default region (SALON_DEFAULT_REGION) -------------------

@pytest.mark.parametrize(("typed", "region", "e164"), [
    # Russia: the trunk prefix 8, or +7 / 7
    ("89161234567", "RU", "79161234567"),
    ("8 (916) 123-45-67", "RU", "79161234567"),
    ("+7 916 123-45-67", "RU", "79161234567"),
    ("79161234567", "RU", "79161234567"),
    # Kazakhstan: +7 as well, 7xx ranges, trunk prefix 8
    ("8 701 234 5678", "KZ", "77012345678"),
    ("8 (771) 000-99-98", "KZ", "77710009998"),
    ("+7 701 234 56 78", "KZ", "77012345678"),
    # Brazil: area code and the mobile 9, with or without the trunk 0
    ("(11) 98765-4321", "BR", "5511987654321"),
    ("011 98765-4321", "BR", "5511987654321"),
    ("21 99876-5432", "BR", "5521998765432"),
    ("+55 11 98765-4321", "BR", "5511987654321"),
    # India: ten digits, with or without the trunk 0
    ("0 98765 43210", "IN", "919876543210"),
    ("98765 43210", "IN", "919876543210"),
    ("09876543210", "IN", "919876543210"),
    ("+91 98765 43210", "IN", "919876543210"),
    # another country's number with its code, typed without '+', under a region
    ("5511987654321", "RU", "5511987654321"),
    ("+7 968 648-44-88", "IN", "79686484488"),
])
def test_reads_national_formats_with_a_default_region(typed: str, region: str,
                                                       e164: str) -> None:
    assert parse_phone(typed, region) == e164
    assert parse_phone(typed, region.lower()) == e164


@pytest.mark.parametrize("typed", ["89161234567", "8 916 123-45-67", "8 701 234 5678",
                                   "(11) 98765-4321", "09876543210", "98765 43210"])
def test_national_formats_are_refused_without_a_region(typed: str) -> None:
    """`89161234567` is not an international number (there is no country code 89...), even
    though it has 11 digits: validity is phonenumbers', not a digit count."""
    with pytest.raises(InvalidPhone, match="no default region is set") as refused:
        parse_phone(typed)
    assert "country code, like +7 912 345-67-89" in refused.value.why


@pytest.mark.parametrize("typed", [
    "+7 000 000-00-00",      # no such range in Russia
    "+7 912 345 67",         # too short
    "+7 912 345 67 890",     # too long
    "+999 1234 5678",        # no country 999
    "+1 555 0100",           # too short for NANP
    "+44 20 1234",           # too short for the UK
    "+55 11 1234-567",       # too short for Brazil
    "+91 98765 4321",        # nine digits: too short for India
    "00000000",
])
@pytest.mark.parametrize("region", [None, "RU", "KZ", "BR", "IN"])
def test_numbers_invalid_anywhere(typed: str, region: str | None) -> None:
    with pytest.raises(InvalidPhone, match=r"not a valid|never with 0") as refused:
        parse_phone(typed, region)
    assert phone_example(region) in refused.value.why


def test_the_error_names_the_region_and_its_form() -> None:
    with pytest.raises(InvalidPhone) as refused:
        parse_phone("8 916 123", "RU")
    assert refused.value.why == ("not a valid phone number; expected a number of RU or one "
                                 "with its country code, like +7 912 345-67-89")


@pytest.mark.parametrize(("region", "example"), [
    (None, "+7 912 345-67-89"), ("", "+7 912 345-67-89"), ("RU", "+7 912 345-67-89"),
    ("ru", "+7 912 345-67-89"), ("KZ", "+7 771 000 9998"), ("BR", "+55 11 96123-4567"),
    ("IN", "+91 81234 56789"),
])
def test_phone_example_is_a_valid_number_of_its_region(region: str | None,
                                                       example: str) -> None:
    assert phone_example(region) == example
    assert parse_phone(example) == parse_phone(example, region)


@pytest.mark.parametrize("bad", ["XX", "RUS", "Russia", "7"])
def test_unknown_regions_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="unknown region"):
        valid_region(bad)
    with pytest.raises(ValueError, match="unknown region"):
        parse_phone("79686484488", bad)


@given(st.integers(min_value=10**7, max_value=10**15 - 1))
def test_e164_digits_round_trip(n: int) -> None:
    """Stored numbers and JIDs are read by shape only: a number accepted once is never
    re-judged by newer phone-number metadata."""
    assert e164_digits(str(n)) == str(n)
    assert e164_digits(f"+{n}") == str(n)


@pytest.mark.parametrize(("raw", "why"), [
    ("", "empty"), ("1234567", "7 digits"), ("1234567890123456", "16 digits"),
    ("0079686484488", "never with 0"), ("+7 968 CALL-ME", "only digits"),
    ("79686484488@s.whatsapp.net", "JID"),
])
def test_e164_digits_rejects_non_phones(raw: str, why: str) -> None:
    with pytest.raises(InvalidPhone, match=why):
        e164_digits(raw)


async def test_a_stored_number_that_phonenumbers_calls_invalid_still_reads() -> None:
    """`70000000000` is no valid number, but a JID or status that carries it still parses:
    only typed input is judged."""
    with pytest.raises(InvalidPhone):
        parse_phone("70000000000")
    assert phone_from_user_jid("70000000000@s.whatsapp.net") == "70000000000"
    assert await phone_of("70000000000:3@s.whatsapp.net", NoLidResolver()) == \
        Resolved("70000000000")


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


def test_jid_builders_round_trip_through_the_parser() -> None:
    assert user_jid("79686484488") == "79686484488@s.whatsapp.net"
    assert device_jid("79686484488", 32) == "79686484488:32@s.whatsapp.net"
    assert parse_jid(user_jid("+7 968 648-44-88")).kind is JidKind.USER
    assert parse_device_jid(device_jid("79686484488", 7)).device == 7
    with pytest.raises(InvalidPhone):
        user_jid("123456789012345@lid")
    with pytest.raises(InvalidJid):
        device_jid("79686484488", 0)


@pytest.mark.parametrize("jid", ["79686484488:32@s.whatsapp.net", "123456789012345:12@lid"])
def test_device_jids_are_user_or_lid_jids(jid: str) -> None:
    assert str(parse_device_jid(jid)) == jid


@pytest.mark.parametrize("jid", ["120363025246125486@g.us", "status@broadcast",
                                 "@s.whatsapp.net", "not a jid"])
def test_anything_else_is_not_a_device_jid(jid: str) -> None:
    with pytest.raises(InvalidJid):
        parse_device_jid(jid)
