from __future__ import annotations

import logging

import pytest
from pydantic import ValidationError

from salon_sessions.core.redact import RedactingFilter, redact_text, redact_url
from salon_sessions.core.resource import DriverName
from salon_sessions.core.settings import (
    ApiSettings,
    MigrateSettings,
    OperatorSettings,
    WorkerSettings,
)

DB = "postgresql://salon:pg-S3cret@db.example:5432/salon"
REDIS = "redis://:rd-S3cret@redis.example:6379/0"
ADMIN = "redis://salon-acl-admin:ad-S3cret@redis.example:6379/0"
KEY = "k-S3cret" + "x" * 32


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    monkeypatch.setenv("SALON_DATABASE_URL", DB)
    monkeypatch.setenv("SALON_REDIS_URL", REDIS)
    monkeypatch.setenv("SALON_REDIS_ADMIN_URL", ADMIN)
    monkeypatch.setenv("SALON_CREDENTIALS_KEY", KEY)
    return monkeypatch


@pytest.mark.parametrize(("url", "shown"), [
    (DB, "postgresql://salon:***@db.example:5432/salon"),
    (REDIS, "redis://:***@redis.example:6379/0"),
    ("redis://redis.example:6379/0", "redis://redis.example:6379/0"),
    ("postgresql://u@h/db?sslmode=require&password=pg-S3cret",
     "postgresql://u@h/db?sslmode=require&password=***"),
    ("postgresql://u:pg-S3cret@[::1]:5432/db", "postgresql://u:***@[::1]:5432/db"),
])
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_redact_text_finds_urls_and_password_parameters() -> None:
    text = f"connect {DB} failed; retry with password=pg-S3cret and {REDIS}"
    clean = redact_text(text)
    assert "S3cret" not in clean
    assert "db.example:5432" in clean
    assert "password=***" in clean


def test_settings_read_env_and_never_show_urls_in_full(env: pytest.MonkeyPatch) -> None:
    env.setenv("SALON_COMPANY_ID", "962302")
    env.setenv("SALON_SESSION_NAME", "company-962302")
    env.setenv("SALON_DRIVER", "simulator")
    settings = WorkerSettings.from_env()
    assert settings.company_id == "company_962302"
    assert settings.driver is DriverName.SIMULATOR
    assert settings.database_url.get_secret_value() == DB
    assert settings.redis_url.get_secret_value() == REDIS
    for shown in (repr(settings), str(settings), settings.model_dump_json(),
                  str(settings.model_dump()), f"{settings.database_url}"):
        assert "S3cret" not in shown, shown
    assert "db.example:5432" in repr(settings)


def test_each_component_has_its_settings(env: pytest.MonkeyPatch) -> None:
    operator = OperatorSettings.from_env()
    assert operator.namespace is None
    assert operator.redis_admin_url.get_secret_value() == ADMIN
    assert "S3cret" not in repr(operator)
    assert ApiSettings.from_env().port == 8080
    assert MigrateSettings.from_env().database_url.get_secret_value() == DB


def test_the_operator_needs_the_acl_admin_and_a_long_credentials_key(
        env: pytest.MonkeyPatch) -> None:
    env.setenv("SALON_CREDENTIALS_KEY", "short")
    with pytest.raises(ValidationError, match="credentials_key"):
        OperatorSettings.from_env()
    env.setenv("SALON_CREDENTIALS_KEY", KEY)
    env.setenv("SALON_REDIS_ADMIN_URL", "http://x")
    with pytest.raises(ValidationError, match="redis_admin_url"):
        OperatorSettings.from_env()
    env.delenv("SALON_REDIS_ADMIN_URL")
    with pytest.raises(ValidationError, match="redis_admin_url"):
        OperatorSettings.from_env()


def test_the_operator_watches_one_several_or_all_namespaces(env: pytest.MonkeyPatch) -> None:
    assert OperatorSettings.from_env().namespaces == []
    env.setenv("SALON_NAMESPACE", "salons")
    assert OperatorSettings.from_env().namespaces == ["salons"]
    env.setenv("SALON_NAMESPACE", "salons-eu,salons-ru")
    assert OperatorSettings.from_env().namespaces == ["salons-eu", "salons-ru"]
    for bad in ("Salons", "a,,b", "a, b", "-a", "a,"):
        env.setenv("SALON_NAMESPACE", bad)
        with pytest.raises(ValidationError, match="namespace"):
            OperatorSettings.from_env()


def test_validation_errors_do_not_echo_secrets(env: pytest.MonkeyPatch) -> None:
    env.setenv("SALON_DATABASE_URL", "mysql://root:pg-S3cret@db/x")
    with pytest.raises(ValidationError) as caught:
        MigrateSettings.from_env()
    assert "SALON_DATABASE_URL must start with" in str(caught.value)
    assert "S3cret" not in str(caught.value)


def test_missing_url_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SALON_DATABASE_URL", raising=False)
    with pytest.raises(ValidationError, match="database_url"):
        MigrateSettings.from_env()


def test_worker_rejects_bad_company_id(env: pytest.MonkeyPatch) -> None:
    env.setenv("SALON_COMPANY_ID", "salon-1")
    env.setenv("SALON_SESSION_NAME", "company-1")
    with pytest.raises(ValidationError, match="expected a company id"):
        WorkerSettings.from_env()


def test_log_filter_redacts_messages_args_and_tracebacks(
        caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("test.redaction")
    caplog.handler.addFilter(RedactingFilter())
    with caplog.at_level(logging.INFO, logger="test.redaction"):
        logger.info("connecting to %s", DB)
        try:
            raise ConnectionError(f"cannot reach {REDIS}")
        except ConnectionError:
            logger.exception("redis failed")
    assert "S3cret" not in caplog.text
    assert "postgresql://salon:***@db.example:5432/salon" in caplog.text
    assert "redis://:***@redis.example:6379/0" in caplog.text
