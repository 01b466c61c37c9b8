"""Run real `salon-sessions worker` processes against the test stack, and watch them
through Redis like the operator and the API do."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import uuid
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from salon_sessions.core import channels, control
from salon_sessions.core.codec import decode
from salon_sessions.core.events import PingData, PingEvent
from salon_sessions.db.migrator import migrate_database

VENV_BIN = Path(__file__).resolve().parents[2] / ".venv" / "bin"

FAST_SIMULATOR = {
    "SALON_SIMULATOR_FIRST_QR_S": "2",
    "SALON_SIMULATOR_QR_PERIOD_S": "1",
    "SALON_HEARTBEAT_TTL_S": "6",
    "SALON_LOCK_CHECK_S": "0.5",
    # pacing on, but never in the way of a test that is not about it
    "SALON_SEND_RATE_PER_MINUTE": "6000", "SALON_SEND_BURST": "1000",
    "SALON_SEND_NEW_CONTACTS_PER_HOUR": "36000", "SALON_SEND_NEW_CONTACT_BURST": "1000",
    "SALON_SEND_JITTER_S": "0", "SALON_SEND_TYPING": "false", "SALON_STREAM_TRIM_S": "1",
}


_MIGRATED: set[str] = set()


def migrated(database: str) -> None:
    """Apply the migrations to `database` (its administrator's URL) once per test process,
    as the Helm hook does before any worker starts: a worker waits for pending migrations,
    it does not apply them. Blocks (like starting the process does), from sync or async
    code alike."""
    if database in _MIGRATED:
        return
    with ThreadPoolExecutor(1) as pool:
        pool.submit(lambda: asyncio.run(migrate_database(database))).result()
    _MIGRATED.add(database)


def new_company() -> str:
    return f"company_{random.randint(10**8, 10**9)}"


class WorkerProc:
    """One worker process; its log is kept for assertions."""

    def __init__(self, tmp: Path, database: str, redis_url: str, company: str,
                 name: str = "w0", driver: str = "simulator",
                 env: dict[str, str] | None = None,
                 command: list[str] | None = None) -> None:
        """`command`: what to run instead of `salon-sessions worker` (a test wrapper that
        runs the real worker, e.g. `crashing_worker.py`)."""
        self.company = company
        self.database = database
        self.name = name
        self.log_path = tmp / f"{name}.log"
        self.tmpdir = tmp / f"{name}.tmp"  # its own /tmp, as in a pod (the fence state file)
        self.tmpdir.mkdir(exist_ok=True)
        self.env = {
            "PATH": os.environ["PATH"], "HOME": str(tmp), "TMPDIR": str(self.tmpdir),
            "SALON_DATABASE_URL": database, "SALON_REDIS_URL": redis_url,
            "SALON_COMPANY_ID": company,
            "SALON_SESSION_NAME": company.replace("_", "-"),
            "SALON_DRIVER": driver, "SALON_POD_NAME": name, "SALON_METRICS_PORT": "0",
            **FAST_SIMULATOR, **(env or {}),
        }
        self.command = command or [str(VENV_BIN / "salon-sessions"), "worker"]
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProc:
        migrated(self.database)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.command, env=self.env, stdout=log,
                                         stderr=subprocess.STDOUT)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    async def wait(self, timeout: float = 30) -> int:
        assert self.proc is not None
        proc = self.proc
        return await asyncio.wait_for(asyncio.to_thread(proc.wait), timeout)

    async def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await self.wait(20)
            except TimeoutError:
                self.proc.kill()
                await self.wait(10)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


class Observer:
    """Reads a session's state hash and events the way the operator and the API do."""

    def __init__(self, redis: Redis, company: str) -> None:
        self.redis = redis
        self.company = company
        self.events: list[dict[str, Any]] = []
        self.pongs: list[dict[str, Any]] = []
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()

    async def __aenter__(self) -> Observer:
        self._task = asyncio.create_task(self._collect())
        await asyncio.wait_for(self._ready.wait(), 10)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _collect(self) -> None:
        while True:
            pubsub = self.redis.pubsub()
            try:
                await pubsub.subscribe(channels.events_channel(self.company),
                                       channels.health_pong_channel(self.company))
                self._ready.set()
                while True:
                    msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1)
                    if msg is None:
                        continue
                    body = json.loads(msg["data"])
                    if body.get("company_id") != self.company:
                        continue
                    target = self.pongs if body.get("type") == "pong" else self.events
                    target.append(body)
            except (ConnectionError, OSError, Exception) as exc:  # Redis restarted
                if isinstance(exc, asyncio.CancelledError):
                    raise
                await asyncio.sleep(0.3)
            finally:
                await pubsub.aclose()

    def types(self) -> list[str]:
        return [e["type"] for e in self.events]

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["type"] == kind]

    async def state(self) -> dict[str, str]:
        raw = await self.redis.hgetall(channels.session_state_key(self.company))
        return {k.decode(): v.decode() for k, v in raw.items()}

    async def wait_state(self, pred: Callable[[dict[str, str]], bool], timeout: float = 30,
                         what: str = "state") -> dict[str, str]:
        last: dict[str, str] = {}
        async with asyncio.timeout(timeout):
            while True:
                try:
                    last = await self.state()
                except (RedisError, OSError):  # Redis restarting: the client reconnects
                    last = {}
                if last and pred(last):
                    return last
                await asyncio.sleep(0.1)
        raise AssertionError(f"{what}: last {last}")  # pragma: no cover

    async def wait_event(self, kind: str, count: int = 1, timeout: float = 30) -> dict[str, Any]:
        try:
            async with asyncio.timeout(timeout):
                while len(self.of(kind)) < count:
                    await asyncio.sleep(0.05)
        except TimeoutError:
            raise AssertionError(f"no {count}x {kind} event; saw {self.types()}") from None
        return self.of(kind)[count - 1]

    async def wait_published_qr(self, code: str, timeout: float = 5) -> None:
        """Assert that `code` is a QR the worker published. Our subscription may get the event
        a moment after another reader (the stored key, the API, a page) has it."""
        try:
            async with asyncio.timeout(timeout):
                while code not in {e["data"]["code"] for e in self.of("qr")}:
                    await asyncio.sleep(0.02)
        except TimeoutError:
            raise AssertionError("a QR that the worker never published") from None

    async def scan(self, phone: str = "79686484488", timeout: float = 30) -> dict[str, Any]:
        """Scan the QR on screen like a phone, again with the new one if it rotated between
        reading and scanning (a phone cannot scan a QR that is gone). Returns `linked`."""
        before = len(self.of("linked"))
        try:
            async with asyncio.timeout(timeout):
                while True:
                    code = await self.qr()
                    assert await self.act({"action": "scan", "qr": code, "phone": phone}) == 1
                    for _ in range(40):
                        if len(self.of("linked")) > before:
                            return self.of("linked")[before]
                        await asyncio.sleep(0.05)
        except TimeoutError:
            raise AssertionError(f"no scan linked the session; saw {self.types()}") from None

    async def act(self, action: dict[str, Any]) -> int:
        """Play the phone's part (simulator driver)."""
        return int(await self.redis.publish(channels.simulator_channel(self.company),
                                            json.dumps(action)))

    async def qr(self) -> str:
        raw = await self.redis.get(channels.latest_qr_key(self.company))
        assert raw is not None, "no QR stored"
        return str(raw.decode())

    async def control(self, cmd: str, **params: Any) -> dict[str, Any]:
        return await control.request(self.redis, self.company, cmd, **params)

    async def ping(self, timeout: float = 10) -> dict[str, Any]:
        correlation = uuid.uuid4().hex
        ping = PingEvent(company_id=self.company, session=self.company.replace("_", "-"),
                         seq=1, data=PingData(correlation_id=correlation))
        await self.redis.publish(channels.health_ping_channel(self.company),
                                 ping.model_dump_json())
        async with asyncio.timeout(timeout):
            while True:
                for pong in self.pongs:
                    if pong["data"]["correlation_id"] == correlation:
                        return pong
                await asyncio.sleep(0.02)


@asynccontextmanager
async def observing(redis_url: str, company: str) -> AsyncIterator[Observer]:
    redis = Redis.from_url(redis_url)
    try:
        async with Observer(redis, company) as obs:
            yield obs
    finally:
        await redis.aclose()


def decoded(event: dict[str, Any]) -> Any:
    return decode(json.dumps(event))
