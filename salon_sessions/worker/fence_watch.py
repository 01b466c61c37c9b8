"""The fence rule (`worker.fence`) applied in the worker's event loop, every second: record
that the loop runs, drop WhatsApp (lose the lock) when the last lock proof is overdue, stop
the worker when it stays unproven, and write the state file the liveness probe reads.

Apart from `worker.fence` because that module is the rule and the probe (standard library
only, run every few seconds in the pod), and apart from the lifecycle because it must run
from the worker's first instant - before the database and Redis are reached - whatever the
path that should have noticed a lost lock.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from salon_sessions.worker import fence
from salon_sessions.worker.lock import SessionLock

log = logging.getLogger(__name__)
TICK_S = 1.0


@dataclass(eq=False, kw_only=True)
class LoopFence:
    """The fence rule, judged every tick in the event loop."""

    lock: SessionLock
    bounds: fence.FenceBounds
    company_id: str
    stopping: asyncio.Event
    exit: Callable[[int, str], None]
    """Stop the worker with this exit status, for this reason."""
    file: Path = field(default_factory=fence.state_file)
    tick_at: float = field(default_factory=time.monotonic)
    holding_since: float | None = None
    """Set from acquiring the lock until the driver is closed again (WhatsApp may be open)."""

    def state(self) -> fence.FenceState:
        """A snapshot for the fence rule (also read by the watchdog thread)."""
        return fence.FenceState(tick_at=self.tick_at, holding_since=self.holding_since,
                                proved_at=self.lock.proved_at, lost_at=self.lock.lost_at)

    async def run(self) -> None:
        """Every tick: record that the loop runs, apply the fence rule, and write the state
        file the liveness probe reads."""
        while True:
            self.tick_at = time.monotonic()
            state = self.state()
            verdict, why = fence.judge(state, self.bounds, self.tick_at)
            if verdict is fence.Verdict.FENCE:
                self.lock.lose(why)
            elif verdict is fence.Verdict.EXIT and not self.stopping.is_set():
                self.exit(fence.EXIT_LOCK_LOST, f"fence: {why}")
                self.lock.lose(why)
            try:
                await asyncio.to_thread(fence.write_state_file, state, self.bounds,
                                        self.file, self.lock.backend_pid)
            except OSError as exc:
                log.warning("fence state file not written: %s", exc,
                            extra={"company_id": self.company_id})
            await asyncio.sleep(TICK_S)
