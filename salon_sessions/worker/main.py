"""`salon-sessions worker`: run one session worker until SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
from typing import Any

from prometheus_client import start_http_server

from salon_sessions.core.logs import configure_logging
from salon_sessions.core.resource import DriverName
from salon_sessions.core.settings import WorkerSettings, load_settings
from salon_sessions.worker.neonize import goenv

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("worker", help="run one session worker (inside a session pod)",
                       description="Configured by SALON_* environment variables: "
                       "SALON_COMPANY_ID, SALON_SESSION_NAME, SALON_DRIVER, "
                       "SALON_DATABASE_URL, SALON_REDIS_URL, ...")
    p.set_defaults(handler=run)


def run(_: argparse.Namespace) -> int:
    settings = load_settings(WorkerSettings, "worker")
    if settings is None:
        return 2
    configure_logging("worker", level=settings.log_level, json_lines=settings.log_json,
                      company_id=settings.company_id)
    if settings.driver is DriverName.NEONIZE:
        # before the Go core is loaded and before any thread starts: may re-exec
        goenv.ensure(go_environment(settings))
    metrics_port = 0
    if settings.metrics_port:
        server, _thread = start_http_server(max(settings.metrics_port, 0), addr="0.0.0.0")
        metrics_port = int(server.server_port)
    return asyncio.run(_serve(settings, metrics_port))


def go_environment(settings: WorkerSettings) -> dict[str, str]:
    """What the Go core must find in the environment at exec (`goenv`)."""
    return goenv.go_environment(
        bot_label=settings.bot_label, memory_limit_bytes=settings.memory_limit_bytes,
        memory_limit_percent=settings.go_memory_limit_percent,
        gc_percent=settings.go_gc_percent, explicit=goenv.exec_environment())


SHUTDOWN_DEADLINE_S = 20.0
"""Past this after SIGTERM the worker logs what is still running and exits anyway, inside
the pod's grace period, rather than waiting for SIGKILL."""


def dump_tasks(reason: str) -> None:
    """Log every asyncio task with where it waits (SIGUSR2, or a shutdown that hangs)."""
    for task in asyncio.all_tasks():
        chain: list[str] = []
        awaitable: Any = task.get_coro()
        while awaitable is not None and len(chain) < 20:
            frame = getattr(awaitable, "cr_frame", None) or getattr(awaitable, "ag_frame", None)
            if frame is None:
                chain.append(type(awaitable).__name__)
                break
            chain.append(f"{frame.f_code.co_name}:{frame.f_lineno}")
            awaitable = getattr(awaitable, "cr_await", None) or getattr(awaitable, "ag_await",
                                                                         None)
        log.warning("%s: task %s at %s", reason, task.get_name(), " -> ".join(chain))


async def _serve(settings: WorkerSettings, metrics_port: int) -> int:
    # imported here, after a possible re-exec (`goenv.ensure`), not twice
    from salon_sessions.worker import fence
    from salon_sessions.worker.session_worker import Worker

    worker = Worker(settings, metrics_port=metrics_port)
    loop = asyncio.get_running_loop()

    def on_stop() -> None:
        if not worker.stopping.is_set():
            log.info("stop requested: disconnecting and releasing the session")
            worker.stopping.set()
            loop.call_later(SHUTDOWN_DEADLINE_S, _overdue)

    def _overdue() -> None:
        dump_tasks("shutdown overdue")
        log.error("shutdown took longer than %.0fs; exiting now", SHUTDOWN_DEADLINE_S)
        logging.shutdown()
        os._exit(1)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_stop)
    loop.add_signal_handler(signal.SIGUSR2, dump_tasks, "SIGUSR2")
    log.info("worker starting: session %s, driver %s, pod %s", settings.session_name,
             settings.driver.value, settings.pod_name)
    watchdog = fence.HardExitWatchdog(worker.loop_fence.state, worker.loop_fence.bounds)
    watchdog.start()
    try:
        await worker.run()
    finally:
        watchdog.stop()
    log.info("worker stopped%s", f" (exit {worker.exit_code})" if worker.exit_code else "")
    return worker.exit_code
