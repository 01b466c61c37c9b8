"""Inbound messages through neonize's event thread: stored before the thread goes on.

No stack: the Go thread is played by a Python thread calling `GoAttempt._on_event` with
neonize's own serialized `Message` events (as Go's `CallbackFunction` does), and the
driver's sink is the test's. The senders are phone JIDs, so nothing reads the store.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from salon_sessions.worker.driver import (
    DriverFact,
    InboundMessage,
    MessageNotStored,
)
from salon_sessions.worker.neonize.driver import NeonizeDriver
from salon_sessions.worker.neonize.go import (
    EV_DISCONNECTED,
    EV_MESSAGE,
    EV_OFFLINE_SYNC_COMPLETED,
    EV_OFFLINE_SYNC_PREVIEW,
    GoAttempt,
    GoOps,
    PendingMessage,
    load_neonize,
)
from tests.helpers import wait_for

NZ = load_neonize()
COMPANY = "company_962302"
PHONE = "79686484488"
NOWHERE = "postgresql://u:p@127.0.0.1:1/db"
"""Never connected to: phone-JID senders need no LID lookup."""


def _jid(user: str = "", server: str = "", device: int = 0) -> Any:
    return NZ.proto.JID(User=user, Server=server, Device=device, RawAgent=0, Integrator=0,
                        IsEmpty=not server)


def message_event(message_id: str, text: str = "hello") -> bytes:
    """A complete neonize `Message` event, serialized as Go sends it."""
    sender = _jid(PHONE, "s.whatsapp.net", 7)
    source = NZ.proto.MessageSource(
        Chat=_jid(PHONE, "s.whatsapp.net"), Sender=sender, IsFromMe=False, IsGroup=False,
        SenderAlt=_jid(), RecipientAlt=_jid(), BroadcastListOwner=_jid())
    info = NZ.proto.MessageInfo(
        MessageSource=source, ID=message_id, ServerID=0, Type="text", Pushname="Anna",
        Timestamp=1_764_000_000_123, Category="", Multicast=False, MediaType="", Edit="")
    event = NZ.proto.Message(
        Info=info, Message=NZ.e2e.Message(conversation=text), IsEphemeral=False,
        IsViewOnce=False, IsViewOnceV2=False, IsViewOnceV2Extension=False,
        IsDocumentWithCaption=False, IsLottieSticker=False, IsEdit=False,
        UnavailableRequestID="", RetryCount=0)
    return bytes(event.SerializeToString())


def offline_preview(messages: int) -> bytes:
    return bytes(NZ.proto.OfflineSyncPreview(Total=messages, AppDataChanges=0,
                                             Message=messages, Notifications=0,
                                             Receipts=0).SerializeToString())


def offline_completed(count: int) -> bytes:
    return bytes(NZ.proto.OfflineSyncCompleted(Count=count).SerializeToString())


def disconnected() -> bytes:
    return bytes(NZ.proto.Disconnected(status=True).SerializeToString())


def go_event(attempt: GoAttempt, code: int, payload: bytes) -> None:
    """What neonize's `CallbackFunction` does: call the event callback with the bytes."""
    buffer = ctypes.create_string_buffer(payload, len(payload))
    attempt._on_event(None, ctypes.addressof(buffer), len(payload), code)


def new_attempt(post: Callable[[GoAttempt, str, Any], None], *,
                message_wait_s: float = 60.0) -> GoAttempt:
    return GoAttempt(company_id=COMPANY, database_url=NOWHERE, jid=None, proxy_url=None,
                     post=post, log=logging.LoggerAdapter(logging.getLogger("test"), {}),
                     scrub=lambda text: text,
                     ops=GoOps(stop=lambda _uuid: None, disconnect=lambda _uuid: None),
                     message_wait_s=message_wait_s)


def capturing(nd: NeonizeDriver,
              into: list[PendingMessage]) -> Callable[[GoAttempt, str, Any], None]:
    """The driver's `_post`, keeping the messages it is handed (to read how they settle)."""
    def post(attempt: GoAttempt, kind: str, payload: Any) -> None:
        if isinstance(payload, PendingMessage):
            into.append(payload)
        nd._inbox.post(attempt, kind, payload)
    return post


def go_thread(target: Callable[[], None]) -> threading.Thread:
    thread = threading.Thread(target=target, name="test-go-callbacks", daemon=True)
    thread.start()
    return thread


class Sink:
    """Records what the driver reports; stores messages only when allowed to."""

    def __init__(self) -> None:
        self.events: list[DriverFact] = []
        self.steps: list[str] = []
        self.lock = threading.Lock()
        self.release = asyncio.Event()
        self.release.set()
        self.refuse: set[str] = set()

    async def __call__(self, event: DriverFact) -> None:
        if isinstance(event, InboundMessage):
            self.note(f"sink got {event.message_id}")
            await self.release.wait()
            if event.message_id in self.refuse:
                raise MessageNotStored("Redis unreachable")
            self.note(f"stored {event.message_id}")
        self.events.append(event)

    def note(self, step: str) -> None:
        with self.lock:
            self.steps.append(step)

    def messages(self) -> list[InboundMessage]:
        return [e for e in self.events if isinstance(e, InboundMessage)]


@pytest.fixture
async def driver() -> AsyncIterator[tuple[NeonizeDriver, Sink]]:
    sink = Sink()
    driver = NeonizeDriver(NOWHERE, COMPANY)
    driver.attach(sink)
    await asyncio.sleep(0)  # the consumer task binds the loop
    yield driver, sink
    await driver.close()


async def test_the_go_thread_goes_on_only_once_the_message_is_stored(
        driver: tuple[NeonizeDriver, Sink]) -> None:
    """neonize's event goroutine is held until the sink has stored the message: with it,
    neonize's channel, so whatsmeow does not acknowledge an unbounded backlog."""
    nd, sink = driver
    attempt = new_attempt(nd._inbox.post)
    nd._supervisor.attempt = attempt
    sink.release.clear()

    def deliver() -> None:
        go_event(attempt, EV_MESSAGE, message_event("3EB0AAA1", "a haircut tomorrow?"))
        sink.note("go thread went on")

    thread = go_thread(deliver)
    await wait_for(lambda: "sink got 3EB0AAA1" in sink.steps, what="the sink call")
    await asyncio.sleep(0.3)
    assert thread.is_alive(), "the Go thread went on before the message was stored"
    sink.release.set()
    await wait_for(lambda: not thread.is_alive(), what="the Go thread")
    assert sink.steps == ["sink got 3EB0AAA1", "stored 3EB0AAA1", "go thread went on"]
    (message,) = sink.messages()
    assert (message.message_id, message.text, message.sender_jid) == (
        "3EB0AAA1", "a haircut tomorrow?", f"{PHONE}:7@s.whatsapp.net")
    assert "offline" not in message.extra
    nd._supervisor.attempt = None


async def test_a_message_the_sink_cannot_store_releases_the_go_thread(
        driver: tuple[NeonizeDriver, Sink], caplog: pytest.LogCaptureFixture) -> None:
    nd, sink = driver
    pending: list[PendingMessage] = []
    attempt = new_attempt(capturing(nd, pending))
    nd._supervisor.attempt = attempt
    sink.refuse = {"3EB0BAD"}
    thread = go_thread(lambda: (go_event(attempt, EV_MESSAGE, message_event("3EB0BAD")),
                                go_event(attempt, EV_MESSAGE, message_event("3EB0GOOD"))))
    await wait_for(lambda: not thread.is_alive(), what="the Go thread")
    assert [p.stored.result(timeout=1) for p in pending] == [False, True]
    assert [m.message_id for m in sink.messages()] == ["3EB0GOOD"]
    assert any("3EB0BAD was not stored" in r.getMessage() for r in caplog.records)
    nd._supervisor.attempt = None


def test_the_wait_is_bounded_and_a_stop_ends_it() -> None:
    """A driver that never settles (a stuck sink) costs the Go thread `message_wait_s`,
    then it takes the next event; a stop requested meanwhile releases it at once, so that
    `Neonize()` can return (the next client waits for that)."""
    posted: list[tuple[str, Any]] = []
    bounded = new_attempt(lambda _a, kind, payload: posted.append((kind, payload)),
                          message_wait_s=0.2)
    thread = go_thread(lambda: go_event(bounded, EV_MESSAGE, message_event("3EB0SLOW")))
    thread.join(timeout=10)
    assert not thread.is_alive()
    assert [kind for kind, _ in posted] == ["message"]

    held = new_attempt(lambda _a, kind, payload: posted.append((kind, payload)),
                       message_wait_s=3600)
    thread = go_thread(lambda: go_event(held, EV_MESSAGE, message_event("3EB0HELD")))
    thread.join(timeout=0.3)
    assert thread.is_alive()
    held.request_stop()
    thread.join(timeout=10)
    assert not thread.is_alive(), "a stop did not release the Go thread"
    go_event(held, EV_MESSAGE, message_event("3EB0LATE"))  # stopping: no wait at all
    assert [kind for kind, _ in posted] == ["message"] * 3


async def test_messages_from_the_offline_queue_are_marked(
        driver: tuple[NeonizeDriver, Sink]) -> None:
    """whatsmeow's `MessageInfo` has no offline flag; WhatsApp announces its offline queue
    (`<ib><offline_preview/>`) and its end (`<ib><offline/>`), in order with the messages."""
    nd, sink = driver
    attempt = new_attempt(nd._inbox.post)
    nd._supervisor.attempt = attempt

    def deliver() -> None:
        go_event(attempt, EV_MESSAGE, message_event("live-before"))
        go_event(attempt, EV_OFFLINE_SYNC_PREVIEW, offline_preview(2))
        go_event(attempt, EV_MESSAGE, message_event("queued-1"))
        go_event(attempt, EV_MESSAGE, message_event("queued-2"))
        go_event(attempt, EV_OFFLINE_SYNC_COMPLETED, offline_completed(2))
        go_event(attempt, EV_MESSAGE, message_event("live-after"))
        go_event(attempt, EV_OFFLINE_SYNC_PREVIEW, offline_preview(1))
        go_event(attempt, EV_MESSAGE, message_event("queued-3"))
        go_event(attempt, EV_DISCONNECTED, disconnected())  # the sync never completed
        go_event(attempt, EV_MESSAGE, message_event("after-reconnect"))

    thread = go_thread(deliver)
    await wait_for(lambda: not thread.is_alive(), what="the Go thread")
    await wait_for(lambda: len(sink.messages()) == 6, what="six messages")
    assert [(m.message_id, m.extra.get("offline")) for m in sink.messages()] == [
        ("live-before", None), ("queued-1", "true"), ("queued-2", "true"),
        ("live-after", None), ("queued-3", "true"), ("after-reconnect", None)]
    nd._supervisor.attempt = None


async def test_a_retired_clients_messages_are_still_stored(
        driver: tuple[NeonizeDriver, Sink]) -> None:
    """Its other events no longer describe the session, but WhatsApp has the receipt of a
    message it delivered: dropping it would lose it."""
    nd, sink = driver
    retired = new_attempt(nd._inbox.post)
    nd._supervisor.attempt = None
    thread = go_thread(lambda: go_event(retired, EV_MESSAGE, message_event("3EB0LAST")))
    await wait_for(lambda: not thread.is_alive(), what="the Go thread")
    assert [m.message_id for m in sink.messages()] == ["3EB0LAST"]


async def test_messages_are_released_when_the_driver_closes() -> None:
    """A message queued when the driver closes is settled (not stored): its Go thread does
    not wait out the bound."""
    sink = Sink()
    nd = NeonizeDriver(NOWHERE, COMPANY)
    nd.attach(sink)
    await asyncio.sleep(0)
    attempt = new_attempt(nd._inbox.post)
    sink.release.clear()
    thread = go_thread(lambda: go_event(attempt, EV_MESSAGE, message_event("3EB0CLOSE")))
    await wait_for(lambda: "sink got 3EB0CLOSE" in sink.steps, what="the sink call")
    await nd.close()
    await wait_for(lambda: not thread.is_alive(), what="the Go thread")
    late: list[PendingMessage] = []
    after = new_attempt(capturing(nd, late))
    thread = go_thread(lambda: go_event(after, EV_MESSAGE, message_event("3EB0AFTER")))
    await wait_for(lambda: not thread.is_alive(), what="the Go thread")
    assert late[0].stored.result(timeout=1) is False
    assert sink.messages() == []


async def test_send_presence_without_a_connection_does_nothing(
        driver: tuple[NeonizeDriver, Sink]) -> None:
    nd, sink = driver
    await nd.send_presence(f"{PHONE}@s.whatsapp.net", True)
    await nd.send_presence("not a jid", False)
    assert sink.events == []
