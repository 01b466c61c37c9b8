"""Small helpers for tests: wait for a condition with a bound, read kube objects, a URL
with another database user."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import quote, urlsplit, urlunsplit

from devstack.stack import StackInfo

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
                   what: str = "condition") -> Any:
    """The async `eventually`: poll until `check` (sync or async) is truthy."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if asyncio.iscoroutine(last):
            last = await last
        if last:
            return last
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


def get_json(stack: StackInfo, *args: str) -> dict[str, Any]:
    out = stack.kubectl("get", *args, "-o", "json")
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def dsn_as(dsn: str, user: str, password: str) -> str:
    """`dsn` with another user and password (a session role's URL)."""
    parts = urlsplit(dsn)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{quote(user)}:{quote(password, safe='')}@{host}"))
