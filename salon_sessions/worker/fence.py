"""The fencing rule: when a worker must drop WhatsApp, when it must exit, when it is live.

One live WhatsApp connection per session rests on the PostgreSQL advisory lock, and a
worker may believe it holds a lock that PostgreSQL has already released (issue 10: asyncpg
broke its own protocol after a restart and neither its termination callback nor the
keep-alive said so). So the rule does not trust any single detection path: it judges the
*age of the last proof* that PostgreSQL grants this worker its lock, whoever keeps proving.

    holding, last proof older than proof_deadline_s (3 x check)  -> FENCE: drop WhatsApp now
    holding, last proof older than lost_exit_s                   -> EXIT: the process goes
    lost and not re-acquired for lost_exit_s                     -> EXIT
    event loop has not ticked for LOOP_STALL_S                    -> not live (probe)

The same `judge` runs in the event loop (fences and exits gracefully), in a watchdog thread
(exits hard when the loop cannot), and in the liveness probe, a separate process that reads
the state file the loop writes on every tick (`python -m salon_sessions.worker.fence`).
It uses `time.monotonic()` (CLOCK_MONOTONIC, one clock for every process on the host).
Standard library only: the probe runs every few seconds in the pod.
"""

from __future__ import annotations

import enum
import json
import logging
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

log = logging.getLogger(__name__)

LOOP_STALL_S = 10.0
"""The event loop ticks every second; this long without a tick is a stuck worker."""

EXIT_LOCK_LOST = 75
"""Exit status of a worker that could not prove or re-acquire its lock in time (EX_TEMPFAIL):
the pod restarts it."""

HARD_EXIT_GRACE_S = 10.0
"""How long the watchdog thread lets the event loop exit gracefully before `os._exit`."""

STATE_FILE_NAME = "salon-worker-fence.json"


class Verdict(enum.Enum):
    OK = "ok"
    FENCE = "fence"
    EXIT = "exit"


@dataclass(frozen=True, slots=True)
class FenceBounds:
    check_s: float
    """The holder proves its lock at least this often (SALON_LOCK_CHECK_S)."""
    lost_exit_s: float
    """Unproven this long: exit (SALON_LOCK_LOST_EXIT_S)."""

    @property
    def proof_deadline_s(self) -> float:
        return 3 * self.check_s


@dataclass(frozen=True, slots=True)
class FenceState:
    """A snapshot, in `time.monotonic()` seconds."""

    tick_at: float
    """The event loop's last tick."""
    holding_since: float | None = None
    """Set while the worker may have WhatsApp open (from acquiring until the driver is closed)."""
    proved_at: float | None = None
    """Last time PostgreSQL confirmed the lock is granted to this worker's connection."""
    lost_at: float | None = None
    """When the lock was lost (not released on purpose); cleared by re-acquiring it."""


def judge(state: FenceState, bounds: FenceBounds, now: float) -> tuple[Verdict, str]:
    if state.holding_since is not None:
        proof = state.proved_at if state.proved_at is not None else state.holding_since
        age = now - proof
        if age > bounds.lost_exit_s:
            return Verdict.EXIT, f"holding the session without a lock proof for {age:.1f}s"
        if age > bounds.proof_deadline_s:
            return Verdict.FENCE, f"last lock proof {age:.1f}s ago"
    if state.lost_at is not None and now - state.lost_at > bounds.lost_exit_s:
        return Verdict.EXIT, (f"session lock lost {now - state.lost_at:.1f}s ago and not "
                              "re-acquired")
    return Verdict.OK, ""


def liveness(state: FenceState, bounds: FenceBounds, now: float) -> tuple[bool, str]:
    """What the liveness probe says: the loop ticks and the worker has no reason to exit."""
    stalled = now - state.tick_at
    if stalled > LOOP_STALL_S:
        return False, f"event loop stalled for {stalled:.1f}s"
    verdict, why = judge(state, bounds, now)
    return verdict is not Verdict.EXIT, why or "ok"


def state_file() -> Path:
    """In the pod's /tmp (an emptyDir); TMPDIR moves it where several workers share one
    host (the tests' host-run workers)."""
    return Path(tempfile.gettempdir()) / STATE_FILE_NAME


def write_state_file(state: FenceState, bounds: FenceBounds, path: Path,
                     lock_backend_pid: int | None = None) -> None:
    """Atomically (rename): the probe never reads half a file. The lock's backend pid lets
    an operator (and the tests) match the worker with `pg_locks`."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps({"pid": os.getpid(), "lock_backend_pid": lock_backend_pid,
                               "state": asdict(state), "bounds": asdict(bounds)}))
    tmp.replace(path)


def read_state_file(path: Path) -> tuple[FenceState, FenceBounds]:
    raw = json.loads(path.read_text())
    return FenceState(**raw["state"]), FenceBounds(**raw["bounds"])


def probe(path: Path | None = None) -> int:
    """The liveness probe: 0 when live, 1 (with the reason on stdout) when not."""
    path = path or state_file()
    try:
        state, bounds = read_state_file(path)
    except (OSError, ValueError, TypeError, KeyError) as exc:
        print(f"no fence state in {path}: {type(exc).__name__}")
        return 1
    ok, why = liveness(state, bounds, time.monotonic())
    print(why)
    return 0 if ok else 1


class HardExitWatchdog(threading.Thread):
    """The last resort, independent of the event loop: when `judge` says EXIT and the loop
    has not exited within `HARD_EXIT_GRACE_S` (stuck, or blocked in a driver call while
    the driver's own threads keep WhatsApp open), exit the process at once; the kernel
    closes every socket, PostgreSQL frees the lock, and the pod restarts."""

    def __init__(self, snapshot: Callable[[], FenceState], bounds: FenceBounds,
                 period_s: float = 1.0) -> None:
        super().__init__(name="fence-watchdog", daemon=True)
        self._snapshot = snapshot
        self._bounds = bounds
        self._period_s = period_s
        self._stop = threading.Event()

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        exit_since: float | None = None
        while not self._stop.wait(self._period_s):
            now = time.monotonic()
            verdict, why = judge(self._snapshot(), self._bounds, now)
            if verdict is not Verdict.EXIT:
                exit_since = None
                continue
            exit_since = exit_since if exit_since is not None else now
            if now - exit_since >= HARD_EXIT_GRACE_S:
                log.critical("fence: %s; the event loop did not exit, exiting now", why)
                for handler in logging.getLogger().handlers:
                    handler.flush()
                os._exit(EXIT_LOCK_LOST)


if __name__ == "__main__":
    sys.exit(probe())
