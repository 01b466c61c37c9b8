"""What every piece of the `neonize` driver shares: its policy, its log, the scrubber and
the sink.

The driver is composed of small objects (`neonize.driver` lists them); each reports facts
to the same sink, logs with the same company, never lets a secret out (the database and
proxy URLs), and waits as long as one `NeonizePolicy` says. They get one `DriverContext`
instead of each keeping a copy of those.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from typing import Any
from urllib.parse import urlsplit

from salon_sessions.core.redact import MASK, redact_text
from salon_sessions.worker.driver import DriverFact, DriverSink
from salon_sessions.worker.neonize.go import MESSAGE_WAIT_S


@dataclasses.dataclass(frozen=True, slots=True)
class NeonizePolicy:
    """How long the driver waits for what, and its limits (tests shorten them)."""

    retire_wait_s: float = 5.0
    """How long stopping a client waits for Go to act on it (`GoAttempt.settled`)."""
    stop_wait_s: float = 30.0
    """A client that may hold WhatsApp's stream (it resumed a device) must have returned
    from `Neonize()` within this before another one starts: two clients with the same
    credentials replace each other's stream. Past it, the process must go (`on_fatal`)."""
    drain_s: float = 30.0
    """How long a stopping client's running calls (a send) may finish first: they write the
    Signal sessions in the store, so neither the client nor its connections are cut."""
    stream_replaced_retry_s: float = 30.0
    """The pause before the one retry after `StreamReplaced` ..."""
    stream_replaced_window_s: float = 600.0
    """... and a second replacement within this halts (another client really uses the
    credentials: fighting over the stream gets numbers banned)."""
    watchdog_s: float = 120.0
    """Linked and not connected this long with a client running: restart the client
    (whatsmeow never retries a failed reconnect after pairing, stream error 515)."""
    max_parked: int = 12
    """Abandoned login clients a process may keep (each a thread parked in neonize's
    `FetchMe`, across every `start()`); past it the process must restart (`on_fatal`)."""
    slow_base_s: float = 300.0
    slow_cap_s: float = 3600.0
    """Backoff for refusals WhatsApp did not explain (unknown codes): never a fast loop."""
    message_wait_s: float = MESSAGE_WAIT_S
    """How long neonize's event thread waits for an inbound message to be stored before it
    takes the next event (`neonize.go`, "Inbound messages")."""
    presence_wait_s: float = 5.0
    """How long `send_presence` waits for Go: a typing indicator must not hold up a send."""


class DriverContext:
    """The company, log, policy, secrets and sink of one driver."""

    def __init__(self, company_id: str, log: logging.Logger, policy: NeonizePolicy,
                 secrets: list[str]) -> None:
        self.company_id = company_id
        self.log: logging.LoggerAdapter[Any] = logging.LoggerAdapter(
            log, {"company_id": company_id})
        self.policy = policy
        """Read at each use (tests replace it after construction)."""
        self._secrets = secrets
        self.sink: DriverSink | None = None

    async def emit(self, event: DriverFact) -> None:
        """Report a fact to the sink (dropped, with a debug line, before one is attached)."""
        sink = self.sink
        if sink is None:
            self.log.debug("no sink attached; dropping %s", type(event).__name__)
            return
        await sink(event)

    def scrub(self, text: str) -> str:
        """`text` without the driver's secrets and without what `redact_text` masks."""
        for secret in self._secrets:
            text = text.replace(secret, MASK)
        return redact_text(text)


def secrets_of(*urls: str | None) -> list[str]:
    """Literal strings that must never leave the driver (URLs, their passwords)."""
    found: list[str] = []
    for url in urls:
        if not url:
            continue
        found.append(url)
        with contextlib.suppress(ValueError):
            password = urlsplit(url).password
            if password:
                found.append(password)
    return sorted(set(found), key=len, reverse=True)
