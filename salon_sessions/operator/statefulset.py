"""The StatefulSet that runs one session's worker (1 replica, 0 while suspended).

Pure: a SalonSession (its typed view, `core.salon_session`) and the operator's settings
in, a StatefulSet body out (for a server-side apply). Secrets are referenced by name
(`secretKeyRef`), never copied; the database and Redis URLs come from the session's own
Secret (`credentials_secret`), which `operator.tenancy` writes.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Final
from urllib.parse import urlsplit

from salon_sessions.core.resource import API_VERSION, KIND, expire_after_seconds
from salon_sessions.core.salon_session import SalonSession, SalonSessionSpec
from salon_sessions.core.settings import OperatorSettings

NAME_LABEL: Final = "app.kubernetes.io/name"
COMPONENT_LABEL: Final = "app.kubernetes.io/component"
INSTANCE_LABEL: Final = "app.kubernetes.io/instance"
MANAGED_BY_LABEL: Final = "app.kubernetes.io/managed-by"
COMPANY_LABEL: Final = "wa.salonsessions.io/company-id"
HASH_ANNOTATION: Final = "wa.salonsessions.io/config-hash"
APP: Final = "salon-sessions"
COMPONENT: Final = "session-worker"
MANAGED_BY: Final = "salon-sessions-operator"
CONTAINER: Final = "worker"
REDIS_URL_KEY: Final = "redis-url"
DATABASE_URL_KEY: Final = "database-url"
LOCK_DATABASE_URL_KEY: Final = "lock-database-url"
"""Only with `worker_database_pooler_url`: PostgreSQL directly, for the session lock (and
the worker's migration check); `database-url` is then the pooler's."""


def credentials_secret(name: str) -> str:
    """The Secret with one session's own credentials: `<statefulset name>-credentials`."""
    return f"{name}-credentials"


LIVENESS_PROBE: Final = {
    # the worker's event loop writes its fence state to /tmp every second; the probe fails
    # when the loop is stuck or the worker holds the session without a recent lock proof
    # (salon_sessions/worker/fence.py). exec, not httpGet: it works with metrics disabled
    # and needs no port of its own.
    "exec": {"command": ["python", "-m", "salon_sessions.worker.fence"]},
    "initialDelaySeconds": 10,
    "periodSeconds": 5,
    "timeoutSeconds": 5,
    "failureThreshold": 3,
    "terminationGracePeriodSeconds": 10,
}
"""No readinessProbe: a session pod serves no traffic (no Service routes to it), and
whether it is the holder or a standby is reported through the status, not readiness."""
def _credentials_inputs(settings: OperatorSettings) -> str:
    """What `operator.tenancy` derives the Secret's content from (besides the session's
    own ids): the key of the passwords, where Redis is (not the operator's own password),
    the database URL (`direct_database_url`: the operator's `database_url` unless it set a
    `lock_database_url`) and the workers' pooler when there is one (appended only then, so
    that the hash of a deployment without one is what it was before the setting existed).
    A change rewrites every Secret; the pods must restart to read it."""
    redis = urlsplit(settings.redis_url.get_secret_value())
    parts: tuple[str, ...] = (
        settings.credentials_key.get_secret_value(), redis.scheme, redis.hostname or "",
        str(redis.port), redis.path, redis.query,
        settings.direct_database_url.get_secret_value())
    if settings.worker_database_pooler_url is not None:
        parts += ("pooler", settings.worker_database_pooler_url.get_secret_value())
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]


def selector_labels(name: str) -> dict[str, str]:
    return {NAME_LABEL: APP, COMPONENT_LABEL: COMPONENT, INSTANCE_LABEL: name}


def labels(name: str, company_id: str) -> dict[str, str]:
    # the label value drops nothing: company_<digits> is a valid label value
    return {**selector_labels(name), MANAGED_BY_LABEL: MANAGED_BY, COMPANY_LABEL: company_id}


def _image(spec: SalonSessionSpec, settings: OperatorSettings) -> str:
    return spec.image or settings.worker_image


def resources(spec: SalonSessionSpec,
              settings: OperatorSettings) -> dict[str, dict[str, str]]:
    """The spec's resources over the operator's defaults, field by field."""
    wanted = spec.resources
    defaults: dict[str, dict[str, str | None]] = {
        "requests": {"cpu": settings.worker_cpu_request,
                     "memory": settings.worker_memory_request},
        "limits": {"cpu": settings.worker_cpu_limit, "memory": settings.worker_memory_limit},
    }
    out: dict[str, dict[str, str]] = {}
    for kind, values in defaults.items():
        merged = {k: v for k, v in values.items() if v is not None}
        merged.update(wanted.get(kind) or {})
        if merged:
            out[kind] = merged
    return out


LINK_EXPIRE_AFTER_DEFAULT_S: Final = expire_after_seconds(None)
"""Also the worker's default: the pod gets `SALON_LINK_EXPIRE_AFTER_S` only for another
value (`spec.link.expireAfter`)."""


def config_hash(spec: SalonSessionSpec, settings: OperatorSettings) -> str:
    """Hash of the inputs whose change must roll the pod: image, driver, proxy, resources,
    the onboarding bound (plus the operator-wide worker settings)."""
    inputs: dict[str, Any] = {
        "image": _image(spec, settings),
        "driver": spec.driver.value,
        "proxy": spec.proxy.to_dict() if spec.proxy is not None else None,
        "resources": resources(spec, settings),
        "env": sorted(settings.worker_env.items()),
        "go": [settings.worker_bot_label, settings.worker_go_memory_limit_percent,
               settings.worker_go_gc_percent],
        "heartbeat": settings.worker_heartbeat_ttl_s,
        "credentials": _credentials_inputs(settings),
    }
    if (expire := spec.link.expire_after_s) != LINK_EXPIRE_AFTER_DEFAULT_S:
        # only then, like the pooler: an operator upgrade restarts no session that keeps
        # the default bound
        inputs["expire_after_s"] = expire
    raw = json.dumps(inputs, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(raw).hexdigest()[:16]


def _secret_env(name: str, secret: str, key: str, optional: bool = False) -> dict[str, Any]:
    ref: dict[str, Any] = {"name": secret, "key": key}
    if optional:
        ref["optional"] = True
    return {"name": name, "valueFrom": {"secretKeyRef": ref}}


def _field_env(name: str, path: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}}


def _limit_env(name: str, resource: str) -> dict[str, Any]:
    """A container resource (in bytes for memory) through the downward API."""
    return {"name": name, "valueFrom": {"resourceFieldRef": {"containerName": CONTAINER,
                                                             "resource": resource}}}


def go_env(settings: OperatorSettings) -> list[dict[str, Any]]:
    """What the worker's Go core (the neonize driver) runs with (`worker/neonize/goenv.py`).

    `NEONIZE_BOT_TAG` is in the pod's environment from the start; `GOMEMLIMIT` and `GOGC`
    are derived by the worker from `SALON_MEMORY_LIMIT_BYTES` (the container's memory limit,
    whatever set it: these settings, the SalonSession's resources or a LimitRange; the
    node's allocatable memory when there is none) before it loads the core."""
    return [
        {"name": "NEONIZE_BOT_TAG", "value": "on" if settings.worker_bot_label else "off"},
        {"name": "SALON_BOT_LABEL", "value": "true" if settings.worker_bot_label else "false"},
        _limit_env("SALON_MEMORY_LIMIT_BYTES", "limits.memory"),
        {"name": "SALON_GO_MEMORY_LIMIT_PERCENT",
         "value": str(settings.worker_go_memory_limit_percent)},
        {"name": "SALON_GO_GC_PERCENT", "value": str(settings.worker_go_gc_percent)},
    ]


def database_env(name: str, settings: OperatorSettings) -> list[dict[str, Any]]:
    """The worker's PostgreSQL URLs, from its own Secret. Behind a transaction-mode PgBouncer
    (`worker_database_pooler_url`) the tables (and whatsmeow's store) go through it and the
    session lock goes to PostgreSQL directly: a session-level advisory lock would be lost
    between two transactions of a transaction pooler."""
    secret = credentials_secret(name)
    env = [_secret_env("SALON_DATABASE_URL", secret, DATABASE_URL_KEY)]
    if settings.worker_database_pooler_url is not None:
        env += [_secret_env("SALON_LOCK_DATABASE_URL", secret, LOCK_DATABASE_URL_KEY),
                {"name": "SALON_DATABASE_POOLER", "value": "transaction"}]
    return env


def worker_env(session: SalonSession, settings: OperatorSettings) -> list[dict[str, Any]]:
    spec, name = session.spec, session.name
    env: list[dict[str, Any]] = [
        {"name": "SALON_COMPANY_ID", "value": spec.company_id},
        {"name": "SALON_SESSION_NAME", "value": name},
        _field_env("SALON_NAMESPACE", "metadata.namespace"),
        _field_env("SALON_POD_NAME", "metadata.name"),
        {"name": "SALON_DRIVER", "value": spec.driver.value},
        *database_env(name, settings),
        _secret_env("SALON_REDIS_URL", credentials_secret(name), REDIS_URL_KEY),
        {"name": "SALON_METRICS_PORT", "value": str(settings.worker_metrics_port)},
        {"name": "SALON_HEARTBEAT_TTL_S", "value": str(settings.worker_heartbeat_ttl_s)},
        {"name": "SALON_LOG_JSON", "value": "true" if settings.worker_log_json else "false"},
        *go_env(settings),
    ]
    if (expire := spec.link.expire_after_s) != LINK_EXPIRE_AFTER_DEFAULT_S:
        env.append({"name": "SALON_LINK_EXPIRE_AFTER_S", "value": str(expire)})
    if spec.proxy is not None:
        env.append(_secret_env("SALON_PROXY_URL", spec.proxy.name, spec.proxy.secret_key))
    if settings.post_connect_secret:
        env.append(_secret_env("SALON_POST_CONNECT_URL", settings.post_connect_secret, "url",
                               optional=True))
    extra = dict(sorted(settings.worker_env.items()))  # managed names are refused there
    env = [e for e in env if e["name"] not in extra]
    env.extend({"name": k, "value": v} for k, v in extra.items())
    return env


def _container(session: SalonSession, settings: OperatorSettings) -> dict[str, Any]:
    spec = session.spec
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": _image(spec, settings),
        "imagePullPolicy": settings.worker_image_pull_policy,
        "command": ["salon-sessions", "worker"],
        "env": worker_env(session, settings),
        "resources": resources(spec, settings),
        "securityContext": {
            "runAsNonRoot": True,
            "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "livenessProbe": LIVENESS_PROBE,
    }
    if settings.worker_metrics_port > 0:
        container["ports"] = [{"name": "metrics", "containerPort": settings.worker_metrics_port,
                               "protocol": "TCP"}]
    return container


def build_statefulset(session: SalonSession, settings: OperatorSettings) -> dict[str, Any]:
    spec = session.spec
    name, namespace = session.name, session.namespace
    all_labels = labels(name, spec.company_id)
    digest = config_hash(spec, settings)
    pod_spec: dict[str, Any] = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": settings.worker_termination_grace_s,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 10001,
            "runAsGroup": 10001,
            "fsGroup": 10001,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [_container(session, settings)],
        "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}],
    }
    if settings.worker_service_account:
        pod_spec["serviceAccountName"] = settings.worker_service_account
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": all_labels,
            "annotations": {HASH_ANNOTATION: digest},
            "ownerReferences": [{
                "apiVersion": API_VERSION, "kind": KIND, "name": name,
                "uid": session.uid, "controller": True, "blockOwnerDeletion": True,
            }],
        },
        "spec": {
            "replicas": 0 if spec.suspend else 1,
            "serviceName": name,
            "podManagementPolicy": "Parallel",
            "updateStrategy": {"type": "RollingUpdate"},
            "persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Delete",
                                                     "whenScaled": "Delete"},
            "selector": {"matchLabels": selector_labels(name)},
            "template": {
                "metadata": {"labels": all_labels, "annotations": {HASH_ANNOTATION: digest}},
                "spec": pod_spec,
            },
        },
    }


def matches(existing: dict[str, Any], desired: dict[str, Any]) -> bool:
    """Whether a watched StatefulSet still has what we applied (replicas, hash, owner)."""
    e_meta, d_meta = existing.get("metadata", {}), desired["metadata"]
    owners = {o.get("uid") for o in e_meta.get("ownerReferences") or []}
    return (
        (existing.get("spec") or {}).get("replicas") == desired["spec"]["replicas"]
        and (e_meta.get("annotations") or {}).get(HASH_ANNOTATION)
        == d_meta["annotations"][HASH_ANNOTATION]
        and d_meta["ownerReferences"][0]["uid"] in owners
    )
