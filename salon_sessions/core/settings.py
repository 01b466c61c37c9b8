"""One settings object per component, read from `SALON_*` environment variables.

Database and Redis URLs come from Kubernetes Secrets; they are `SecretUrl`s, whose `str`,
`repr` and JSON dump show the URL with its password masked. Only `get_secret_value()`
(called where a connection is opened) returns the real URL. Validation errors never echo
their input (`hide_input_in_errors`).
"""

from __future__ import annotations

import re
import socket
import sys
from collections.abc import Callable
from typing import Literal, Self, TypeVar

from pydantic import (
    Field,
    Secret,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from salon_sessions.core.bounds import DEFAULT_MAX_SKEW_S
from salon_sessions.core.company import CompanyId
from salon_sessions.core.events import SESSION_NAME_PATTERN
from salon_sessions.core.phone import valid_region
from salon_sessions.core.redact import redact_url
from salon_sessions.core.resource import (
    LINK_EXPIRE_AFTER_MAX_S,
    LINK_EXPIRE_AFTER_MIN_S,
    DriverName,
)


class SecretUrl(Secret[str]):
    """A URL with credentials; displays as `scheme://user:***@host:port/path`."""

    def _display(self) -> str:
        return redact_url(self.get_secret_value())


LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]
_DB_SCHEMES = ("postgres://", "postgresql://")
_REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


class _Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SALON_", extra="ignore", frozen=True,
                                      hide_input_in_errors=True)

    log_level: LogLevel = "INFO"
    log_json: bool = True
    metrics_port: int = Field(default=9090, ge=0, le=65535,
                              description="Prometheus /metrics port; 0 disables it")

    @classmethod
    def from_env(cls) -> Self:
        """Read the environment (required fields come from it, so no arguments)."""
        build: Callable[[], Self] = cls
        return build()


S = TypeVar("S", bound=_Settings)


def load_settings(cls: type[S], command: str) -> S | None:
    """`cls` from the environment, or None after telling stderr which fields are invalid
    (names and reasons only: validation errors never echo values)."""
    try:
        return cls.from_env()
    except ValidationError as exc:
        fields = ", ".join(".".join(str(p) for p in e["loc"]) for e in exc.errors())
        print(f"salon-sessions {command}: invalid settings: {fields}\n{exc}", file=sys.stderr)
        return None


def _scheme(value: SecretUrl, schemes: tuple[str, ...], what: str) -> SecretUrl:
    if not value.get_secret_value().startswith(schemes):
        raise ValueError(f"{what} must start with one of {', '.join(schemes)}")
    return value


DatabasePooler = Literal["none", "transaction"]


class _Database(_Settings):
    database_url: SecretUrl = Field(description="PostgreSQL DSN (from a Secret); may point "
                                    "at a transaction-mode PgBouncer (`database_pooler`)")
    lock_database_url: SecretUrl | None = Field(
        default=None,
        description="PostgreSQL reached directly, never through a transaction pooler: the "
                    "session lock and migrations hold session-level advisory locks, which "
                    "a transaction-mode PgBouncer would drop between transactions. "
                    "Default: `database_url`")
    database_pooler: DatabasePooler = Field(
        default="none",
        description="`transaction` when `database_url` goes through a transaction-mode "
                    "PgBouncer: asyncpg's named prepared statements are turned off")

    @field_validator("database_url", "lock_database_url")
    @classmethod
    def _database_scheme(cls, value: SecretUrl | None,
                         info: ValidationInfo) -> SecretUrl | None:
        if value is None:
            return None
        return _scheme(value, _DB_SCHEMES, f"SALON_{(info.field_name or '').upper()}")

    @property
    def direct_database_url(self) -> SecretUrl:
        """Where session-level advisory locks work: `lock_database_url` or `database_url`."""
        return self.lock_database_url or self.database_url


class _Redis(_Settings):
    redis_url: SecretUrl = Field(description="Redis URL (from a Secret)")

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: SecretUrl) -> SecretUrl:
        return _scheme(value, _REDIS_SCHEMES, "SALON_REDIS_URL")


class _PhoneRegion(_Settings):
    """`SALON_DEFAULT_REGION`: how typed phone numbers are read (`core.phone.parse_phone`);
    the same rule in the API and the worker."""

    default_region: str | None = Field(
        default=None, description="ISO 3166-1 region whose national phone formats are "
        "accepted (`8 916 123-45-67` with RU); unset: international numbers only")

    @field_validator("default_region", mode="before")
    @classmethod
    def _region(cls, value: object) -> str | None:
        return valid_region(value) if isinstance(value, str) else None


class MigrateSettings(_Database):
    """`salon-sessions migrate ...`"""

    metrics_port: int = 0


class QrSettings(_Redis):
    """`salon-sessions qr <company>`: only `SALON_REDIS_URL` is needed."""

    metrics_port: int = 0


_K8S_NAME = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
_ENV_NAME = re.compile(r"^SALON_[A-Z0-9_]+$")
MANAGED_WORKER_ENV: frozenset[str] = frozenset({
    "SALON_COMPANY_ID", "SALON_SESSION_NAME", "SALON_NAMESPACE", "SALON_POD_NAME",
    "SALON_DRIVER", "SALON_DATABASE_URL", "SALON_LOCK_DATABASE_URL",
    "SALON_DATABASE_POOLER", "SALON_REDIS_URL", "SALON_PROXY_URL",
    "SALON_POST_CONNECT_URL", "SALON_METRICS_PORT", "SALON_HEARTBEAT_TTL_S",
    "SALON_MEMORY_LIMIT_BYTES", "SALON_BOT_LABEL", "SALON_GO_MEMORY_LIMIT_PERCENT",
    "SALON_GO_GC_PERCENT", "SALON_LINK_EXPIRE_AFTER_S",
})
"""Worker variables the operator sets itself (secrets only ever through secretKeyRef)."""


class OperatorSettings(_Database, _Redis):
    """`salon-sessions operator`: reconciles SalonSessions, consumes events.

    `redis_url` is the operator's own Redis user (events, pings, state hashes). The workers
    get their credentials from the Secret the operator writes per SalonSession
    (`operator.tenancy`): a Redis user of their own, created with `redis_admin_url` (the
    ACL admin, in its own Secret) and a password derived from `credentials_key`, and a
    PostgreSQL role of their own on the server of `direct_database_url` (through
    `worker_database_pooler_url` for everything but the session lock when that is set).
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
    worker_database_pooler_url: SecretUrl | None = Field(
        default=None,
        description="a transaction-mode PgBouncer for the workers (postgresql://host:6432/db; "
                    "its credentials, if any, are replaced by each session's own role): "
                    "their Secret's `database-url` points there and `lock-database-url` at "
                    "PostgreSQL directly (`direct_database_url`), and they run with "
                    "SALON_DATABASE_POOLER=transaction. None: PostgreSQL directly")

    @property
    def namespaces(self) -> list[str]:
        """The watched namespaces; empty = all of them."""
        return self.namespace.split(",") if self.namespace else []

    @field_validator("redis_admin_url")
    @classmethod
    def _admin_scheme(cls, value: SecretUrl) -> SecretUrl:
        return _scheme(value, _REDIS_SCHEMES, "SALON_REDIS_ADMIN_URL")

    @field_validator("worker_database_pooler_url")
    @classmethod
    def _pooler_scheme(cls, value: SecretUrl | None) -> SecretUrl | None:
        if value is None:
            return None
        return _scheme(value, _DB_SCHEMES, "SALON_WORKER_DATABASE_POOLER_URL")

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


class WorkerSettings(_Database, _Redis, _PhoneRegion):
    """`salon-sessions worker`: one session, inside its pod."""

    company_id: CompanyId
    session_name: str = Field(pattern=SESSION_NAME_PATTERN)
    namespace: str = Field(default="default", description="the SalonSession's namespace")
    pod_name: str = Field(default_factory=socket.gethostname, min_length=1,
                          description="this pod (consumer name of the outbound stream)")
    driver: DriverName = DriverName.NEONIZE
    metrics_port: int = Field(
        default=9090, ge=-1, le=65535,
        description="Prometheus /metrics port; 0 disables it, -1 picks a free port and "
                    "publishes it in the state hash (workers run as host processes by the "
                    "tests and benchmarks; the operator never sets -1)")
    heartbeat_ttl_s: int = Field(default=30, ge=5, le=3600)
    link_expire_after_s: int = Field(
        default=30 * 60, ge=LINK_EXPIRE_AFTER_MIN_S, le=LINK_EXPIRE_AFTER_MAX_S,
        description="spec.link.expireAfter in seconds (set by the operator): an onboarding "
                    "without a link this long stops asking WhatsApp for codes")
    lock_check_s: float = Field(default=1.0, gt=0, le=30,
                                description="how often the holder proves that PostgreSQL "
                                            "still grants it the session lock")
    lock_lost_exit_s: float = Field(
        default=30.0, gt=0, le=3600,
        description="exit (the pod restarts) after this long without proving or re-acquiring "
                    "a held lock; more than 3 x lock_check_s")
    migration_wait_s: float = Field(
        default=300.0, ge=0, le=3600,
        description="a starting worker waits this long for pending schema migrations (the "
                    "Helm hook or `salon-sessions migrate up` applies them), then exits; 0: "
                    "check once")
    proxy_url: SecretUrl | None = Field(default=None,
                                        description="SOCKS5/HTTP proxy (from the spec's Secret)")
    post_connect_url: SecretUrl | None = Field(
        default=None, description="webhook called after connecting (may carry a token)")
    post_connect_hook: str = Field(default="marketplace_activation",
                                   pattern=r"^[a-z][a-z0-9_]{0,63}$")
    bot_label: bool = Field(
        default=False,
        description="let neonize add its bot node to messages sent to phone-number chats "
                    "(recipients see them labelled as sent by a bot); off: NEONIZE_BOT_TAG=off")
    memory_limit_bytes: int | None = Field(
        default=None, ge=0, description="the container's memory limit (the operator passes "
                                        "limits.memory through the downward API); GOMEMLIMIT "
                                        "is derived from it")
    go_memory_limit_percent: int = Field(
        default=50, ge=10, le=90,
        description="GOMEMLIMIT as a share of memory_limit_bytes; the rest is Python's")
    go_gc_percent: int = Field(default=100, ge=10, le=1000,
                               description="GOGC of the Go core (neonize driver)")
    simulator_first_qr_s: float = Field(default=60.0, gt=0, le=600)
    simulator_qr_period_s: float = Field(default=20.0, gt=0, le=600)
    simulator_code_ttl_s: float = Field(default=180.0, gt=0, le=3600)
    neonize_watchdog_s: float = Field(
        default=120.0, ge=10, le=3600,
        description="neonize: a linked client not connected this long is restarted")
    neonize_stream_replaced_retry_s: float = Field(
        default=30.0, ge=0, le=3600,
        description="neonize: the pause before the one retry after a replaced stream")
    # ---- the message bridge (docs/BOT.md) ------------------------------------------------
    stream_retention_s: float = Field(
        default=7 * 86400.0, ge=60, le=90 * 86400.0,
        description="inbound and results entries that a consumer group of the bot has not "
                    "acknowledged are kept this long, then dropped (counted and alerted on "
                    "first); acknowledged entries are trimmed at once")
    stream_max_entries: int = Field(
        default=100_000, ge=1000, le=10_000_000,
        description="a memory guard per stream: beyond it the oldest entries are dropped even "
                    "unacknowledged (counted; an alert fires at 80%)")
    stream_trim_s: float = Field(default=30.0, gt=0, le=3600,
                                 description="how often the worker trims and measures its "
                                             "streams")
    send_pacing: bool = Field(default=True,
                              description="pace outbound sends (off only for benchmarks)")
    send_rate_per_minute: float = Field(
        default=20.0, gt=0, le=6000,
        description="sustained sends per minute (token bucket), all chats together")
    send_burst: int = Field(default=5, ge=1, le=1000,
                            description="sends allowed back to back before the rate applies")
    send_new_contacts_per_hour: float = Field(
        default=20.0, gt=0, le=36000,
        description="first messages to numbers this session never exchanged a message with")
    send_new_contact_burst: int = Field(default=3, ge=1, le=1000)
    send_jitter_s: float = Field(
        default=2.0, ge=0, le=120,
        description="a random pause of up to this long before each send (no fixed rhythm)")
    send_typing: bool = Field(default=True,
                              description='show "typing..." before a send')
    send_typing_max_s: float = Field(
        default=3.0, ge=0, le=30,
        description="typing lasts ~1 s per 15 characters, at most this long")
    send_breaker_s: float = Field(
        default=3600.0, ge=1, le=7 * 86400.0,
        description="how long sending stops after WhatsApp refuses a send as rate-limited or "
                    "restricted, when WhatsApp does not say")
    send_poll_s: float = Field(
        default=0.5, gt=0, le=10,
        description="how often a connected worker looks for new send commands while its "
                    "session is active (a read that does not block, so that one Redis "
                    "connection serves all commands)")
    send_idle_poll_s: float = Field(
        default=2.0, gt=0, le=60,
        description="the same after a minute without commands or inbound messages")
    database_pool_max: int = Field(
        default=1, ge=1, le=16,
        description="PostgreSQL connections of the worker's pool (project tables and, for "
                    "neonize, store administration), besides the lock connection and "
                    "whatsmeow's own store connections")
    database_pool_idle_s: float = Field(
        default=30.0, gt=0, le=3600,
        description="a pooled PostgreSQL connection unused this long is closed (an idle "
                    "session then holds only its lock connection and the store's)")
    redis_command_connections: int = Field(
        default=1, ge=1, le=16,
        description="Redis connections for commands; the worker has one more, for pub/sub")

    @model_validator(mode="after")
    def _exit_after_fencing(self) -> Self:
        if self.lock_lost_exit_s <= 3 * self.lock_check_s:
            raise ValueError("lock_lost_exit_s must be more than 3 x lock_check_s (the worker "
                             "drops WhatsApp after 3 checks without a proof, then exits)")
        return self


class ApiSettings(_Database, _Redis, _PhoneRegion):
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
    redis_require_persistence: bool = Field(
        default=True, description="/readyz fails while Redis runs without its append-only "
        "file (INFO persistence): the message streams and idempotency markers would not "
        "survive a Redis restart; false reports it without failing (docs/HELM.md)")
