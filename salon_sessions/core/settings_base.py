"""The settings fields every component shares, and the session worker's settings, read from
`SALON_*` variables with pydantic alone.

Why not pydantic-settings here: every session pod runs one worker process, and
pydantic-settings (its sources for dotenv, AWS, Azure, GCP, ... ~25 modules) costs each of
them ~3 MiB for reading a dozen plain variables. The worker's settings are all scalars, so
`EnvSettings.from_env` does what pydantic-settings does for them (tests/core/
test_settings.py compares the two): each field `name` is read from `SALON_<NAME>`, matched
case-insensitively, and its string handed to pydantic's (lax) validation; unknown variables
are ignored. Fields that pydantic-settings would decode from JSON (dicts, lists, models)
are refused when such a class is defined. The other components' settings
(`core.settings`) keep pydantic-settings over the same field classes.

Database and Redis URLs come from Kubernetes Secrets; they are `SecretUrl`s, whose `str`,
`repr` and JSON dump show the URL with its password masked. Validation errors never echo
their input (`hide_input_in_errors`).
"""

from __future__ import annotations

import os
import socket
import sys
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal, Protocol, Self, TypeVar, Union

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    Secret,
    ValidationError,
    field_validator,
    model_validator,
)

from salon_sessions.core.company import CompanyId
from salon_sessions.core.events import SESSION_NAME_PATTERN
from salon_sessions.core.redact import redact_url
from salon_sessions.core.resource import DriverName

ENV_PREFIX = "SALON_"


class SecretUrl(Secret[str]):
    """A URL with credentials; displays as `scheme://user:***@host:port/path`."""

    def _display(self) -> str:
        return redact_url(self.get_secret_value())


LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]
_DB_SCHEMES = ("postgres://", "postgresql://")
_REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


class FromEnv(Protocol):
    @classmethod
    def from_env(cls) -> Self: ...


S = TypeVar("S", bound=FromEnv)


def load_settings(cls: type[S], command: str) -> S | None:
    """`cls` from the environment, or None after telling stderr which fields are invalid
    (names and reasons only: validation errors never echo values)."""
    try:
        return cls.from_env()
    except ValidationError as exc:
        fields = ", ".join(".".join(str(p) for p in e["loc"]) for e in exc.errors())
        print(f"salon-sessions {command}: invalid settings: {fields}\n{exc}", file=sys.stderr)
        return None


def check_scheme(value: SecretUrl, schemes: tuple[str, ...], what: str) -> SecretUrl:
    if not value.get_secret_value().startswith(schemes):
        raise ValueError(f"{what} must start with one of {', '.join(schemes)}")
    return value


# ---- fields shared by every component (no configuration: the concrete bases give it)

class CommonFields(BaseModel):
    log_level: LogLevel = "INFO"
    log_json: bool = True
    metrics_port: int = Field(default=9090, ge=0, le=65535,
                              description="Prometheus /metrics port; 0 disables it")


class DatabaseFields(CommonFields):
    database_url: SecretUrl = Field(description="PostgreSQL DSN (from a Secret)")

    @field_validator("database_url")
    @classmethod
    def _database_scheme(cls, value: SecretUrl) -> SecretUrl:
        return check_scheme(value, _DB_SCHEMES, "SALON_DATABASE_URL")


class RedisFields(CommonFields):
    redis_url: SecretUrl = Field(description="Redis URL (from a Secret)")

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: SecretUrl) -> SecretUrl:
        return check_scheme(value, _REDIS_SCHEMES, "SALON_REDIS_URL")


# ---- reading the environment without pydantic-settings

def _is_scalar(annotation: Any) -> bool:
    """Not something pydantic-settings would decode from JSON (dict, list, set, tuple,
    model), looking through Optional/Union/Annotated."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _is_scalar(typing.get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        return all(_is_scalar(a) for a in typing.get_args(annotation))
    if origin in (dict, list, set, frozenset, tuple) or annotation in (dict, list, set,
                                                                        frozenset, tuple):
        return False
    return not (isinstance(annotation, type) and issubclass(annotation, BaseModel))


class EnvSettings(CommonFields):
    """Settings read by `from_env` from `SALON_*` variables (scalar fields only)."""

    model_config = ConfigDict(extra="ignore", frozen=True, hide_input_in_errors=True)

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        for name, field in cls.model_fields.items():
            if not _is_scalar(field.annotation):
                raise TypeError(f"{cls.__name__}.{name}: EnvSettings reads scalar fields "
                                "only (pydantic-settings would decode this one from JSON)")

    @classmethod
    def env_values(cls, environ: Mapping[str, str] | None = None) -> dict[str, str]:
        """The raw values of this class's fields found in `environ` (default: the process's
        environment), names matched case-insensitively."""
        found = {k.lower(): v for k, v in (os.environ if environ is None else environ).items()}
        return {name: found[key] for name in cls.model_fields
                if (key := f"{ENV_PREFIX}{name}".lower()) in found}

    @classmethod
    def from_env(cls) -> Self:
        """Read the environment (required fields come from it, so no arguments)."""
        return cls.model_validate(cls.env_values())


class WorkerSettings(EnvSettings, DatabaseFields, RedisFields):
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
    lock_check_s: float = Field(default=1.0, gt=0, le=30,
                                description="how often the holder proves that PostgreSQL "
                                            "still grants it the session lock")
    lock_lost_exit_s: float = Field(
        default=30.0, gt=0, le=3600,
        description="exit (the pod restarts) after this long without proving or re-acquiring "
                    "a held lock; more than 3 x lock_check_s")
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

    @model_validator(mode="after")
    def _exit_after_fencing(self) -> Self:
        if self.lock_lost_exit_s <= 3 * self.lock_check_s:
            raise ValueError("lock_lost_exit_s must be more than 3 x lock_check_s (the worker "
                             "drops WhatsApp after 3 checks without a proof, then exits)")
        return self
