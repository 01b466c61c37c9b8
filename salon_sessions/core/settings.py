"""One settings object per component, read from `SALON_*` environment variables.

The fields shared by every component, `SecretUrl` and the session worker's settings are in
`core.settings_base` (pydantic alone: the worker does not import pydantic-settings); the
operator, API and migrations read theirs with pydantic-settings over the same field classes.
Validation errors never echo their input (`hide_input_in_errors`).
"""

from __future__ import annotations

import re
import socket
from collections.abc import Callable
from typing import Literal, Self

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from salon_sessions.core.bounds import DEFAULT_MAX_SKEW_S
from salon_sessions.core.resource import DriverName
from salon_sessions.core.settings_base import (
    _REDIS_SCHEMES,
    CommonFields,
    DatabaseFields,
    LogLevel,
    RedisFields,
    SecretUrl,
    WorkerSettings,
    check_scheme,
    load_settings,
)

__all__ = ["ApiSettings", "LogLevel", "MigrateSettings", "OperatorSettings", "SecretUrl",
           "WorkerSettings", "load_settings"]


class _Settings(BaseSettings, CommonFields):
    model_config = SettingsConfigDict(env_prefix="SALON_", extra="ignore", frozen=True,
                                      hide_input_in_errors=True)

    @classmethod
    def from_env(cls) -> Self:
        """Read the environment (required fields come from it, so no arguments)."""
        build: Callable[[], Self] = cls
        return build()


class _Database(_Settings, DatabaseFields):
    pass


class _Redis(_Settings, RedisFields):
    pass


class MigrateSettings(_Database):
    """`salon-sessions migrate ...`"""

    metrics_port: int = 0


_K8S_NAME = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
_ENV_NAME = re.compile(r"^SALON_[A-Z0-9_]+$")
MANAGED_WORKER_ENV: frozenset[str] = frozenset({
    "SALON_COMPANY_ID", "SALON_SESSION_NAME", "SALON_NAMESPACE", "SALON_POD_NAME",
    "SALON_DRIVER", "SALON_DATABASE_URL", "SALON_REDIS_URL", "SALON_PROXY_URL",
    "SALON_POST_CONNECT_URL", "SALON_METRICS_PORT", "SALON_HEARTBEAT_TTL_S",
    "SALON_MEMORY_LIMIT_BYTES", "SALON_BOT_LABEL", "SALON_GO_MEMORY_LIMIT_PERCENT",
    "SALON_GO_GC_PERCENT",
})
"""Worker variables the operator sets itself (secrets only ever through secretKeyRef)."""


class OperatorSettings(_Database, _Redis):
    """`salon-sessions operator`: reconciles SalonSessions, consumes events.

    `redis_url` is the operator's own Redis user (events, pings, state hashes). The workers
    get their credentials from the Secret the operator writes per SalonSession
    (`operator.tenancy`): a Redis user of their own, created with `redis_admin_url` (the
    ACL admin, in its own Secret) and a password derived from `credentials_key`; their
    database URL is, for now, the operator's `database_url`.
    """

    namespace: str | None = Field(
        default=None, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(,[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$",
        description="watch one namespace, or several separated by commas; None = all")
    identity: str = Field(default_factory=socket.gethostname, min_length=1, max_length=253,
                          description="this replica's name in the leader Lease (the pod name)")
    http_host: str = Field(default="0.0.0.0", description="/metrics, /healthz, /readyz")

    # ---- the worker pods
    worker_image: str = Field(default="salon-sessions:dev", min_length=1)
    worker_image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    redis_admin_url: SecretUrl = Field(
        description="Redis URL of the ACL admin user that creates and deletes the session "
                    "users (ACL SETUSER/DELUSER; from its own Secret)")
    credentials_key: SecretStr = Field(
        min_length=32, description="HMAC key the session passwords are derived from (from "
                                   "the same Secret); changing it rolls every session pod")
    credentials_check_s: float = Field(
        default=30.0, gt=0, le=3600,
        description="how often missing session Redis users are re-created (Redis forgets "
                    "ACL SETUSER users on a restart without an aclfile)")
    acl_log_drain_s: float = Field(
        default=15.0, gt=0, le=3600,
        description="how often the leader moves Redis's ACL LOG (refused requests) into "
                    "salon_redis_acl_denials_total and reads PostgreSQL's count of refusals")
    post_connect_secret: str | None = Field(
        default=None, pattern=_K8S_NAME,
        description="optional Secret with the post-connect webhook URL (key `url`)")
    worker_service_account: str | None = Field(default=None, pattern=_K8S_NAME)
    worker_metrics_port: int = Field(
        default=9090, ge=0, le=65535, description="the workers' /metrics port; 0: none")
    worker_heartbeat_ttl_s: int = Field(default=30, ge=5, le=3600)
    worker_termination_grace_s: int = Field(default=30, ge=1, le=3600)
    worker_log_json: bool = True
    worker_cpu_request: str = "50m"
    worker_memory_request: str = "128Mi"
    worker_cpu_limit: str | None = "1"
    worker_memory_limit: str | None = "512Mi"
    worker_bot_label: bool = Field(
        default=False, description="let neonize label every message the workers send to a "
                                   "phone-number chat as sent by a bot (NEONIZE_BOT_TAG=on)")
    worker_go_memory_limit_percent: int = Field(
        default=50, ge=10, le=90,
        description="share of each worker container's memory limit given to Go as "
                    "GOMEMLIMIT (the rest is Python's)")
    worker_go_gc_percent: int = Field(default=100, ge=10, le=1000,
                                      description="GOGC of the workers' Go core")

    @property
    def namespaces(self) -> list[str]:
        """The watched namespaces; empty = all of them."""
        return self.namespace.split(",") if self.namespace else []

    @field_validator("redis_admin_url")
    @classmethod
    def _admin_scheme(cls, value: SecretUrl) -> SecretUrl:
        return check_scheme(value, _REDIS_SCHEMES, "SALON_REDIS_ADMIN_URL")

    @field_validator("worker_cpu_limit", "worker_memory_limit", mode="before")
    @classmethod
    def _no_limit(cls, value: object) -> object:
        """An empty value (`SALON_WORKER_CPU_LIMIT=`) means no limit."""
        return None if isinstance(value, str) and not value.strip() else value
    worker_env: dict[str, str] = Field(
        default_factory=dict,
        description="extra SALON_* variables for every worker, as JSON (e.g. simulator "
                    "timings); never secrets, never the variables the operator manages")

    # ---- status, events, health
    status_batch_s: float = Field(default=0.2, ge=0, le=10,
                                  description="coalescing window of status patches")
    status_lazy_s: float = Field(default=30.0, ge=0, le=600,
                                 description="delay of patches that only move lastEventAt")
    status_concurrency: int = Field(default=16, ge=1, le=256)
    heartbeat_check_s: float = Field(default=10.0, gt=0, le=600)
    ping_interval_s: float = Field(default=15.0, gt=0, le=3600)
    ping_timeout_s: float = Field(default=5.0, gt=0, le=600)
    ping_miss_threshold: int = Field(default=3, ge=1, le=100)
    max_event_skew_s: float = Field(
        default=DEFAULT_MAX_SKEW_S, gt=0, le=86400,
        description="events and state hashes numbered or dated further ahead of the "
                    "operator's clock are refused (core.bounds: they would freeze the status)")
    status_resync_s: float = Field(
        default=120.0, gt=0, le=3600,
        description="safety net: every SalonSession's .status is compared with the rendered "
                    "one this often (a foreign edit the watch delivers is corrected at once)")

    # ---- deletion
    cleanup_attempts: int = Field(default=5, ge=1, le=100)
    cleanup_retry_s: float = Field(default=3.0, gt=0, le=600)
    pod_stop_timeout_s: float = Field(default=60.0, gt=0, le=3600)
    pending_cleanup_retry_s: float = Field(
        default=30.0, gt=0, le=3600,
        description="how often the cleanups that gave up are tried again")
    pending_cleanup_configmap: str = Field(
        default="salon-sessions-operator-pending-cleanups", pattern=_K8S_NAME,
        description="ConfigMap (in the Lease's namespace) recording the cleanups to finish")

    # ---- leader election (2 replicas, one active)
    leader_election: bool = True
    lease_name: str = Field(default="salon-sessions-operator", pattern=_K8S_NAME)
    lease_namespace: str | None = Field(default=None, description="default: `namespace`, "
                                        "else the pod's namespace, else `default`")
    lease_duration_s: float = Field(default=15.0, gt=0, le=600)
    lease_renew_s: float = Field(default=5.0, gt=0, le=600)
    kopf_log_level: LogLevel = "WARNING"

    @field_validator("worker_env")
    @classmethod
    def _worker_env(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            if not _ENV_NAME.fullmatch(name):
                raise ValueError("worker_env keys must be SALON_* variable names")
            if name in MANAGED_WORKER_ENV:
                raise ValueError(f"worker_env must not set {name} (managed by the operator)")
        return value


class ApiSettings(_Database, _Redis):
    """`salon-sessions api`: the onboarding API and page.

    `admin_token` (management calls) and `token_secret` (the HMAC key of company-scoped
    onboarding tokens) come from a Secret; `salon-sessions api` refuses to start without
    them. Every limit below has a safe default.
    """

    namespace: str = Field(default="default", description="where SalonSessions are created")
    host: str = "0.0.0.0"
    port: int = Field(default=8080, ge=1, le=65535)
    admin_token: SecretStr | None = Field(
        default=None, description="bearer token of management calls (from a Secret)")
    token_secret: SecretStr | None = Field(
        default=None, description="HMAC-SHA256 key of company onboarding tokens (Secret)")
    token_ttl_s: int = Field(default=7 * 24 * 3600, ge=60, le=90 * 24 * 3600,
                             description="default lifetime of an onboarding token")
    public_url: str | None = Field(
        default=None, pattern=r"^https?://[^\s]+$",
        description="base URL of onboarding links; default: the request's own base URL")
    kubeconfig: str | None = Field(
        default=None, description="kubeconfig file; default: in-cluster service account")
    default_driver: DriverName = Field(
        default=DriverName.NEONIZE, description="driver of sessions created without one")
    max_body_bytes: int = Field(default=16 * 1024, ge=256, le=1024 * 1024)
    ws_queue_size: int = Field(default=256, ge=1, le=100_000,
                               description="events buffered per WebSocket client")
    ws_send_timeout_s: float = Field(default=10.0, gt=0, le=300)
    ws_heartbeat_s: float = Field(default=15.0, gt=0, le=300)
    ws_max_clients_per_company: int = Field(default=50, ge=1, le=10_000)
    redis_max_connections: int = Field(
        default=100, ge=2, le=10_000,
        description="Redis connections of this process; beyond, a command waits for one")
    redis_pool_timeout_s: float = Field(
        default=5.0, gt=0, le=60, description="how long a command waits for a free "
        "Redis connection before the request fails with 503")
    pairing_codes_per_minute: int = Field(
        default=6, ge=1, le=1000, description="pairing-code requests per company per minute")
    pong_timeout_s: float = Field(default=5.0, gt=0, le=60)
    control_timeout_s: float = Field(default=10.0, gt=0, le=120)
    kube_timeout_s: float = Field(default=10.0, gt=0, le=120)
