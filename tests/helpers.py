"""Small helpers for tests: wait for a condition with a bound, read kube objects."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
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


def get_json(stack: StackInfo, *args: str) -> dict[str, Any]:
    out = stack.kubectl("get", *args, "-o", "json")
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def dsn_as(dsn: str, user: str, password: str) -> str:
    """`dsn` with another user and password (a session role's URL)."""
    parts = urlsplit(dsn)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{quote(user)}:{quote(password, safe='')}@{host}"))
