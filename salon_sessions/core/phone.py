"""Phone numbers and WhatsApp JIDs: the one module that turns either into a phone.

- A phone is digits-only E.164: 8-15 digits, no leading zero (country codes never start
  with 0, so `00...` international prefixes are rejected rather than guessed).
- `parse_phone` accepts human input: `+7 (968) 648-44-88`, `7 968 648 44 88`, `79686484488`.
- `parse_jid` splits `user[.agent][:device]@server` and classifies the server:
  `s.whatsapp.net`/`c.us` are phone users, `lid` are LIDs (opaque ids, not numbers),
  `g.us` are groups, `broadcast` are broadcast lists and status, `newsletter` are channels.
- `phone_of` turns a JID into a phone: device and agent suffixes are stripped, a LID is
  resolved through an injected `LidResolver` (the worker backs it with the session's store)
  and an unresolved LID is reported as `Unresolved`, never as a number. Groups, broadcasts
  and newsletters are `NotAPhone`.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import Annotated, Final, Protocol

from pydantic import BeforeValidator

PHONE_PATTERN: Final = r"^[1-9][0-9]{7,14}$"
"""Digits-only E.164 (also used by the CRD and the SQL CHECKs)."""

_PHONE = re.compile(PHONE_PATTERN, re.ASCII)
_DECORATION = re.compile(r"[\s().\-]+")
_JID = re.compile(r"(?P<user>[^@:.]*)(?:\.(?P<agent>[0-9]+))?(?::(?P<device>[0-9]+))?"
                  r"@(?P<server>[a-z.]+)", re.ASCII)


class InvalidPhone(ValueError):
    """The value is not a phone number."""

    def __init__(self, value: object, why: str) -> None:
        self.value = value
        self.why = why
        super().__init__(f"invalid phone number {value!r}: {why}; expected E.164 digits "
                         f"like '+7 968 648-44-88' or '79686484488' (8-15 digits)")


class InvalidJid(ValueError):
    """The value is not a WhatsApp JID (or not the kind of JID required)."""

    def __init__(self, value: object, why: str) -> None:
        self.value = value
        self.why = why
        super().__init__(f"invalid JID {value!r}: {why}")


def parse_phone(value: str) -> str:
    """Digits-only E.164 from human input (`+`, spaces, dashes, dots, brackets allowed)."""
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
            return Resolved(parse_phone(parsed.user))
        except InvalidPhone as exc:
            return NotAPhone(jid=str(parsed), kind=parsed.kind, reason=exc.why)
    if parsed.kind is JidKind.LID:
        found = await resolver.phone_for_lid(parsed.user)
        if found is None:
            return Unresolved(lid=parsed.bare)
        try:
            return Resolved(parse_phone(found), via_lid=parsed.bare)
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
    return parse_phone(parsed.user)


Phone = Annotated[str, BeforeValidator(parse_phone)]
"""A pydantic field type: accepts human input, stores digits-only E.164."""
