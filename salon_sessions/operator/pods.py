"""Worker restarts, seen from the session pods (the operator watches them by label).

A worker that crashes, is OOM-killed or fails its liveness probe is restarted by the
kubelet in the same pod: nothing in Redis says so (the new process simply writes its hash
again), so the operator reads it from the pod: the worker container's `restartCount`. When
it grows within the same pod (same uid), the session gets a Warning Event and
`WorkerHealthy=False` with reason `WorkerRestarted` (until the new process answers a health
ping), and `salon_operator_worker_restarts_total` counts it.

The first sight of a pod (a new pod, or an operator that just started) only records the
count: restarts that happened while no operator ran are not reported.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from salon_sessions.operator.metrics import OperatorMetrics
from salon_sessions.operator.registry import Session
from salon_sessions.operator.statefulset import CONTAINER
from salon_sessions.operator.status_writer import StatusWriter

log = logging.getLogger(__name__)


def worker_container(pod: Mapping[str, Any]) -> tuple[int, str] | None:
    """The worker container's restart count and how its last run ended (None when the
    pod has no status for it yet)."""
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        if status.get("name") != CONTAINER:
            continue
        count = status.get("restartCount")
        if not isinstance(count, int):
            return None
        ended = ((status.get("lastState") or {}).get("terminated") or {})
        reason = str(ended.get("reason") or "unknown")[:64]
        code = ended.get("exitCode")
        detail = f"{reason}, exit code {code}" if isinstance(code, int) else reason
        return count, detail
    return None


def observe_pod(session: Session, pod: Mapping[str, Any], writer: StatusWriter,
                metrics: OperatorMetrics) -> bool:
    """Record the pod's restart count; True when the worker restarted since last seen."""
    uid = str((pod.get("metadata") or {}).get("uid") or "")
    seen = worker_container(pod)
    if not uid or seen is None:
        return False
    count, detail = seen
    before, session.pod = session.pod, (uid, count)
    if before is None or before[0] != uid or count <= before[1]:
        return False
    metrics.worker_restarts.inc(count - before[1])
    log.warning("the worker of %s/%s restarted (%d restarts; last exit: %s)",
                session.namespace, session.name, count, detail,
                extra={"company_id": session.company})
    session.model.worker_restarted(
        f"the worker container restarted ({count} restart{'s' if count != 1 else ''} in "
        f"this pod; last exit: {detail}); waiting for it to answer a health ping")
    writer.mark(session)
    return True
