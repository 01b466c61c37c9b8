"""Phone numbers and WhatsApp JIDs: the one module that turns either into a phone.

- A phone is stored as digits-only E.164: 8-15 digits, no leading zero (`PHONE_PATTERN`,
  also the CRD's and the SQL CHECKs').
- `parse_phone(text, region)` reads a number a person typed (the API's pairing-code and
  create calls, the worker's pairing-code requests) with the `phonenumbers` library and
  accepts it only when it is a valid number of some country: `+7 (968) 648-44-88`,
  `79686484488`; with a default region (`SALON_DEFAULT_REGION`) also that region's national
  formats (`8 916 123-45-67` with `RU`). Without a region only international numbers are
  accepted; the error shows the expected form (`phone_example`).
- `mask_phone` shows only the last four digits (the admin console's rows).
- `e164_digits` only checks the stored form's shape: for numbers that were accepted once
  (JIDs, the session store, events, status), never re-judged by a newer metadata version.
- `parse_jid` splits `user[.agent][:device]@server` and classifies the server:
  `s.whatsapp.net`/`c.us` are phone users, `lid` are LIDs (opaque ids, not numbers),
  `g.us` are groups, `broadcast` are broadcast lists and status, `newsletter` are channels.
  `parse_device_jid` is the one rule for a linked device's JID (a user or a LID); JIDs are
  built here too (`user_jid`, `device_jid`), never by f-string elsewhere.
- `phone_of` turns a JID into a phone: device and agent suffixes are stripped, a LID is
  resolved through an injected `LidResolver` (the worker backs it with the session's store)
  and an unresolved LID is reported as `Unresolved`, never as a number. Groups, broadcasts
  and newsletters are `NotAPhone`.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import Annotated, Final, NoReturn, Protocol

import phonenumbers
from pydantic import BeforeValidator

PHONE_PATTERN: Final = r"^[1-9][0-9]{7,14}$"
"""Digits-only E.164 (also used by the CRD and the SQL CHECKs)."""

_PHONE = re.compile(PHONE_PATTERN, re.ASCII)
_DECORATION = re.compile(r"[\s().\-]+")
_JID = re.compile(r"(?P<user>[^@:.]*)(?:\.(?P<agent>[0-9]+))?(?::(?P<device>[0-9]+))?"
                  r"@(?P<server>[a-z.]+)", re.ASCII)


INTERNATIONAL_EXAMPLE: Final = "+7 912 345-67-89"
"""The form `phone_example` shows when no default region is set."""
MAX_INPUT_CHARS: Final = 40


class InvalidPhone(ValueError):
    """The value is not a phone number; `why` never quotes the input."""

    def __init__(self, value: object, why: str) -> None:
        self.value = value
        self.why = why
        super().__init__(f"invalid phone number {value!r}: {why}")


class InvalidJid(ValueError):
    """The value is not a WhatsApp JID (or not the kind of JID required)."""

    def __init__(self, value: object, why: str) -> None:
        self.value = value
        self.why = why
        super().__init__(f"invalid JID {value!r}: {why}")


def valid_phone(value: object) -> str | None:
    """`value` when it is a number as stored (digits-only E.164, exactly), else None: for
    what is read back from a status, a state hash or an event, where nothing is normalised."""
    return value if isinstance(value, str) and _PHONE.fullmatch(value) else None


def e164_digits(value: str) -> str:
    """Digits-only E.164 by shape only (`+`, spaces, dashes, dots, brackets allowed): for
    stored numbers and JIDs, which were accepted once; typed input goes to `parse_phone`."""
    if not isinstance(value, str):
        raise InvalidPhone(value, f"must be a string, not {type(value).__name__}")
    text = value.strip()
    if "@" in text:
        raise InvalidPhone(value, "this is a JID, not a phone number (use phone_of)")
    body = _DECORATION.sub("", text.removeprefix("+"))
    if not body:
        raise InvalidPhone(value, "it is empty")
    if not (body.isascii() and body.isdigit()):
        raise InvalidPhone(value, "only digits, spaces, '+', '-', '.', '(' and ')' are allowed")
    if body.startswith("0"):
        raise InvalidPhone(value, "E.164 numbers start with a country code, never with 0")
    if not _PHONE.fullmatch(body):
        raise InvalidPhone(value, f"{len(body)} digits, expected 8 to 15")
    return body


def valid_region(value: str | None) -> str | None:
    """A default region as `phonenumbers` knows it (`RU`, `KZ`, `BR`, ...); '' is None."""
    if value is None or not value.strip():
        return None
    region = value.strip().upper()
    if region not in phonenumbers.SUPPORTED_REGIONS:
        raise ValueError(f"unknown region {region[:8]!r}: expected an ISO 3166-1 alpha-2 "
                         "code that has phone numbers, such as RU, KZ, BR or IN")
    return region


def phone_example(region: str | None) -> str:
    """How a number should be typed: a mobile number of `region` in international form
    (`+7 912 345-67-89` for RU), or `INTERNATIONAL_EXAMPLE` without a region."""
    region = valid_region(region)
    if region is None:
        return INTERNATIONAL_EXAMPLE
    example = phonenumbers.example_number_for_type(region, phonenumbers.PhoneNumberType.MOBILE)
    if example is None:
        example = phonenumbers.example_number(region)
    if example is None:  # pragma: no cover - every supported region has an example
        return INTERNATIONAL_EXAMPLE
    return phonenumbers.format_number(example, phonenumbers.PhoneNumberFormat.INTERNATIONAL)


SHOWN_DIGITS: Final = 4


def mask_phone(phone: str | None) -> str | None:
    """`79686484488` → `•••••••4488`: enough to tell two salons apart, not to call one
    (the admin console's rows; the onboarding page groups the number it already has)."""
    if not phone:
        return None
    digits = [c for c in phone if c.isdigit()]
    if len(digits) <= SHOWN_DIGITS:
        return "•" * len(digits)
    return "•" * (len(digits) - SHOWN_DIGITS) + "".join(digits[-SHOWN_DIGITS:])


def _parsed(text: str, region: str | None) -> phonenumbers.PhoneNumber | None:
    try:
        return phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        return None


def parse_phone(value: str, region: str | None = None) -> str:
    """A number a person typed, as digits-only E.164, if it is a valid number anywhere.

    Without `region` only international numbers (country code first, the `+` optional:
    `+7 968 648-44-88`, `79686484488`). With a region also its national formats
    (`8 916 123-45-67` with `RU` is `79161234567`); the national reading wins, and a number
    that is not valid there is read as international (`5511987654321` with `RU`).
    Validity is `phonenumbers`' (length and number ranges per country), not a digit count."""
    if not isinstance(value, str):
        raise InvalidPhone(value, f"must be a string, not {type(value).__name__}")
    region = valid_region(region)
    text = value.strip()
    expected = (f"expected the number with its country code, like {phone_example(None)}"
                if region is None else
                f"expected a number of {region} or one with its country code, like "
                f"{phone_example(region)}")
    if "@" in text:
        raise InvalidPhone(value, f"this is a JID, not a phone number; {expected}")
    if len(text) > MAX_INPUT_CHARS:
        raise InvalidPhone(value, f"too long; {expected}")
    body = _DECORATION.sub("", text.removeprefix("+"))
    if not body:
        raise InvalidPhone(value, f"it is empty; {expected}")
    if not (body.isascii() and body.isdigit()):
        raise InvalidPhone(value, "only digits, spaces, '+', '-', '.', '(' and ')' are "
                                  f"allowed; {expected}")
    readings = [] if text.startswith("+") or region is None else [_parsed(body, region)]
    if not body.startswith("0"):
        readings.append(_parsed(f"+{body}", None))
    for number in readings:
        if number is not None and phonenumbers.is_valid_number(number):
            digits = f"{number.country_code}{number.national_number}"
            if _PHONE.fullmatch(digits):
                return digits
    _refuse(value, body, None if text.startswith("+") else region, expected,
            international=text.startswith("+"))


def _refuse(value: str, body: str, region: str | None, expected: str, *,
            international: bool) -> NoReturn:
    if international:
        raise InvalidPhone(value, f"not a valid phone number; {expected}")
    if region is None and body.startswith("0"):
        raise InvalidPhone(value, "international numbers start with a country code, never "
                                  f"with 0 (no default region is set); {expected}")
    if region is None:
        raise InvalidPhone(value, f"not a valid international number (no default region is "
                                  f"set for national formats); {expected}")
    raise InvalidPhone(value, f"not a valid phone number; {expected}")


class JidKind(enum.StrEnum):
    USER = "user"
    LID = "lid"
    GROUP = "group"
    BROADCAST = "broadcast"
    NEWSLETTER = "newsletter"
    SERVER = "server"


_SERVERS: Final = {
    "s.whatsapp.net": JidKind.USER,
    "c.us": JidKind.USER,
    "lid": JidKind.LID,
    "hosted": JidKind.USER,
    "hosted.lid": JidKind.LID,
    "g.us": JidKind.GROUP,
    "broadcast": JidKind.BROADCAST,
    "newsletter": JidKind.NEWSLETTER,
}


@dataclass(frozen=True, slots=True)
class Jid:
    user: str
    server: str
    kind: JidKind
    device: int = 0
    agent: int = 0

    @property
    def bare(self) -> str:
        """The JID without agent and device: `79686484488@s.whatsapp.net`."""
        return f"{self.user}@{self.server}"

    def __str__(self) -> str:
        agent = f".{self.agent}" if self.agent else ""
        device = f":{self.device}" if self.device else ""
        return f"{self.user}{agent}{device}@{self.server}"


def parse_jid(value: str) -> Jid:
    """Split and classify a JID string; raises `InvalidJid`."""
    match = _JID.fullmatch(value.strip()) if isinstance(value, str) else None
    if match is None:
        raise InvalidJid(value, "expected user[:device]@server")
    server = match["server"]
    user = match["user"]
    kind = _SERVERS.get(server)
    if kind is None:
        raise InvalidJid(value, f"unknown server {server!r}")
    if not user:
        kind = JidKind.SERVER
    return Jid(user=user, server=server, kind=kind,
               device=int(match["device"] or 0), agent=int(match["agent"] or 0))


DEVICE_KINDS: Final = frozenset({JidKind.USER, JidKind.LID})
"""What a linked device's JID can be: a phone user's or a LID user's (never a group, a
broadcast, a channel or a bare server)."""


def parse_device_jid(value: str) -> Jid:
    """The one device-JID rule (the `Linked` event's `jid`, a stored or configured device):
    a user or LID JID; raises `InvalidJid`."""
    jid = parse_jid(value)
    if jid.kind not in DEVICE_KINDS:
        raise InvalidJid(value, f"a {jid.kind.value} JID is not a device JID")
    return jid


USER_SERVER: Final = "s.whatsapp.net"
"""The server of phone-number JIDs (`c.us` is its legacy spelling, only ever parsed)."""


def user_jid(phone: str) -> str:
    """The chat JID of a phone number: `79686484488@s.whatsapp.net` (digits-only E.164 by
    shape, `e164_digits`; raises `InvalidPhone`)."""
    return f"{e164_digits(phone)}@{USER_SERVER}"


def device_jid(phone: str, device: int) -> str:
    """The JID of one of a phone's linked devices: `79686484488:32@s.whatsapp.net`."""
    if device <= 0:
        raise InvalidJid(device, "a device number is positive")
    return str(Jid(user=e164_digits(phone), server=USER_SERVER, kind=JidKind.USER,
                   device=device))


@dataclass(frozen=True, slots=True)
class Resolved:
    phone: str
    via_lid: str | None = None


@dataclass(frozen=True, slots=True)
class Unresolved:
    """A LID the store knows no phone number for. Show it as 'unknown', not as digits."""

    lid: str


@dataclass(frozen=True, slots=True)
class NotAPhone:
    jid: str
    kind: JidKind
    reason: str


PhoneResult = Resolved | Unresolved | NotAPhone


class LidResolver(Protocol):
    """Looks a LID user part (`123456789012345`) up in the session's store."""

    async def phone_for_lid(self, lid_user: str) -> str | None: ...


class NoLidResolver:
    """A resolver that knows nothing: every LID stays unresolved."""

    async def phone_for_lid(self, lid_user: str) -> str | None:
        return None


async def phone_of(jid: str | Jid, resolver: LidResolver) -> PhoneResult:
    """The phone behind a JID; never presents a LID, a group or a broadcast as a number."""
    try:
        parsed = jid if isinstance(jid, Jid) else parse_jid(jid)
    except InvalidJid as exc:
        return NotAPhone(jid=str(jid), kind=JidKind.SERVER, reason=str(exc))
    if parsed.kind is JidKind.USER:
        try:
            return Resolved(e164_digits(parsed.user))
        except InvalidPhone as exc:
            return NotAPhone(jid=str(parsed), kind=parsed.kind, reason=exc.why)
    if parsed.kind is JidKind.LID:
        found = await resolver.phone_for_lid(parsed.user)
        if found is None:
            return Unresolved(lid=parsed.bare)
        try:
            return Resolved(e164_digits(found), via_lid=parsed.bare)
        except InvalidPhone:
            return Unresolved(lid=parsed.bare)
    return NotAPhone(jid=str(parsed), kind=parsed.kind,
                     reason=f"a {parsed.kind.value} JID is not a phone number")


def phone_from_user_jid(jid: str) -> str:
    """Phone of a non-LID user JID (for code that has no resolver); raises `InvalidPhone`."""
    try:
        parsed = parse_jid(jid)
    except InvalidJid as exc:
        raise InvalidPhone(jid, exc.why) from None
    if parsed.kind is not JidKind.USER:
        raise InvalidPhone(jid, f"a {parsed.kind.value} JID is not a phone number")
    return e164_digits(parsed.user)


Phone = Annotated[str, BeforeValidator(e164_digits)]
"""A pydantic field type for stored numbers (events, status, outbound messages): digits-only
E.164 by shape (`e164_digits`); typed input is read with `parse_phone` and a region."""
