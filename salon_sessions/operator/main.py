"""`salon-sessions operator`: run the operator until SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from typing import Any

from pydantic import ValidationError

from salon_sessions.core.logs import configure_logging
from salon_sessions.core.settings import OperatorSettings

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
    try:
        settings = OperatorSettings.from_env()
    except ValidationError as exc:
        fields = ", ".join(".".join(str(p) for p in e["loc"]) for e in exc.errors())
        print(f"salon-sessions operator: invalid settings: {fields}\n{exc}", file=sys.stderr)
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
