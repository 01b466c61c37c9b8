"""Play the phone (simulator driver), the API (control requests) and an observer of the
SalonSession's status stream, synchronously, for the operator tests."""

from __future__ import annotations

import json
import random
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import asyncpg
import redis

from devstack.stack import StackInfo
from salon_sessions.core import channels
from tests.helpers import eventually

PHONE = "79686484488"


def new_company() -> str:
    return f"company_{random.randint(10**8, 10**9)}"


class Phone:
    """The salon's phone and the onboarding API, through Redis."""

    def __init__(self, redis_url: str, company: str) -> None:
        self.redis = redis.Redis.from_url(redis_url)
        self.company = company

    def close(self) -> None:
        self.redis.close()

    def act(self, **action: Any) -> int:
        return int(self.redis.publish(channels.simulator_channel(self.company),
                                      json.dumps(action)))

    def qr(self) -> str | None:
        raw = self.redis.get(channels.latest_qr_key(self.company))
        return raw.decode() if isinstance(raw, bytes) else None

    def scan(self, phone: str = PHONE) -> None:
        """Scan the QR on screen (retried: the QR may rotate between read and scan)."""
        def scanned() -> bool:
            qr = self.qr()
            if qr is None or not self.act(action="scan", qr=qr, phone=phone):
                return False
            time.sleep(1.0)
            return self.state().get("linked") == "true"

        eventually(scanned, 60, "a successful QR scan")

    def state(self) -> dict[str, str]:
        raw = self.redis.hgetall(channels.session_state_key(self.company))
        return {k.decode(): v.decode() for k, v in raw.items()}

    def keys(self) -> list[str]:
        return [k for k in channels.session_keys(self.company) if self.redis.exists(k)]

    def control(self, cmd: str, timeout: float = 10, **params: Any) -> dict[str, Any]:
        request_id = uuid.uuid4().hex
        pubsub = self.redis.pubsub()
        try:
            pubsub.subscribe(channels.control_reply_channel(self.company, request_id))
            pubsub.get_message(timeout=2)  # the subscribe confirmation
            body = {"v": 1, "id": request_id, "company_id": self.company, "cmd": cmd,
                    **params}
            assert self.redis.publish(channels.control_channel(self.company),
                                      json.dumps(body)), "no worker listens"
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                msg = pubsub.get_message(ignore_subscribe_messages=True, timeout=1)
                if msg is not None:
                    reply: dict[str, Any] = json.loads(msg["data"])
                    assert reply["ok"], reply
                    result: dict[str, Any] = reply["result"]
                    return result
        finally:
            pubsub.close()
        raise AssertionError(f"no reply to {cmd}")


class StatusWatch:
    """Every version of one SalonSession's status, as `kubectl get -w` streams them."""

    def __init__(self, stack: StackInfo, namespace: str, name: str) -> None:
        self.seen: list[dict[str, Any]] = []
        self._proc = subprocess.Popen(
            [f"{stack.bin_dir}/kubectl", "--kubeconfig", stack.kubeconfig, "get",
             "salonsession", name, "-n", namespace, "-w", "-o", "json"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self._proc.stdout is not None
        decoder = json.JSONDecoder()
        buffer = ""
        for line in self._proc.stdout:
            buffer += line
            while buffer.strip():
                try:
                    obj, end = decoder.raw_decode(buffer.lstrip())
                except ValueError:
                    break
                buffer = buffer.lstrip()[end:]
                self.seen.append(obj.get("status") or {})

    def started(self) -> StatusWatch:
        eventually(lambda: self.seen, 30, "the watch's first object")
        return self

    def saw(self, pred: Callable[[dict[str, Any]], bool]) -> bool:
        return any(pred(s) for s in list(self.seen))

    def close(self) -> None:
        self._proc.terminate()
        self._proc.wait(5)


def condition(status: dict[str, Any], ctype: str) -> dict[str, Any]:
    for cond in status.get("conditions", []):
        if cond["type"] == ctype:
            return dict(cond)
    raise AssertionError(f"no {ctype} condition in {status}")


def db_rows(dsn: str, sql: str, *args: Any) -> list[dict[str, Any]]:
    import asyncio

    async def run() -> list[dict[str, Any]]:
        conn = await asyncpg.connect(dsn)
        try:
            return [dict(r) for r in await conn.fetch(sql, *args)]
        finally:
            await conn.close()

    return asyncio.run(run())


def credentials(dsn: str, company: str) -> dict[str, int]:
    """How many credential rows the session has, per store."""
    def count(sql: str) -> int:
        return len(db_rows(dsn, sql, company))

    return {
        "simulator_device": count("SELECT 1 FROM simulator_device WHERE company_id = $1"),
        "salon_sessions": count("SELECT 1 FROM salon_sessions WHERE company_id = $1"),
    }


def history(dsn: str, company: str) -> list[str]:
    return [r["action"] for r in db_rows(
        dsn, "SELECT action FROM salon_link_history WHERE company_id = $1 ORDER BY id",
        company)]
