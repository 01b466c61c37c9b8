"""Salons for the example bot: real simulator workers, each with its own company, Redis user
and observer, linked by a scan; and the bot's Redis user with the rules docs/BOT.md gives."""

from __future__ import annotations

import re
import secrets
import shlex
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from salon_sessions.core.urls import with_credentials
from tests.helpers import session_redis_user
from tests.worker.harness import Observer, WorkerProc, new_company, observing
from tests.worker.test_lock import link

BOT_DOC = Path(__file__).resolve().parents[2] / "docs" / "BOT.md"
FAST_SENDING = {"SALON_SEND_PACING": "false", "SALON_SEND_TYPING": "false"}
"""Pacing off so the test is quick (pacing itself is tested by the bridge's tests)."""


def bot_acl_rules(password: str) -> list[str]:
    """The `ACL SETUSER` arguments of the bot's user, as docs/BOT.md spells them (the block
    after `<!-- bot-acl -->`), with `password` in place of CHANGE-ME."""
    text = BOT_DOC.read_text()
    match = re.search(r"<!-- bot-acl -->\s*```[a-z]*\n(?P<cmd>.*?)```", text, re.S)
    assert match, "docs/BOT.md has no <!-- bot-acl --> block"
    words = shlex.split(match["cmd"].replace("\\\n", " "))
    assert words[:2] == ["ACL", "SETUSER"], words
    return [w.replace("CHANGE-ME", password) for w in words]


@dataclass
class Salon:
    company: str
    worker: WorkerProc
    obs: Observer


SalonFactory = Callable[[], Awaitable[Salon]]


@pytest.fixture
async def salons(tmp_path: Path, database: str, redis_url: str) -> AsyncIterator[SalonFactory]:
    """Start a linked salon: a simulator worker (its own Redis user, fast sending) whose phone
    has scanned the QR; stopped and cleaned up after the test."""
    async with AsyncExitStack() as stack:

        async def start() -> Salon:
            company = new_company()
            user = stack.enter_context(session_redis_user(redis_url, company))
            obs = await stack.enter_async_context(observing(redis_url, company))
            worker = WorkerProc(tmp_path, database, user.url, company, name=company,
                                env=FAST_SENDING).start()
            stack.push_async_callback(worker.stop)
            await link(obs)
            return Salon(company, worker, obs)

        yield start


@pytest.fixture
def bot_redis_url(redis_url: str) -> Iterator[str]:
    """A Redis user with exactly the rules docs/BOT.md says a bot needs."""
    admin = redis.Redis.from_url(redis_url)
    password = secrets.token_urlsafe(24)
    args = bot_acl_rules(password)
    user = f"salon-bot-test-{secrets.token_hex(4)}"
    args[2] = user
    admin.execute_command(*args)  # type: ignore[no-untyped-call]
    try:
        yield with_credentials(redis_url, user, password)
    finally:
        admin.execute_command("ACL", "DELUSER", user)  # type: ignore[no-untyped-call]
        admin.close()
