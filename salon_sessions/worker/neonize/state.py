"""The facts about the current WhatsApp client run that several pieces of the driver share.

Whether the socket is up, since when a linked client is not connected (the watchdog's
clock), which facts this run has reported already, and the login socket's QR codes: the
event handlers write them, the supervisor resets them for each client run, the commands
(send, pairing code) and the watchdog read them. One small object each, passed to those
that need it, instead of attributes of one large driver.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime


class ClientRun:
    """The connection facts of the current client run."""

    def __init__(self) -> None:
        self.connected = False
        """The socket is open and authenticated (as far as the events said)."""
        self.unconnected_since: float | None = None
        """Linked and not connected since (monotonic), for the watchdog."""
        self.reported: set[str] = set()
        """What this client run has reported already (a fact can come as a neonize event
        and as a whatsmeow log line; the first one wins, both carry the same facts)."""

    def reset(self, *, linked: bool) -> None:
        """A new client run starts (`linked`: it resumes a device or one was linked)."""
        self.connected = False
        self.reported = set()
        self.unconnected_since = time.monotonic() if linked else None

    def first(self, fact: str) -> bool:
        """True the first time this client run reports `fact` (see `reported`)."""
        if fact in self.reported:
            return False
        self.reported.add(fact)
        return True

    def lost(self, *, linked: bool) -> None:
        """The socket closed; a linked client starts the watchdog's clock."""
        self.connected = False
        if linked and self.unconnected_since is None:
            self.unconnected_since = time.monotonic()


class LoginSocket:
    """The login socket of the current client run: its QR codes and when it opened."""

    def __init__(self) -> None:
        self.qr_index = 0
        self.opened: datetime | None = None
        self.ready = asyncio.Event()
        """Set while a login socket shows QR codes (a pairing code can be asked on it)."""

    def reset(self) -> None:
        """A new client run: no login socket yet."""
        self.qr_index = 0
        self.opened = None
        self.ready.clear()

    def shown(self) -> None:
        """A QR code arrived: the socket is open (since the first one)."""
        self.opened = self.opened or datetime.now(UTC)
        self.ready.set()
