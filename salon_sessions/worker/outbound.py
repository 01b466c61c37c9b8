"""Outbound: the bot's send commands, sent once each, paced, and answered on a results stream.

Commands are read from `whatsapp:messages:out:<company_id>` with the consumer group
`workers` and acknowledged only once they have a final result on
`whatsapp:messages:results:<company_id>`: a command stays pending in the group while the
session is not connected, while it waits for its pacing slot and after a crash, so none is
lost; a restarted worker first re-reads its own pending entries and claims idle ones.

A command is never sent twice: its idempotency key is marked `sending` (SET NX) just before
the send and `sent:<message id>` after it. A command whose key is already marked is not sent
again: `duplicate` (with the first send's message id), or `unknown` if a worker died
between marking and confirming (it may or may not have gone out; never resent).

Reads do not block (`XREADGROUP` without `BLOCK`): a blocked read would hold the worker's one
command connection. The stream is polled every `send_poll_s` while the session is active (a
command or an inbound message in the last minute; an inbound message wakes the loop at once)
and every `send_idle_poll_s` otherwise: a salon's first message after a quiet spell waits up
to that long, which the pacing's own jitter and typing delay (seconds) dwarf.

Pacing (`worker.pacing`): each send waits for its slot; a wait of a second or more is
announced as a `delayed` result with `expected_at` (not final: `sent` or another final
status follows). When WhatsApp refuses a send as rate-limited or restricted, the breaker
stops all sending until the restriction ends and the worker reports `sending_paused` (the
operator turns it into a Warning Event); the refused command is sent again afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from salon_sessions.core import channels
from salon_sessions.core.events import SENDING_PAUSED, ErrorData
from salon_sessions.core.messages import (
    CommandRejected,
    SendResult,
    SendText,
    parse_send_command,
)
from salon_sessions.core.phone import user_jid
from salon_sessions.core.publisher import RETRYABLE
from salon_sessions.core.redis_client import as_text
from salon_sessions.worker.driver import NOT_CONNECTED, SEND_RESTRICTIONS, Driver, DriverError
from salon_sessions.worker.metrics import WorkerMetrics
from salon_sessions.worker.pacing import DelayReason, Pacer, typing_seconds

log = logging.getLogger(__name__)
MARKER_TTL_S = 7 * 24 * 3600
CLAIM_IDLE_MS = 60_000
DELAY_NOTICE_S = 1.0
"""A send held back at least this long gets a `delayed` result first."""

ACTIVE_WINDOW_S = 60.0
"""After a command or an inbound message, commands are looked for every `poll_s` for this
long; otherwise every `idle_poll_s` (an idle session's reads are most of its Redis load)."""

ErrorReporter = Callable[[ErrorData], Awaitable[None]]


class OutboundSender:
    """Sends one session's commands while it is connected (one task per lock holder)."""

    def __init__(self, redis: Redis, company_id: str, consumer: str, metrics: WorkerMetrics,
                 report_error: ErrorReporter, pacer: Pacer, *, typing_max_s: float = 0.0,
                 poll_s: float = 0.5, idle_poll_s: float = 2.0) -> None:
        self._redis = redis
        self._company = company_id
        self._consumer = consumer
        self._metrics = metrics
        self._report_error = report_error
        self._pacer = pacer
        self._typing_max_s = typing_max_s
        self._poll_s = poll_s
        self._idle_poll_s = max(idle_poll_s, poll_s)
        self._active_until = 0.0
        self._wake = asyncio.Event()
        self._stream = channels.outbound_stream(company_id)
        self._noticed: dict[str, tuple[DelayReason, int]] = {}

    async def ensure_group(self) -> None:
        try:
            await self._redis.xgroup_create(self._stream, channels.OUTBOUND_GROUP, id="0",
                                            mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def run(self, driver: Driver, connected: asyncio.Event) -> None:
        """Forever: send the session's commands while it is connected."""
        own_pending = True
        group_ready = False
        while True:
            await connected.wait()
            try:
                if not group_ready:  # once, and again after an error (Redis may be new)
                    await self.ensure_group()
                    group_ready = True
                if own_pending:
                    entries = await self._read("0")
                    if not entries:
                        own_pending = False
                        await self._pacer.load()
                        await self._claim_idle(driver, connected)
                        continue
                else:
                    entries = await self._read(">")
                    if not entries:
                        await self._until_next_poll()
                        continue
                self._active_until = time.monotonic() + ACTIVE_WINDOW_S
                await self._pacer.load()
                for entry_id, fields in entries:
                    if not connected.is_set() or not await self.handle(entry_id, fields,
                                                                        driver, connected):
                        own_pending = True  # left pending: re-read once connected again
                        await asyncio.sleep(0.5)
                        break
            except RETRYABLE as exc:
                log.warning("outbound: Redis unavailable (%s); retrying", type(exc).__name__,
                            extra={"company_id": self._company})
                own_pending, group_ready = True, False
                await asyncio.sleep(1)
            except ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    raise
                own_pending, group_ready = True, False  # the stream was deleted meanwhile

    def nudge(self) -> None:
        """Something happened (a message came in: its bot is likely to answer): look for
        commands now and every `poll_s` for the next `ACTIVE_WINDOW_S`."""
        self._active_until = time.monotonic() + ACTIVE_WINDOW_S
        self._wake.set()

    async def _until_next_poll(self) -> None:
        active = time.monotonic() < self._active_until
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(),
                                   self._poll_s if active else self._idle_poll_s)

    async def _read(self, start: str) -> list[tuple[str, dict[bytes, bytes]]]:
        """Without BLOCK: a blocked read would hold the worker's one command connection
        (`redis_command_connections`) and delay pongs and state writes behind it."""
        resp: Any = await self._redis.xreadgroup(
            channels.OUTBOUND_GROUP, self._consumer, {self._stream: start}, count=20)
        if not resp:
            return []
        return [(as_text(i), f) for i, f in resp[0][1] if f]

    async def _claim_idle(self, driver: Driver, connected: asyncio.Event) -> None:
        """Take over commands another (dead) consumer read but never acknowledged."""
        resp: Any = await self._redis.xautoclaim(self._stream, channels.OUTBOUND_GROUP,
                                                 self._consumer, min_idle_time=CLAIM_IDLE_MS,
                                                 start_id="0", count=50)
        for entry_id, fields in resp[1]:
            if fields and connected.is_set():
                await self.handle(as_text(entry_id), fields, driver, connected)

    async def handle(self, entry_id: str, fields: dict[bytes, bytes], driver: Driver,
                     connected: asyncio.Event) -> bool:
        """Process one command; False when it was left pending (session not connected)."""
        try:
            cmd = parse_send_command(fields, self._company)
        except CommandRejected as exc:
            self._metrics.rejected.labels("outbound", exc.reason).inc()
            await self._result(entry_id, exc.key, "rejected", error=f"{exc.reason}: {exc.detail}")
            await self._report_error(ErrorData(code="bad_command",
                                               message=f"outbound {entry_id}: {exc.detail}"))
            await self._ack(entry_id)
            return True
        marker = channels.sent_marker_key(self._company, cmd.idempotency_key)
        if await self._redis.get(marker) is not None:
            await self._already_taken(entry_id, cmd, marker)
            return True
        contacts = channels.contacts_key(self._company)
        new_contact = not await self._redis.sismember(contacts, cmd.to)
        to_jid = user_jid(cmd.to)
        while True:
            if not await self._wait_for_slot(entry_id, cmd, new_contact, connected):
                return False
            await self._typing(driver, to_jid, cmd.text, connected)
            if not await self._redis.set(marker, "sending", nx=True, ex=MARKER_TTL_S):
                await self._already_taken(entry_id, cmd, marker)
                return True
            await self._pacer.take(time.time(), new_contact=new_contact)
            try:
                message_id = await driver.send_text(to_jid, cmd.text)
            except DriverError as exc:
                await self._redis.delete(marker)  # refused, so not sent: may go again
                if exc.code == NOT_CONNECTED:
                    return False
                if exc.code in SEND_RESTRICTIONS:
                    await self._trip(exc)
                    continue
                await self._redis.set(marker, f"failed:{exc.code}", ex=MARKER_TTL_S)
                await self._result(entry_id, cmd.idempotency_key, "failed", error=str(exc))
                await self._ack(entry_id)
                return True
            break
        # one transaction: a crash cannot leave the key marked sent without its result
        self._metrics.outbound.labels("sent").inc()
        self._noticed.pop(entry_id, None)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.set(marker, f"sent:{message_id}", ex=MARKER_TTL_S)
            pipe.sadd(contacts, cmd.to)
            pipe.xadd(channels.results_stream(self._company), self._result_fields(
                entry_id, cmd.idempotency_key, "sent", message_id=message_id))
            pipe.xack(self._stream, channels.OUTBOUND_GROUP, entry_id)
            await pipe.execute()
        return True

    async def _wait_for_slot(self, entry_id: str, cmd: SendText, new_contact: bool,
                             connected: asyncio.Event) -> bool:
        """Wait until the pacer lets this command go (its slot plus the jitter, fixed once:
        this task is the session's only sender, so nothing moves the slot meanwhile);
        False if the session disconnected."""
        now = time.time()
        slot = self._pacer.slot(now, new_contact=new_contact)
        self._metrics.sending_paused.set(int(self._pacer.paused(now)))
        at = slot.at + self._pacer.jitter()
        if at > now and slot.reason is not None and at - now >= DELAY_NOTICE_S:
            await self._notice_delay(entry_id, cmd, slot.reason, at)
        while (now := time.time()) < at:
            if not connected.is_set():
                return False
            await asyncio.sleep(min(at - now, 1.0))
        self._noticed.pop(entry_id, None)
        self._metrics.sending_paused.set(0)
        return True

    async def _notice_delay(self, entry_id: str, cmd: SendText, reason: DelayReason,
                            at: float) -> None:
        """One `delayed` result per command and reason (again only if the time moved)."""
        previous = self._noticed.get(entry_id)
        if previous is not None and previous[0] is reason and abs(previous[1] - at) < 5:
            return
        self._noticed[entry_id] = (reason, int(at))
        self._metrics.outbound_delayed.labels(reason.value).inc()
        expected = datetime.fromtimestamp(at, UTC).isoformat()
        await self._result(entry_id, cmd.idempotency_key, "delayed", reason=reason.value,
                           expected_at=expected)

    async def _typing(self, driver: Driver, to_jid: str, text: str,
                      connected: asyncio.Event) -> None:
        seconds = typing_seconds(text, self._typing_max_s) if self._pacer.policy.enabled else 0
        if seconds <= 0 or not connected.is_set():
            return
        await driver.send_presence(to_jid, True)
        await asyncio.sleep(seconds)

    async def _trip(self, exc: DriverError) -> None:
        until = await self._pacer.pause(time.time(), exc.code, exc.retry_after_s)
        self._metrics.sending_paused.set(1)
        when = datetime.fromtimestamp(until, UTC)
        log.error("WhatsApp refused a send (%s): sending paused until %s", exc.code,
                  when.isoformat(), extra={"company_id": self._company})
        await self._report_error(ErrorData(
            code=SENDING_PAUSED, reason=exc.code, retry_at=when, will_retry=True,
            message=f"WhatsApp refused a send ({exc.code}); no message is sent until "
                    f"{when.isoformat(timespec='seconds')}, commands wait"))

    async def _already_taken(self, entry_id: str, cmd: SendText, marker: str) -> None:
        previous = as_text(await self._redis.get(marker) or b"")
        if previous.startswith("sent:"):
            await self._result(entry_id, cmd.idempotency_key, "duplicate",
                               message_id=previous[5:])
        elif previous.startswith("failed:"):
            await self._result(entry_id, cmd.idempotency_key, "failed",
                               error=f"an earlier command with this key failed "
                                     f"({previous[7:]}); send again with a new key")
        else:
            await self._result(entry_id, cmd.idempotency_key, "unknown",
                               error="a previous attempt may have sent it; not resent")
        await self._ack(entry_id)

    async def _result(self, entry_id: str, key: str, status: str, *, message_id: str = "",
                      error: str = "", reason: str = "", expected_at: str = "") -> None:
        if status != "delayed":
            self._metrics.outbound.labels(status).inc()
        await self._redis.xadd(channels.results_stream(self._company), self._result_fields(
            entry_id, key, status, message_id=message_id, error=error, reason=reason,
            expected_at=expected_at))

    def _result_fields(self, entry_id: str, key: str, status: str, *, message_id: str = "",
                       error: str = "", reason: str = "", expected_at: str = ""
                       ) -> dict[Any, Any]:
        return SendResult(self._company, entry_id, key, status, message_id=message_id,
                          error=error, reason=reason, expected_at=expected_at).to_fields()

    async def _ack(self, entry_id: str) -> None:
        self._noticed.pop(entry_id, None)
        try:
            await self._redis.xack(self._stream, channels.OUTBOUND_GROUP, entry_id)
        except RedisError:
            log.warning("could not ack %s; it will be seen again and recognised as sent",
                        entry_id, extra={"company_id": self._company})
