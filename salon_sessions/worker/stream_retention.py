"""Retention of a session's Redis Streams: trim what the readers acknowledged, keep the rest.

A stream trimmed to a fixed length (`XADD ... MAXLEN`) silently loses the oldest entries a
reader has not read yet: with the bot down and the salons busy, messages vanished before the
bot came back. Redis 7.0 cannot trim "acknowledged by every group" by itself (8.2's `ACKED`
option can), so the worker does it every `interval_s` for its own streams:

1. For each consumer group, the first entry it has not acknowledged is its oldest pending
   entry (`XPENDING`), else the first entry after its `last-delivered-id`. Everything before
   the smallest of these over all groups is acknowledged by every group: trimmed
   (`XTRIM MINID`), not counted as a loss.
2. An entry older than `retention_s` goes even unacknowledged, and the stream keeps at most
   `max_entries`: both are counted in `salon_worker_stream_dropped_total` (alerts fire long
   before: oldest unacknowledged age against the retention, length against the cap).
3. A stream without any consumer group is read by nobody who acknowledges: its entries are
   kept for the retention time. Bots must read with a consumer group (docs/BOT.md).

The outbound stream's one group is the workers' own: acknowledged commands are trimmed; a
pending command is never dropped (it waits for the session to connect).

The same pass measures each stream for Prometheus: length, per-group backlog, the age of the
oldest unacknowledged entry, the number of groups.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from salon_sessions.core import channels
from salon_sessions.core.redis_client import REDIS_ERRORS, as_text
from salon_sessions.worker.metrics import WorkerMetrics

log = logging.getLogger(__name__)
MAX_GROUP_LABELS = 8
"""Backlog is exported for at most this many groups per stream (their names come from the
bot: a bounded number of Prometheus series whatever it does)."""


@dataclass(frozen=True, slots=True)
class StreamId:
    ms: int
    seq: int

    @classmethod
    def parse(cls, value: bytes | str) -> StreamId:
        ms, _, seq = as_text(value).partition("-")
        return cls(int(ms), int(seq or 0))

    def next(self) -> StreamId:
        return StreamId(self.ms, self.seq + 1)

    def __str__(self) -> str:
        return f"{self.ms}-{self.seq}"

    def __lt__(self, other: StreamId) -> bool:
        return (self.ms, self.seq) < (other.ms, other.seq)

    def __le__(self, other: StreamId) -> bool:
        return (self.ms, self.seq) <= (other.ms, other.seq)


@dataclass(frozen=True, slots=True)
class StreamReport:
    """One pass over one stream."""

    length: int
    groups: dict[str, int]
    """Per group: entries not acknowledged (pending + not yet delivered)."""
    oldest_unacked: StreamId | None
    trimmed: int
    dropped_retention: int
    dropped_max_entries: int


@dataclass(frozen=True, slots=True)
class Retention:
    retention_s: float
    max_entries: int
    drops_unacked: bool = True
    """False for the outbound stream: a pending command is never dropped."""


class StreamKeeper:
    """Trims and measures one stream (the worker holds the session's lock while it runs)."""

    def __init__(self, redis: Redis, name: str, label: str, retention: Retention,
                 metrics: WorkerMetrics) -> None:
        self._redis = redis
        self._name = name
        self._label = label
        self._retention = retention
        self._metrics = metrics

    async def run_once(self, now_s: float | None = None) -> StreamReport:
        now_ms = int((time.time() if now_s is None else now_s) * 1000)
        try:
            info: Any = await self._redis.xinfo_stream(self._name)
        except ResponseError:  # no such key: nothing written yet
            self._export(StreamReport(0, {}, None, 0, 0, 0), now_ms)
            return StreamReport(0, {}, None, 0, 0, 0)
        last = StreamId.parse(info["last-generated-id"])
        first_entry = info.get("first-entry")
        first = StreamId.parse(first_entry[0]) if first_entry else None
        boundaries: list[StreamId] = []
        backlog: dict[str, int] = {}
        for group in await self._redis.xinfo_groups(self._name):
            name = as_text(group["name"])
            boundary = await self._first_unacked(name, group, last)
            boundaries.append(boundary)
            lag = group.get("lag")
            backlog[name] = int(group.get("pending") or 0) + (int(lag) if lag is not None
                                                               else 0)
        trimmed = dropped_age = dropped_cap = 0
        acked_by_all = min(boundaries) if boundaries else None
        if acked_by_all is not None and first is not None and first < acked_by_all:
            trimmed = int(await self._redis.xtrim(self._name, minid=str(acked_by_all),
                                                  approximate=False))
        if self._retention.drops_unacked:
            cutoff = StreamId(now_ms - int(self._retention.retention_s * 1000), 0)
            if first is not None and first < cutoff:
                dropped_age = int(await self._redis.xtrim(self._name, minid=str(cutoff),
                                                          approximate=False))
            length = int(await self._redis.xlen(self._name))
            if length > self._retention.max_entries:
                dropped_cap = int(await self._redis.xtrim(
                    self._name, maxlen=self._retention.max_entries, approximate=False))
        length = int(await self._redis.xlen(self._name))
        oldest = await self._oldest_unacked(acked_by_all, bool(boundaries), length)
        report = StreamReport(length, backlog, oldest, trimmed, dropped_age, dropped_cap)
        self._export(report, now_ms)
        if dropped_age or dropped_cap:
            log.error("%s: dropped %d unacknowledged entries (retention %d, max entries %d): "
                      "the bot did not acknowledge them in time", self._label,
                      dropped_age + dropped_cap, dropped_age, dropped_cap)
        return report

    async def _first_unacked(self, group: str, info: dict[str, Any],
                             last: StreamId) -> StreamId:
        """The first entry `group` has not acknowledged (may be after the stream's end)."""
        if int(info.get("pending") or 0) > 0:
            summary: Any = await self._redis.xpending(self._name, group)
            if summary and summary.get("min"):
                return StreamId.parse(summary["min"])
        delivered = info.get("last-delivered-id")
        after = StreamId.parse(delivered).next() if delivered else StreamId(0, 0)
        return min(after, last.next())

    async def _oldest_unacked(self, acked_by_all: StreamId | None, has_groups: bool,
                              length: int) -> StreamId | None:
        if length == 0:
            return None
        start = str(acked_by_all) if has_groups and acked_by_all is not None else "-"
        entries: Any = await self._redis.xrange(self._name, min=start, max="+", count=1)
        return StreamId.parse(entries[0][0]) if entries else None

    def _export(self, report: StreamReport, now_ms: int) -> None:
        m, s = self._metrics, self._label
        m.stream_length.labels(s).set(report.length)
        m.stream_groups.labels(s).set(len(report.groups))
        for name in sorted(report.groups)[:MAX_GROUP_LABELS]:
            m.stream_backlog.labels(s, name).set(report.groups[name])
        age = 0.0 if report.oldest_unacked is None else max(
            (now_ms - report.oldest_unacked.ms) / 1000.0, 0.0)
        m.stream_oldest_unacked_age.labels(s).set(age)
        if report.dropped_retention:
            m.stream_dropped.labels(s, "retention").inc(report.dropped_retention)
        if report.dropped_max_entries:
            m.stream_dropped.labels(s, "max_entries").inc(report.dropped_max_entries)


def session_keepers(redis: Redis, company_id: str, retention_s: float, max_entries: int,
                    metrics: WorkerMetrics) -> list[StreamKeeper]:
    """The keepers of one session's three streams."""
    bot = Retention(retention_s, max_entries)
    metrics.stream_retention.set(retention_s)
    metrics.stream_max_entries.set(max_entries)
    metrics.sending_paused.set(0)
    for stream in ("inbound", "results"):
        # from the start, so that the first drop is an increase Prometheus can see
        for cause in ("retention", "max_entries"):
            metrics.stream_dropped.labels(stream, cause)
        metrics.stream_oldest_unacked_age.labels(stream).set(0)
        metrics.stream_length.labels(stream).set(0)
    return [
        StreamKeeper(redis, channels.inbound_stream(company_id), "inbound", bot, metrics),
        StreamKeeper(redis, channels.results_stream(company_id), "results", bot, metrics),
        StreamKeeper(redis, channels.outbound_stream(company_id), "outbound",
                     Retention(retention_s, max_entries, drops_unacked=False), metrics),
    ]


async def keep_streams(keepers: list[StreamKeeper], interval_s: float,
                       may_write: Callable[[], bool]) -> None:
    """Forever: one pass over every stream each `interval_s`, while the worker may write
    (it holds the session's lock); Redis errors are logged and retried next time."""
    while True:
        for keeper in keepers if may_write() else ():
            try:
                await keeper.run_once()
            except REDIS_ERRORS as exc:
                log.warning("stream retention pass failed (%s); next in %.0f s",
                            type(exc).__name__, interval_s)
        await asyncio.sleep(interval_s)
