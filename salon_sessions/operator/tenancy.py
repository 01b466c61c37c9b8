"""Per-session credentials: a Redis ACL user and a Secret for every SalonSession's worker.

The pod of one salon must not be able to read or forge anything of another salon, so it
does not get the shared credentials: before its StatefulSet is applied, the operator

1. derives the session's passwords: HMAC-SHA256 of the operator's `credentials_key` over
   (purpose, namespace, name, uid). Deterministic, so a reconcile or an operator restart
   rewrites the same values and the operator never needs to *read* a Secret (its RBAC
   has no get/list/watch on Secrets); a recreated SalonSession (new uid) gets new ones;
2. creates (or redefines) the Redis user `salon-session.<namespace>.<name>` with the rules
   of `core.redis_acl.session_rules` through the admin connection;
3. creates (or updates) the company's own PostgreSQL role through `DatabaseCredentials`
   (`SessionDatabase`: `db.tenancy`, row-level security and its own lock only) and puts
   its URL in the Secret: PostgreSQL's (`direct_database_url`), or, with
   `worker_database_pooler_url`, the pooler's plus PostgreSQL's for the session lock;
4. applies the Secret `<name>-credentials` (keys `redis-url`, `database-url` and, behind a
   pooler, `lock-database-url`), owned by the SalonSession (ownerReferences: the garbage
   collector removes it with it), which the pod's env references (`statefulset.worker_env`).

On deletion (`drop`) the Secret and the Redis user go (Redis closes the user's
connections). Redis forgets ACL SETUSER users when it restarts without an aclfile, so
`run()` re-creates the missing users of the sessions this operator serves every
`credentials_check_s` and at once after a Redis gap.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
from typing import Any, Final, Protocol

import asyncpg
from redis.asyncio import Redis
from redis.exceptions import RedisError

from salon_sessions.core import redis_acl
from salon_sessions.core.redact import redact_text
from salon_sessions.core.resource import API_VERSION, KIND
from salon_sessions.core.settings import OperatorSettings, SecretUrl
from salon_sessions.core.subscriber import Gap
from salon_sessions.core.urls import with_credentials
from salon_sessions.db.connections import connect
from salon_sessions.db.migrator import MigrationError, migrate
from salon_sessions.db.tenancy import TenancyError, drop_session_role, ensure_session_role
from salon_sessions.operator.kube import Kube, KubeError
from salon_sessions.operator.metrics import OperatorMetrics
from salon_sessions.operator.registry import Registry, Session
from salon_sessions.operator.statefulset import (
    COMPONENT_LABEL,
    DATABASE_URL_KEY,
    LOCK_DATABASE_URL_KEY,
    REDIS_URL_KEY,
    credentials_secret,
    labels,
)

log = logging.getLogger(__name__)
SECRET_COMPONENT: Final = "session-credentials"


class CredentialsError(Exception):
    """Redis or the API server refused or failed; the caller retries."""


class DatabaseCredentials(Protocol):
    """Where a session's worker gets its database URLs. `ensure` is called on every
    reconcile with the session's derived password and returns the Secret keys to write
    (`database-url`, and `lock-database-url` behind a pooler); `drop` when the session is
    deleted. Both raise `CredentialsError` on failure (`ensure` is retried, `drop`
    logged)."""

    async def ensure(self, company_id: str, password: str) -> dict[str, str]: ...

    async def drop(self, company_id: str) -> None: ...


class SessionDatabase:
    """Every session's worker logs in as its company's own PostgreSQL role
    (`db.tenancy`: row-level security, device binding, its own lock only), created with
    the operator's administrator connection.

    `url`: PostgreSQL itself (the operator's `direct_database_url`): the administrator
    connection migrates under a session-level advisory lock, which a transaction pooler
    would not keep. `pooler_url`: the workers' PgBouncer (`worker_database_pooler_url`),
    whose host, port, database and options the workers' `database-url` gets instead."""

    def __init__(self, url: SecretUrl, pooler_url: SecretUrl | None = None) -> None:
        self.url = url
        self.pooler_url = pooler_url
        self._migrated = False

    async def _admin(self) -> asyncpg.Connection:
        return await connect(self.url, "salon-operator", connect_timeout_s=10)

    def urls(self, role: str, password: str) -> dict[str, str]:
        """The Secret's database keys for a role."""
        direct = with_credentials(self.url.get_secret_value(), role, password)
        if self.pooler_url is None:
            return {DATABASE_URL_KEY: direct}
        return {DATABASE_URL_KEY: with_credentials(self.pooler_url.get_secret_value(), role,
                                                   password),
                LOCK_DATABASE_URL_KEY: direct}

    async def ensure(self, company_id: str, password: str) -> dict[str, str]:
        try:
            conn = await self._admin()
            try:
                if not self._migrated:
                    # session roles cannot migrate (they own nothing): the operator applies
                    # what the Helm hook may not have yet, once per process (idempotent,
                    # under the migrations lock)
                    await migrate(conn)
                    self._migrated = True
                role = await ensure_session_role(conn, company_id, password)
            finally:
                await conn.close()
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError,
                TenancyError, MigrationError) as exc:
            raise CredentialsError(f"the database role of {company_id}: "
                                   f"{type(exc).__name__}: {exc}") from None
        return self.urls(role, password)

    async def drop(self, company_id: str) -> None:
        try:
            conn = await self._admin()
            try:
                await drop_session_role(conn, company_id)
            finally:
                await conn.close()
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError,
                TenancyError) as exc:
            raise CredentialsError(f"dropping the database role of {company_id}: "
                                   f"{type(exc).__name__}: {exc}") from None


def derive_password(key: bytes, purpose: str, session: Session) -> str:
    """43 URL-safe characters (256 bits), stable for one SalonSession (uid included)."""
    message = "\0".join((purpose, session.namespace, session.name, session.uid)).encode()
    digest = hmac.new(key, message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def secret_manifest(session: Session, data: dict[str, str]) -> dict[str, Any]:
    """The session's credentials Secret, owned by its SalonSession."""
    return {
        "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {
            "name": credentials_secret(session.name),
            "namespace": session.namespace,
            "labels": {**labels(session.name, session.company),
                       COMPONENT_LABEL: SECRET_COMPONENT},
            "ownerReferences": [{
                "apiVersion": API_VERSION, "kind": KIND, "name": session.name,
                "uid": session.uid, "controller": True, "blockOwnerDeletion": True,
            }],
        },
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in sorted(data.items())},
    }


class SessionCredentials:
    def __init__(self, settings: OperatorSettings, kube: Kube, admin: Redis,
                 registry: Registry, metrics: OperatorMetrics,
                 database: DatabaseCredentials | None = None) -> None:
        self._settings = settings
        self._kube = kube
        self._admin = admin
        self._registry = registry
        self._metrics = metrics
        self._database = database or SessionDatabase(settings.direct_database_url,
                                                     settings.worker_database_pooler_url)
        self._key = settings.credentials_key.get_secret_value().encode()
        self._wake = asyncio.Event()

    def user(self, session: Session) -> str:
        return redis_acl.session_user(session.namespace, session.name)

    async def _ensure_user(self, session: Session, password: str) -> None:
        await redis_acl.ensure_user(self._admin, self.user(session), password,
                                    redis_acl.session_rules(session.company))

    async def ensure(self, session: Session) -> None:
        """The session's Redis user and Secret exist with the current rules and passwords
        (idempotent; called before every StatefulSet apply)."""
        redis_password = derive_password(self._key, "redis", session)
        try:
            await self._ensure_user(session, redis_password)
            database_urls = await self._database.ensure(
                session.company, derive_password(self._key, "database", session))
            redis_url = with_credentials(self._settings.redis_url.get_secret_value(),
                                           self.user(session), redis_password)
            await self._kube.apply_secret(secret_manifest(
                session, {REDIS_URL_KEY: redis_url, **database_urls}))
        except (RedisError, OSError, KubeError, CredentialsError) as exc:
            self._metrics.credentials.labels("ensure", "failed").inc()
            raise CredentialsError(redact_text(
                f"credentials of {session.namespace}/{session.name}: "
                f"{type(exc).__name__}: {exc}")) from None
        self._metrics.credentials.labels("ensure", "ok").inc()

    async def drop(self, session: Session, *, owner: bool) -> None:
        """Delete the session's Secret and Redis user (both its own, whatever the company)
        and, when it served its company (`owner`), its database credentials.

        Raises `CredentialsError` when the API server fails (the caller retries). A Redis
        failure is logged and counted, not raised: deletion must not wait for Redis, and
        the user is useless without its Secret (the password is derived, never stored
        elsewhere)."""
        try:
            await self._kube.delete_secret(session.namespace, credentials_secret(session.name))
        except KubeError as exc:
            self._metrics.credentials.labels("drop", "failed").inc()
            raise CredentialsError(f"deleting the credentials Secret of {session.namespace}/"
                                   f"{session.name}: {exc}") from None
        try:
            await redis_acl.drop_user(self._admin, self.user(session))
            if owner:
                await self._database.drop(session.company)
        except (RedisError, OSError, CredentialsError) as exc:
            self._metrics.credentials.labels("drop", "failed").inc()
            log.warning("the Redis user of %s/%s was not deleted: %s", session.namespace,
                        session.name, type(exc).__name__,
                        extra={"company_id": session.company})
            return
        self._metrics.credentials.labels("drop", "ok").inc()

    # ---- Redis forgets users on a restart: put back the missing ones ----------------------
    def on_gap(self, gap: Gap) -> None:
        self._wake.set()

    async def restore(self) -> int:
        """Re-create the Redis users of the sessions this operator serves that Redis does
        not know (any more); returns how many."""
        known = await redis_acl.users(self._admin)
        restored = 0
        for session in self._registry:
            if (session.deleting or not session.model.applied
                    or not self._registry.is_owner(session)
                    or self.user(session) in known):
                continue
            await self._ensure_user(session, derive_password(self._key, "redis", session))
            self._metrics.credentials.labels("restore", "ok").inc()
            log.warning("Redis user of %s/%s was missing (Redis restarted?): re-created",
                        session.namespace, session.name,
                        extra={"company_id": session.company})
            restored += 1
        return restored

    async def run(self) -> None:
        while True:
            try:
                await self.restore()
            except (RedisError, OSError) as exc:
                self._metrics.credentials.labels("restore", "failed").inc()
                log.warning("checking the session Redis users failed: %s",
                            type(exc).__name__)
            self._wake.clear()
            try:
                async with asyncio.timeout(self._settings.credentials_check_s):
                    await self._wake.wait()
            except TimeoutError:
                pass
