"""`salon-sessions operator`: run the operator until SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import logging
from typing import Any

from salon_sessions.core.logs import configure_logging
from salon_sessions.core.settings import OperatorSettings, load_settings

log = logging.getLogger(__name__)


def register(sub: Any) -> None:
    p = sub.add_parser(
        "operator", help="run the kopf operator that reconciles SalonSessions",
        description="Configured by SALON_* environment variables (see docs/OPERATOR.md): "
                    "SALON_DATABASE_URL, SALON_REDIS_URL, SALON_NAMESPACE, "
                    "SALON_WORKER_IMAGE, ...; the Kubernetes API from the in-cluster "
                    "service account or $KUBECONFIG.")
    p.set_defaults(handler=run)


def run(_: argparse.Namespace) -> int:
    settings = load_settings(OperatorSettings, "operator")
    if settings is None:
        return 2
    configure_logging("operator", level=settings.log_level, json_lines=settings.log_json)
    for handler in logging.getLogger().handlers:
        handler.addFilter(_drop_kopf_extras)
    return asyncio.run(_serve(settings))


def _drop_kopf_extras(record: logging.LogRecord) -> bool:
    """kopf attaches its whole settings object (and internals) to each record: not worth a
    log line's bytes."""
    for name in ("settings", "k8s_skip"):
        record.__dict__.pop(name, None)
    return True


async def _serve(settings: OperatorSettings) -> int:
    from salon_sessions.operator.app import Operator
    from salon_sessions.operator.metrics import OperatorMetrics

    operator = Operator(settings, OperatorMetrics())
    scope = settings.namespace or "all namespaces"
    log.info("operator %s starting: watching %s, database %s, Redis %s", settings.identity,
             scope, settings.database_url, settings.redis_url)
    code = await operator.run()
    log.info("operator stopped (exit %d)", code)
    return code
