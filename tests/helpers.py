"""Small helpers for tests: wait for a condition with a bound, read kube objects, a URL
with another database user."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import redis

from devstack.stack import StackInfo
from salon_sessions.core import redis_acl
from salon_sessions.core.urls import with_credentials

T = TypeVar("T")


def eventually(check: Callable[[], T | None], timeout: float = 60, what: str = "condition",
               interval: float = 0.3) -> T:
    """Poll `check` until it returns a truthy value; fail with the last value after `timeout`.
    The bound only keeps a broken test from hanging; it is not a speed assertion."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except Exception as exc:  # keep polling; report the last error
            last = exc
        else:
            if last:
                return last
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}; last value: {last!r}")


async def wait_for(check: Callable[[], Awaitable[Any] | Any], timeout: float = 30,
                   what: str = "condition", interval: float = 0.1) -> Any:
    """The async `eventually`: poll until `check` (sync or async) is truthy."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if asyncio.iscoroutine(last):
            last = await last
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


def metric_sample(text: str, name: str, **labels: str) -> float | None:
    """One sample's value from a Prometheus text page, by name and exact labels (None:
    absent)."""
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        metric, _, rest = key.partition("{")
        got = ",".join(sorted(rest.rstrip("}").split(","))) if rest else ""
        if metric == name and got == want:
            return float(value)
    return None


def get_json(stack: StackInfo, *args: str) -> dict[str, Any]:
    out = stack.kubectl("get", *args, "-o", "json")
    result: dict[str, Any] = json.loads(out.stdout)
    return result


_LIVE_USERS: dict[str, Callable[[], None]] = {}


def restore_session_users() -> None:
    """Create the live session users again after a Redis restart (the operator's job)."""
    for ensure in list(_LIVE_USERS.values()):
        ensure()


@dataclass
class SessionRedisUser:
    url: str
    ensure: Callable[[], None]
    """Create it again (as the operator does after a Redis restart forgot it)."""


@contextmanager
def session_redis_user(admin_url: str, company: str,
                       namespace: str = "tests") -> Iterator[SessionRedisUser]:
    """A company's own Redis user, with the rules the operator gives a session's worker
    (`core.redis_acl.session_rules`); deleted afterwards. Workers started by the tests run
    with it, so a command the rules lack fails the tests."""
    admin = redis.Redis.from_url(admin_url)
    user = redis_acl.session_user(namespace, company.replace("_", "-"))
    password = secrets.token_urlsafe(24)
    args = redis_acl.setuser_args(user, password, redis_acl.session_rules(company))

    def ensure() -> None:
        admin.execute_command(*args)

    ensure()
    _LIVE_USERS[user] = ensure
    try:
        yield SessionRedisUser(with_credentials(admin_url, user, password), ensure)
    finally:
        _LIVE_USERS.pop(user, None)
        admin.execute_command("ACL", "DELUSER", user)
        admin.close()
