"""The message bridge between a session and the bot, through Redis Streams.

Inbound: every message WhatsApp delivers goes to `whatsapp:messages:in:<company_id>` (one
stream per company, so a session's Redis user appends to its own only) with the canonical
company id, the sender's phone (a LID resolved through the session's store; an unresolved
LID is marked so, never shown as a number) and the message id; redeliveries are dropped.

Outbound: send commands are read from `whatsapp:messages:out:<company_id>` with a consumer
group, sent through the driver, acknowledged, and answered on
`whatsapp:messages:results:<company_id>`.
A command is never sent twice: before sending, its idempotency key is marked `sending`
(SET NX); afterwards `sent:<message id>`. A command whose key is already marked is not sent
again (`duplicate`, or `unknown` if a worker died between marking and confirming). Commands
stay pending in the group while the session is not connected and after a crash, so none is
lost: a restarted worker first re-reads its own pending entries and claims idle ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from salon_sessions.core import channels
from salon_sessions.core.company import CompanyId
from salon_sessions.core.phone import NotAPhone, Phone, Resolved, Unresolved, phone_of
from salon_sessions.core.publisher import RETRYABLE
from salon_sessions.worker.driver import Driver, DriverError, InboundMessage
from salon_sessions.worker.metrics import WorkerMetrics

log = logging.getLogger(__name__)
MAX_COMMAND_BYTES = 64 * 1024
MAX_TEXT = 4096
MARKER_TTL_S = 7 * 24 * 3600
INBOUND_MAXLEN = 100_000
CLAIM_IDLE_MS = 60_000

IdempotencyKey = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:-]{1,128}$")]


class SendText(BaseModel):
    """An outbound command: `{"v": 1, "type": "send_text", "company_id": ..., ...}`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    v: Literal[1]
    type: Literal["send_text"]
    company_id: CompanyId
    idempotency_key: IdempotencyKey
    to: Phone
    text: str = Field(min_length=1, max_length=MAX_TEXT)


class Rejected(Exception):
    def __init__(self, reason: str, detail: str, key: str = "") -> None:
        self.reason, self.detail, self.key = reason, detail, key
        super().__init__(f"{reason}: {detail}")


ErrorReporter = Callable[[str, str], Awaitable[None]]


class MessageBridge:
    def __init__(self, redis: Redis, company_id: str, consumer: str, metrics: WorkerMetrics,
                 report_error: ErrorReporter) -> None:
        self._redis = redis
        self._company = company_id
        self._consumer = consumer
        self._metrics = metrics
        self._report_error = report_error
        self._stream = channels.outbound_stream(company_id)

    # ---- inbound --------------------------------------------------------------------
    async def inbound(self, msg: InboundMessage, driver: Driver) -> None:
        seen = channels.inbound_seen_key(self._company, msg.message_id)
        fields: dict[str, str] = {
            "v": "1", "company_id": self._company, "message_id": msg.message_id,
            "chat": msg.chat_jid, "text": msg.text, "from_me": str(msg.from_me).lower(),
            "ts": (msg.timestamp or datetime.now(UTC)).isoformat(),
        }
        sender = await phone_of(msg.sender_jid, driver.lid_resolver)
        if isinstance(sender, Unresolved) and msg.sender_alt_jid:
            alt = await phone_of(msg.sender_alt_jid, driver.lid_resolver)
            if isinstance(alt, Resolved):
                sender = Resolved(alt.phone, via_lid=sender.lid)
        match sender:
            case Resolved(phone=phone, via_lid=lid):
                fields |= {"sender_phone": phone, "sender_kind": "phone",
                           "sender_lid": lid or ""}
            case Unresolved(lid=lid):
                fields |= {"sender_phone": "", "sender_kind": "unresolved_lid",
                           "sender_lid": lid}
            case NotAPhone(jid=jid, kind=kind):
                fields |= {"sender_phone": "", "sender_kind": kind.value, "sender_jid": jid}
        for attempt in range(1, 6):
            try:
                if not await self._redis.set(seen, "1", nx=True, ex=86400):
                    return  # WhatsApp redelivered a message we already passed on
                try:
                    await self._redis.xadd(channels.inbound_stream(self._company),
                                           fields,  # type: ignore[arg-type]
                                           maxlen=INBOUND_MAXLEN, approximate=True)
                except RETRYABLE:
                    with contextlib.suppress(RedisError, *RETRYABLE):
                        await self._redis.delete(seen)
                    raise
                self._metrics.inbound.labels(fields["sender_kind"]).inc()
                return
            except RETRYABLE:
                await asyncio.sleep(0.2 * 2 ** attempt)
        log.error("inbound message %s could not be written to the stream", msg.message_id,
                  extra={"company_id": self._company})

    # ---- outbound -------------------------------------------------------------------
    async def ensure_group(self) -> None:
        try:
            await self._redis.xgroup_create(self._stream, channels.OUTBOUND_GROUP, id="0",
                                            mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def run_outbound(self, driver: Driver, connected: asyncio.Event) -> None:
        """Forever: send the session's commands while it is connected."""
        own_pending = True
        while True:
            await connected.wait()
            try:
                await self.ensure_group()
                if own_pending:
                    entries = await self._read("0")
                    if not entries:
                        own_pending = False
                        await self._claim_idle(driver, connected)
                        continue
                else:
                    entries = await self._read(">", block_ms=1000)
                for entry_id, fields in entries:
                    if not connected.is_set() or not await self._handle(entry_id, fields,
                                                                         driver):
                        own_pending = True  # left pending: re-read once connected again
                        await asyncio.sleep(0.5)
                        break
            except RETRYABLE as exc:
                log.warning("outbound: Redis unavailable (%s); retrying", type(exc).__name__,
                            extra={"company_id": self._company})
                own_pending = True
                await asyncio.sleep(1)

    async def _read(self, start: str,
                    block_ms: int | None = None) -> list[tuple[str, dict[bytes, bytes]]]:
        resp: Any = await self._redis.xreadgroup(
            channels.OUTBOUND_GROUP, self._consumer, {self._stream: start}, count=20,
            block=block_ms)
        if not resp:
            return []
        return [(_text(i), f) for i, f in resp[0][1] if f]

    async def _claim_idle(self, driver: Driver, connected: asyncio.Event) -> None:
        """Take over commands another (dead) consumer read but never acknowledged."""
        resp: Any = await self._redis.xautoclaim(self._stream, channels.OUTBOUND_GROUP,
                                            self._consumer, min_idle_time=CLAIM_IDLE_MS,
                                            start_id="0", count=50)
        for entry_id, fields in resp[1]:
            if fields and connected.is_set():
                await self._handle(_text(entry_id), fields, driver)

    async def _handle(self, entry_id: str, fields: dict[bytes, bytes], driver: Driver) -> bool:
        """Process one command; False when it was left pending (session not connected)."""
        try:
            cmd = self._parse(fields)
        except Rejected as exc:
            self._metrics.rejected.labels("outbound", exc.reason).inc()
            await self._result(entry_id, exc.key, "rejected", error=f"{exc.reason}: {exc.detail}")
            await self._report_error("bad_command", f"outbound {entry_id}: {exc.detail}")
            await self._ack(entry_id)
            return True
        marker = channels.sent_marker_key(self._company, cmd.idempotency_key)
        if not await self._redis.set(marker, "sending", nx=True, ex=MARKER_TTL_S):
            previous = _text(await self._redis.get(marker) or b"")
            if previous.startswith("sent:"):
                await self._result(entry_id, cmd.idempotency_key, "duplicate",
                                   message_id=previous[5:])
            else:
                await self._result(entry_id, cmd.idempotency_key, "unknown",
                                   error="a previous attempt may have sent it; not resent")
            await self._ack(entry_id)
            return True
        try:
            message_id = await driver.send_text(f"{cmd.to}@s.whatsapp.net", cmd.text)
        except DriverError as exc:
            if exc.code == "not_connected":
                await self._redis.delete(marker)  # not sent: retry when connected
                return False
            await self._redis.set(marker, f"failed:{exc.code}", ex=MARKER_TTL_S)
            await self._result(entry_id, cmd.idempotency_key, "failed", error=str(exc))
            await self._ack(entry_id)
            return True
        await self._redis.set(marker, f"sent:{message_id}", ex=MARKER_TTL_S)
        await self._result(entry_id, cmd.idempotency_key, "sent", message_id=message_id)
        await self._ack(entry_id)
        return True

    def _parse(self, fields: dict[bytes, bytes]) -> SendText:
        raw = fields.get(b"payload")
        if raw is None:
            raise Rejected("malformed", "the entry has no 'payload' field")
        if len(raw) > MAX_COMMAND_BYTES:
            raise Rejected("oversized", f"{len(raw)} bytes, limit {MAX_COMMAND_BYTES}")
        try:
            obj: Any = json.loads(raw)
        except ValueError:
            raise Rejected("malformed", "payload is not JSON") from None
        key = str(obj.get("idempotency_key", ""))[:128] if isinstance(obj, dict) else ""
        if not isinstance(obj, dict) or obj.get("type") != "send_text":
            kind = obj.get("type") if isinstance(obj, dict) else None
            raise Rejected("unknown_type", f"type {str(kind)[:40]!r} is not 'send_text'", key)
        try:
            cmd = SendText.model_validate(obj)
        except ValidationError as exc:
            where = ", ".join(".".join(str(p) for p in e["loc"]) for e in exc.errors()[:5])
            raise Rejected("invalid", f"invalid fields: {where}", key) from None
        if cmd.company_id != self._company:
            raise Rejected("wrong_company", "the command is for another company", key)
        return cmd

    async def _result(self, entry_id: str, key: str, status: str, *, message_id: str = "",
                      error: str = "") -> None:
        self._metrics.outbound.labels(status).inc()
        await self._redis.xadd(channels.results_stream(self._company), {
            "v": "1", "company_id": self._company, "command_id": entry_id,
            "idempotency_key": key, "status": status, "message_id": message_id,
            "error": error[:1024], "ts": datetime.now(UTC).isoformat(),
        }, maxlen=INBOUND_MAXLEN, approximate=True)

    async def _ack(self, entry_id: str) -> None:
        try:
            await self._redis.xack(self._stream, channels.OUTBOUND_GROUP, entry_id)
        except RedisError:
            log.warning("could not ack %s; it will be seen again and recognised as sent",
                        entry_id, extra={"company_id": self._company})


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
