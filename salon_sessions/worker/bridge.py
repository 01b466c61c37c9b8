"""The message bridge between a session and the bot: inbound messages into a Redis Stream.

Every message WhatsApp delivers goes to `whatsapp:messages:in:<company_id>` (one stream per
company, so a session's Redis user appends to its own only, and a bot can shard by company)
with the canonical company id, the sender's phone (a LID resolved through the session's
store; an unresolved LID is marked so, never shown as a number), WhatsApp's message id
(stable: the consumer's dedup key) and `delivered_late` for messages WhatsApp held while the
session was offline and delivered on reconnect.

Stored, then acknowledged: `inbound` returns only once the entry is in Redis (a Redis outage
is retried for `STORE_TIMEOUT_S`) and raises `MessageNotStored` otherwise, so the driver does
not acknowledge the message to WhatsApp, which delivers it again. The redelivery marker and
the entry are written in one transaction (WATCH/MULTI on the marker): a crash can neither
leave a marker without its entry (the message would be dropped as a redelivery) nor store a
message twice. The promise to the bot: at least once, in WhatsApp's delivery order, each
entry once per message id within the marker's 7 days (docs/BOT.md).

Outbound commands are `worker.outbound`'s; retention of the streams `worker.stream_retention`'s.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime, timedelta
from functools import partial

from redis.asyncio import Redis
from redis.exceptions import ResponseError, WatchError

from salon_sessions.core import channels
from salon_sessions.core.messages import InboundEntry
from salon_sessions.core.phone import NotAPhone, Resolved, Unresolved, phone_of
from salon_sessions.core.redis_client import REDIS_ERRORS
from salon_sessions.worker.driver import Driver, InboundMessage, MessageNotStored
from salon_sessions.worker.metrics import WorkerMetrics

log = logging.getLogger(__name__)
SEEN_TTL_S = 7 * 24 * 3600
"""How long a stored message id is remembered (WhatsApp redelivers within hours at most)."""
STORE_TIMEOUT_S = 30.0
LATE_MARGIN = timedelta(seconds=2)
"""WhatsApp's timestamps have whole seconds: a message is `delivered_late` only if it was
sent this long before the connection opened."""


class InboundWriter:
    """Writes one session's inbound messages to its stream (the lock holder only)."""

    def __init__(self, redis: Redis, company_id: str, metrics: WorkerMetrics,
                 store_timeout_s: float = STORE_TIMEOUT_S) -> None:
        self._redis = redis
        self._company = company_id
        self._metrics = metrics
        self._store_timeout_s = store_timeout_s
        self._stream = channels.inbound_stream(company_id)
        self.connected_since: datetime | None = None
        """When the current connection opened (set by the worker on `Connected`)."""

    async def inbound(self, msg: InboundMessage, driver: Driver) -> None:
        fields = await self._fields(msg, driver)
        deadline = time.monotonic() + self._store_timeout_s
        delay = 0.2
        while True:
            try:
                if await self._store(msg.message_id, fields):
                    self._metrics.inbound.labels(fields["sender_kind"]).inc()
                return
            except REDIS_ERRORS as exc:
                if time.monotonic() + delay > deadline:
                    self._metrics.inbound_not_stored.inc()
                    log.error("inbound message %s not stored (%s): left for WhatsApp to "
                              "deliver again", msg.message_id, type(exc).__name__,
                              extra={"company_id": self._company})
                    raise MessageNotStored(msg.message_id) from exc
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    async def _store(self, message_id: str, fields: dict[str, str]) -> bool:
        """The entry and its redelivery marker in one transaction; False: already stored."""
        seen = channels.inbound_seen_key(self._company, message_id)
        phone = fields["sender_phone"]
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                while True:
                    try:
                        await pipe.watch(seen)
                        if await pipe.get(seen) is not None:
                            await pipe.unwatch()  # type: ignore[no-untyped-call]
                            return False  # WhatsApp redelivered a message we already stored
                        pipe.multi()  # type: ignore[no-untyped-call]
                        pipe.set(seen, "1", ex=SEEN_TTL_S)
                        pipe.xadd(self._stream, fields)  # type: ignore[arg-type]
                        if phone:
                            pipe.sadd(channels.contacts_key(self._company), phone)
                        await pipe.execute()
                        return True
                    except WatchError:
                        continue  # the marker changed meanwhile: look again
        except ResponseError:
            # EXEC ran, but a command in it failed (Redis does not roll back): the marker
            # may stand without its entry, which would drop the redelivery. Deleted after
            # the pipeline gave its connection back (the worker may have only one).
            await self._redis.delete(seen)
            raise

    async def _fields(self, msg: InboundMessage, driver: Driver) -> dict[str, str]:
        now = datetime.now(UTC)
        sent_at = msg.timestamp or now
        since = self.connected_since
        # the driver's word (neonize: between OfflineSyncPreview and -Completed, which may
        # come before `Connected`), else sent well before this connection opened
        late = msg.extra.get("offline") == "true" or (
            since is not None and sent_at < since - LATE_MARGIN)
        sender = await phone_of(msg.sender_jid, driver.lid_resolver)
        if isinstance(sender, Unresolved) and msg.sender_alt_jid:
            alt = await phone_of(msg.sender_alt_jid, driver.lid_resolver)
            if isinstance(alt, Resolved):
                sender = Resolved(alt.phone, via_lid=sender.lid)
        entry = partial(InboundEntry, self._company, msg.message_id, msg.chat_jid, msg.text,
                        msg.from_me, sent_at, now, late)
        match sender:
            case Resolved(phone=phone, via_lid=lid):
                return entry("phone", phone, sender_lid=lid or "").to_fields()
            case Unresolved(lid=lid):
                return entry("unresolved_lid", sender_lid=lid).to_fields()
            case NotAPhone(jid=jid, kind=kind):
                return entry(kind.value, sender_jid=jid).to_fields()
