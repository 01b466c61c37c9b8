"""Batched, coalesced status patches: the only code that writes `.status`.

`mark(session)` says "this session's facts changed". The first mark opens a coalescing window
(`batch_s`); whatever else happens to the session within it goes into the same patch, which
renders the model at send time. While a patch is in flight, new marks schedule the next one.
Changes that only move `lastEventAt`/`lastEventSeq` wait `lazy_s` (a QR rotation every 20 s
per session would otherwise be a patch each). A bounded pool of writers sends the patches,
so a burst of events becomes at most one patch per session per window, never a burst of
concurrent API calls.

After a patch is accepted, the phase transitions and worker troubles (`model.warnings`) it
contained are posted as Kubernetes Events (so an Event never announces a phase the status
does not show yet); a trouble that changes nothing in the status is posted at once.

The status is level-triggered: `written` is what the API server holds as far as we know
(the accepted patch's response, or the body the watch delivered). When the watch delivers
a `.status` that is not ours (`observed`: a hand edit, another writer), `written` becomes
that body and the next patch puts back every field that differs — within `batch_s` of the
watch event. A watch event that carries one of the statuses we wrote lately is ours (an
echo, possibly late: the watch may deliver an older version after our patch's response),
so the operator never fights itself; a periodic audit (`operator.audit`) lists the
SalonSessions and catches what the watch missed, judging only those not written since the
list began.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import UTC, datetime
from typing import Any

from salon_sessions.operator.kube import Kube, KubeError
from salon_sessions.operator.metrics import OperatorMetrics
from salon_sessions.operator.model import WARNING_PHASES, SessionModel, status_patch
from salon_sessions.operator.recorder import EventRecorder
from salon_sessions.operator.registry import Key, Registry, Session, canonical

log = logging.getLogger(__name__)
MAX_RACES = 3
"""Patches in a row whose response still differs from the rendered status (a writer that
keeps racing with us, or a server that normalises a field): then we stop insisting."""


class StatusWriter:
    def __init__(self, kube: Kube, registry: Registry, metrics: OperatorMetrics,
                 recorder: EventRecorder, *, batch_s: float = 0.2, lazy_s: float = 30.0,
                 concurrency: int = 16, retry_s: float = 1.0) -> None:
        self._kube = kube
        self._registry = registry
        self._metrics = metrics
        self._recorder = recorder
        self._batch_s = batch_s
        self._lazy_s = lazy_s
        self._concurrency = concurrency
        self._retry_s = retry_s
        self._queue: asyncio.Queue[Key] = asyncio.Queue()
        self._due: dict[Key, float] = {}  # scheduled or queued, with its due time
        self._timers: dict[Key, asyncio.TimerHandle] = {}
        self._inflight: set[Key] = set()
        self._remark: set[Key] = set()
        self._observed_later: dict[Key, tuple[dict[str, Any], float | None]] = {}
        self._idle = asyncio.Event()
        self._idle.set()

    # ---- scheduling -------------------------------------------------------------------
    def mark(self, session: Session, *, urgent: bool | None = None) -> bool:
        """Recompute the session's status; schedule a patch if it differs from the written
        one (urgent: within `batch_s`; lazy fields only: within `lazy_s`). True when an
        urgent patch is scheduled."""
        session.model.refresh()
        rendered = session.model.render(session.pod_name)
        patch, is_urgent = status_patch(session.written, rendered)
        if not patch:
            self._post_warnings(session, session.model)
            return False
        urgent = is_urgent if urgent is None else urgent
        self._schedule(session.key, self._batch_s if urgent else self._lazy_s)
        return urgent

    def _schedule(self, key: Key, delay: float) -> None:
        if key in self._inflight:
            self._remark.add(key)
            return
        loop = asyncio.get_running_loop()
        due = loop.time() + delay
        current = self._due.get(key)
        if current is not None and current <= due:
            return
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()
        self._due[key] = due
        self._idle.clear()
        if delay <= 0:
            self._queue.put_nowait(key)
        else:
            self._timers[key] = loop.call_later(delay, self._enqueue, key)

    def _enqueue(self, key: Key) -> None:
        self._timers.pop(key, None)
        self._queue.put_nowait(key)

    # ---- writing --------------------------------------------------------------------------
    async def run(self) -> None:
        workers = [asyncio.create_task(self._worker(), name=f"status-{i}")
                   for i in range(self._concurrency)]
        try:
            await asyncio.gather(*workers)
        finally:
            for task in workers:
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(*workers, return_exceptions=True)

    async def _worker(self) -> None:
        while True:
            key = await self._queue.get()
            self._due.pop(key, None)
            self._inflight.add(key)
            retry = False
            try:
                retry = not await self.write(key)
            except Exception:
                log.exception("status patch of %s/%s failed", *key)
                retry = True
            finally:
                self._inflight.discard(key)
                self._queue.task_done()
            session = self._registry.get(key)
            later = self._observed_later.pop(key, None)
            if session is not None and later is not None:
                self.observed(session, *later)  # now that our patch's result is known
            if session is not None and (retry or key in self._remark):
                self._remark.discard(key)
                if retry:
                    self._schedule(key, self._retry_s)
                else:
                    self.mark(session)
            else:
                self._remark.discard(key)
            if not self._due and not self._inflight:
                self._idle.set()

    async def write(self, key: Key) -> bool:
        """Send the session's pending patch now. False when it should be retried."""
        session = self._registry.get(key)
        if session is None:
            return True
        model = session.model
        model.refresh()
        rendered = model.render(session.pod_name)
        patch, _ = status_patch(session.written, rendered)
        if not patch:
            return True
        transitions, model.transitions = model.transitions, []
        warnings, model.warnings = model.warnings, []
        started = time.monotonic()
        try:
            result = await self._kube.patch_session_status(session.namespace, session.name,
                                                           patch)
        except KubeError as exc:
            self._metrics.status_patches.labels(str(exc.status or "error")).inc()
            if exc.status == 404:
                log.info("SalonSession %s/%s is gone; dropping its status", *key)
                return True
            model.transitions = transitions + model.transitions
            model.warnings = warnings + model.warnings
            if exc.retryable:
                log.warning("status patch of %s/%s failed (%s); retrying", *key, exc)
                return False
            log.error("status patch of %s/%s refused: %s", *key, exc)
            return True
        self._metrics.status_patch_seconds.observe(time.monotonic() - started)
        self._metrics.status_patches.labels("ok").inc()
        self._accepted(session, result, rendered)
        if session.pending_event_ts is not None:
            lag = (datetime.now(UTC) - session.pending_event_ts).total_seconds()
            self._metrics.event_status_lag.observe(max(lag, 0.0))
            session.pending_event_ts = None
        for t in transitions:
            old = t.old.value if t.old else "none"
            self._recorder.emit(session.ref(), "Warning" if t.new in WARNING_PHASES
                                else "Normal", t.new.value,
                                f"phase {old} -> {t.new.value} ({t.reason})", t.at)
        for w in warnings:
            self._recorder.emit(session.ref(), "Warning", w.reason, w.message, w.at)
        return True

    def _post_warnings(self, session: Session, model: SessionModel) -> None:
        warnings, model.warnings = model.warnings, []
        for w in warnings:
            self._recorder.emit(session.ref(), "Warning", w.reason, w.message, w.at)

    def _accepted(self, session: Session, result: dict[str, Any],
                  rendered: dict[str, Any]) -> None:
        """Our patch is in: what the server holds now is its response (a foreign edit
        that raced with it shows there, and is corrected by the next mark)."""
        status = result.get("status")
        session.remember_written(dict(status) if isinstance(status, dict) else rendered)
        if session.written == rendered:
            session.races = 0
        elif session.races < MAX_RACES:
            # someone else wrote in between: what they added is still there
            session.races += 1
            self._metrics.status_reasserts.labels("raced").inc()
            self.mark(session)
        else:
            log.error("the status of SalonSession %s/%s still differs from ours after %d "
                      "patches; not insisting until the next change", session.namespace,
                      session.name, MAX_RACES, extra={"company_id": session.company})

    # ---- level-triggered: the status the API server holds --------------------------------
    def observed(self, session: Session, status: dict[str, Any] | None,
                 listed_at: float | None = None) -> bool:
        """The watch (or the audit, with the monotonic time its LIST began) delivered the
        SalonSession's `.status`. If it is not ours (a foreign edit), re-assert ours. True
        when it was foreign."""
        status = dict(status or {})
        if session.key in self._inflight:
            # it may be the echo of the patch in flight: judge once its response is in
            self._observed_later[session.key] = (status, listed_at)
            return False
        if status == session.written:
            return False
        if listed_at is None:
            if canonical(status) in session.own_statuses:
                return False  # a late echo of one of our own patches
        elif session.written_at >= listed_at:
            return False  # we wrote since the list was read
        log.warning("the status of SalonSession %s/%s was changed by someone else; "
                    "re-asserting it", session.namespace, session.name,
                    extra={"company_id": session.company})
        self._metrics.status_reasserts.labels("foreign").inc()
        session.remember_written(status, ours=False)
        self.mark(session, urgent=True)
        return True

    async def flush(self, session: Session) -> bool:
        """Write the session's status now (the finalizer uses it before letting go)."""
        timer = self._timers.pop(session.key, None)
        if timer is not None:
            timer.cancel()
        self._due.pop(session.key, None)
        return await self.write(session.key)

    async def drain(self, timeout_s: float) -> None:
        """Wait until nothing is scheduled or in flight (shutdown)."""
        for key, timer in list(self._timers.items()):
            timer.cancel()
            self._timers.pop(key, None)
            self._queue.put_nowait(key)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await self._idle.wait()
