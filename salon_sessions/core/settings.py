"""One settings object per component, read from `SALON_*` environment variables.

Database and Redis URLs come from Kubernetes Secrets; they are `SecretUrl`s, whose `str`,
`repr` and JSON dump show the URL with its password masked. Only `get_secret_value()`
(called where a connection is opened) returns the real URL. Validation errors never echo
their input (`hide_input_in_errors`).
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Literal, Self

from pydantic import Field, Secret, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from salon_sessions.core.company import CompanyId
from salon_sessions.core.events import SESSION_NAME_PATTERN
from salon_sessions.core.redact import redact_url
from salon_sessions.core.resource import DriverName


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


def _scheme(value: SecretUrl, schemes: tuple[str, ...], what: str) -> SecretUrl:
    if not value.get_secret_value().startswith(schemes):
        raise ValueError(f"{what} must start with one of {', '.join(schemes)}")
    return value


class _Database(_Settings):
    database_url: SecretUrl = Field(description="PostgreSQL DSN (from a Secret)")

    @field_validator("database_url")
    @classmethod
    def _database_scheme(cls, value: SecretUrl) -> SecretUrl:
        return _scheme(value, _DB_SCHEMES, "SALON_DATABASE_URL")


class _Redis(_Settings):
    redis_url: SecretUrl = Field(description="Redis URL (from a Secret)")

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: SecretUrl) -> SecretUrl:
        return _scheme(value, _REDIS_SCHEMES, "SALON_REDIS_URL")


class MigrateSettings(_Database):
    """`salon-sessions migrate ...`"""

    metrics_port: int = 0


class OperatorSettings(_Database, _Redis):
    """`salon-sessions operator`: reconciles SalonSessions, consumes events."""

    namespace: str | None = Field(default=None, description="watch one namespace; None = all")
    worker_image: str = Field(default="salon-sessions:dev", min_length=1)


class WorkerSettings(_Database, _Redis):
    """`salon-sessions worker`: one session, inside its pod."""

    company_id: CompanyId
    session_name: str = Field(pattern=SESSION_NAME_PATTERN)
    namespace: str = Field(default="default", description="the SalonSession's namespace")
    pod_name: str = Field(default_factory=socket.gethostname, min_length=1,
                          description="this pod (consumer name of the outbound stream)")
    driver: DriverName = DriverName.NEONIZE
    heartbeat_ttl_s: int = Field(default=30, ge=5, le=3600)
    lock_check_s: float = Field(default=1.0, gt=0, le=30,
                                description="how often the lock's connection is checked")
    proxy_url: SecretUrl | None = Field(default=None,
                                        description="SOCKS5/HTTP proxy (from the spec's Secret)")
    post_connect_url: SecretUrl | None = Field(
        default=None, description="webhook called after connecting (may carry a token)")
    post_connect_hook: str = Field(default="marketplace_activation",
                                   pattern=r"^[a-z][a-z0-9_]{0,63}$")
    simulator_first_qr_s: float = Field(default=60.0, gt=0, le=600)
    simulator_qr_period_s: float = Field(default=20.0, gt=0, le=600)
    simulator_code_ttl_s: float = Field(default=180.0, gt=0, le=3600)


class ApiSettings(_Database, _Redis):
    """`salon-sessions api`: the onboarding API and page."""

    namespace: str = "default"
    host: str = "0.0.0.0"
    port: int = Field(default=8080, ge=1, le=65535)
