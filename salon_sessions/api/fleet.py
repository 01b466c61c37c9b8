"""Every salon of the namespace at a glance, for the admin console: one table per API
process, kept up to date by one Kubernetes watch and the one Redis subscription, fanned out
to every admin WebSocket as coalesced changes.

- The SalonSessions are listed (in pages) and then watched (`list` + `watch`, bookmarks; a
  410 Gone or a broken watch lists again and removes what disappeared). The watch gives
  the spec, the operator's `.status` and its conditions (`WorkerHealthy`).
- The workers' live state comes from their Redis state hashes (the live state wins where a
  worker reports, as in `GET /v1/sessions/{id}`): an event of a company on the shared
  subscription, or a change of its SalonSession, marks the company dirty; a flusher wakes
  (at once after a quiet spell, else `flush_s` after its previous flush, so that a burst
  collects), reads the dirty companies' hashes in one pipeline and recomputes their rows.
  Only rows that really changed are sent, in one `changes` message per flush, encoded once
  and offered to every admin client's bounded queue (`Hub.broadcast_admin`): a QR rotation
  changes nothing and sends nothing; a thousand salons reconnecting at once are a few
  messages, not a thousand.
- It starts on first use (the console or `GET /v1/sessions`), not with the process: an API
  nobody opens the console of watches nothing.

Rows never carry a full phone number: all but its last four digits are masked
(`core.phone.mask_phone`).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Iterable
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from salon_sessions.api.kube import JSON, SessionResources
from salon_sessions.api.live import parse_state
from salon_sessions.api.models import LiveState
from salon_sessions.core import channels
from salon_sessions.core.company import InvalidCompanyId, canonical_company_id
from salon_sessions.core.events import Event
from salon_sessions.core.phone import mask_phone
from salon_sessions.core.resource import ConditionType
from salon_sessions.core.salon_session import SalonSessionSpec

log = logging.getLogger(__name__)
Row = dict[str, Any]
Broadcast = Callable[[str], None]

PAGE_SIZE = 500
WATCH_TIMEOUT_S = 290
RETRY_S = (1.0, 2.0, 5.0, 10.0)
PIPELINE_CHUNK = 500


def sort_key(company_id: str) -> tuple[int, str]:
    """Numeric order of the canonical ids (`company_9` before `company_10`)."""
    digits = company_id.removeprefix("company_")
    return len(digits), digits


def _condition(status: JSON, kind: str) -> JSON | None:
    for cond in status.get("conditions") or ():
        if isinstance(cond, dict) and cond.get("type") == kind:
            return cond
    return None


def company_of(obj: JSON) -> str | None:
    raw = SalonSessionSpec.from_dict(obj.get("spec")).company_id
    try:
        return canonical_company_id(raw) if raw else None
    except InvalidCompanyId:
        return None


def slim(obj: JSON) -> JSON:
    """What a row needs of a SalonSession (not its managedFields: 10,000 of those add up)."""
    meta = obj.get("metadata") or {}
    return {"metadata": {k: meta[k] for k in ("name", "creationTimestamp", "deletionTimestamp")
                         if k in meta},
            "spec": obj.get("spec") or {}, "status": obj.get("status") or {}}


def make_row(company_id: str, obj: JSON, live: LiveState | None) -> Row:
    """One salon as the console shows it (the live state wins where a worker reports)."""
    spec = SalonSessionSpec.from_dict(obj.get("spec"))
    status = obj.get("status") or {}
    meta = obj.get("metadata") or {}
    if live is not None:
        phase = live.phase.value if live.phase else status.get("phase")
        linked, connected, phone = live.linked, live.connected, live.phone
        reason = live.reason
        pending = live.pairing_code_pending
    else:
        phase, phone = status.get("phase"), status.get("phone")
        linked, connected = bool(status.get("linked")), bool(status.get("connected"))
        reason, pending = None, False
    health = _condition(status, ConditionType.WORKER_HEALTHY.value) or {}
    healthy = {"True": True, "False": False}.get(str(health.get("status")))
    return {
        "company_id": company_id,
        "name": meta.get("name"),
        "display_name": spec.display_name,
        "phase": phase or "Pending",
        "linked": linked,
        "connected": connected,
        "phone": mask_phone(phone),
        "last_connected_at": status.get("lastConnectedAt"),
        "worker_healthy": healthy,
        "worker_reason": health.get("reason"),
        "worker_live": live is not None,
        "reason": reason,
        "pairing_code_pending": pending,
        "link_method": spec.link.method.value,
        "suspended": spec.suspend,
        "created_at": meta.get("creationTimestamp"),
        "deleting": bool(meta.get("deletionTimestamp")),
    }


class Fleet:
    def __init__(self, kube: SessionResources, redis: Redis, broadcast: Broadcast, *,
                 flush_s: float = 0.2) -> None:
        self._kube = kube
        self._redis = redis
        self._broadcast = broadcast
        self._flush_s = flush_s
        self._objs: dict[str, JSON] = {}
        self._live: dict[str, LiveState | None] = {}
        self.rows: dict[str, Row] = {}
        self._order: list[str] | None = None
        self._dirty: set[str] = set()
        self._removed: set[str] = set()
        self._wake = asyncio.Event()
        self.synced = asyncio.Event()
        self.rev = 0
        self._snapshot: tuple[int, str] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.flushes = 0
        """`changes` messages sent (the benchmark counts them)."""

    # ---- lifecycle --------------------------------------------------------------------
    @property
    def started(self) -> bool:
        return bool(self._tasks)

    def ensure_started(self) -> None:
        if not self._tasks:
            self._tasks = [asyncio.create_task(self._watch_forever(), name="fleet-watch"),
                           asyncio.create_task(self._flush_forever(), name="fleet-flush")]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # ---- inputs -----------------------------------------------------------------------
    def note(self, event: Event) -> None:
        """An event on the shared subscription: the company's live state may have moved."""
        if self._tasks and event.company_id in self._objs:
            self._mark([event.company_id])

    def restate(self) -> None:
        """After a gap in the Redis subscription: read every worker's state again."""
        if self._tasks:
            self._mark(self._objs)

    def _mark(self, companies: Iterable[str]) -> None:
        self._dirty.update(companies)
        self._wake.set()

    # ---- reads ------------------------------------------------------------------------
    def ordered(self) -> list[str]:
        if self._order is None:
            self._order = sorted(self.rows, key=sort_key)
        return self._order

    def snapshot_message(self, heartbeat_s: float) -> str:
        """Every row, encoded once per revision (many consoles opening at once share it)."""
        if self._snapshot is None or self._snapshot[0] != self.rev:
            body = {"kind": "snapshot", "heartbeat_s": heartbeat_s, "rev": self.rev,
                    "sessions": [self.rows[c] for c in self.ordered()]}
            self._snapshot = (self.rev, json.dumps(body, separators=(",", ":")))
        return self._snapshot[1]

    # ---- the Kubernetes side ----------------------------------------------------------
    async def _watch_forever(self) -> None:
        failures = 0
        while True:
            try:
                version = await self._list()
                failures = 0
                await self._watch(version)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                delay = RETRY_S[min(failures, len(RETRY_S) - 1)]
                failures += 1
                log.warning("admin feed: listing or watching SalonSessions failed (%s); "
                            "again in %.0fs", type(exc).__name__, delay)
                await asyncio.sleep(delay)

    async def _list(self) -> str:
        seen: dict[str, JSON] = {}
        cont: str | None = None
        while True:
            page = await self._kube.list_page(PAGE_SIZE, cont)
            for obj in page.get("items") or ():
                if (company := company_of(obj)) is not None:
                    seen[company] = slim(obj)
            meta = page.get("metadata") or {}
            cont = meta.get("continue")
            if not cont:
                version = str(meta.get("resourceVersion") or "")
                break
        gone = set(self._objs) - set(seen)
        for company in gone:
            self._forget(company)
        self._objs.update(seen)
        self._mark(seen)
        if not seen:  # nothing to flush: an empty namespace is synced now
            self.synced.set()
        return version

    async def _watch(self, version: str) -> None:
        async for event in self._kube.watch(version, WATCH_TIMEOUT_S):
            kind, obj = event.get("type"), event.get("object") or {}
            if kind == "ERROR":  # 410 Gone (the version is too old) or another refusal
                log.info("admin feed: the SalonSession watch ended (%s): listing again",
                         obj.get("code"))
                return
            if kind == "BOOKMARK" or (company := company_of(obj)) is None:
                continue
            if kind == "DELETED":
                self._forget(company)
                self._wake.set()
            else:
                self._objs[company] = slim(obj)
                self._mark([company])

    def _forget(self, company: str) -> None:
        self._objs.pop(company, None)
        self._live.pop(company, None)
        self._dirty.discard(company)
        if self.rows.pop(company, None) is not None:
            self._order = None
            self._removed.add(company)

    # ---- the Redis side and the fan-out -----------------------------------------------
    async def _flush_forever(self) -> None:
        """A lone change is sent at once; then at most one flush per `flush_s`, so that
        what a burst changes meanwhile collects into the next one."""
        loop = asyncio.get_running_loop()
        last = float("-inf")
        while True:
            await self._wake.wait()
            if (wait := last + self._flush_s - loop.time()) > 0:
                await asyncio.sleep(wait)
            self._wake.clear()
            last = loop.time()
            try:
                await self.flush()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("admin feed: a flush failed")
                await asyncio.sleep(1.0)
                self._wake.set()

    async def _read_live(self, companies: list[str]) -> None:
        for start in range(0, len(companies), PIPELINE_CHUNK):
            chunk = companies[start:start + PIPELINE_CHUNK]
            try:
                async with self._redis.pipeline(transaction=False) as pipe:
                    for company in chunk:
                        pipe.hgetall(channels.session_state_key(company))
                    hashes = await pipe.execute()
            except (RedisError, OSError) as exc:  # keep what we had; the gap restates
                log.warning("admin feed: Redis unavailable (%s)", type(exc).__name__)
                continue
            for company, raw in zip(chunk, hashes, strict=True):
                self._live[company] = parse_state(raw, company)

    async def flush(self) -> None:
        dirty = [c for c in self._dirty if c in self._objs]
        self._dirty.clear()
        await self._read_live(dirty)
        changed: list[Row] = []
        for company in dirty:
            obj = self._objs.get(company)
            if obj is None:  # deleted while we read
                continue
            row = make_row(company, obj, self._live.get(company))
            old = self.rows.get(company)
            if row != old:
                if old is None:
                    self._order = None
                    self._removed.discard(company)
                self.rows[company] = row
                changed.append(row)
        removed = sorted(self._removed, key=sort_key)
        self._removed.clear()
        self.synced.set()
        if not changed and not removed:
            return
        self.rev += 1
        self.flushes += 1
        changed.sort(key=lambda r: sort_key(r["company_id"]))
        text = json.dumps({"kind": "changes", "rev": self.rev, "sessions": changed,
                           "removed": removed}, separators=(",", ":"))
        self._broadcast(text)
