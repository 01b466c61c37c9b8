"""`salon-sessions worker`: run one session worker until SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from prometheus_client import start_http_server
from pydantic import ValidationError

from salon_sessions.core.logs import configure_logging
from salon_sessions.core.settings import WorkerSettings
from salon_sessions.worker.runtime import Worker

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("worker", help="run one session worker (inside a session pod)",
                       description="Configured by SALON_* environment variables: "
                       "SALON_COMPANY_ID, SALON_SESSION_NAME, SALON_DRIVER, "
                       "SALON_DATABASE_URL, SALON_REDIS_URL, ...")
    p.set_defaults(handler=run)


def run(_: argparse.Namespace) -> int:
    try:
        settings = WorkerSettings()  # type: ignore[call-arg]  # from the environment
    except ValidationError as exc:
        fields = ", ".join(".".join(str(p) for p in e["loc"]) for e in exc.errors())
        print(f"salon-sessions worker: invalid settings: {fields}\n{exc}", file=sys.stderr)
        return 2
    configure_logging("worker", level=settings.log_level, json_lines=settings.log_json,
                      company_id=settings.company_id)
    metrics_port = 0
    if settings.metrics_port:
        server, _thread = start_http_server(max(settings.metrics_port, 0), addr="0.0.0.0")
        metrics_port = int(server.server_port)
    return asyncio.run(_serve(settings, metrics_port))


async def _serve(settings: WorkerSettings, metrics_port: int) -> int:
    worker = Worker(settings, metrics_port=metrics_port)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, worker.stopping.set)
    log.info("worker starting: session %s, driver %s, pod %s", settings.session_name,
             settings.driver.value, settings.pod_name)
    await worker.run()
    log.info("worker stopped")
    return 0
