"""A PostgreSQL role per session: the credentials a session pod gets instead of the
administrator's.

The operator calls `ensure_session_role` with its administrator connection (a role with
CREATEROLE that owns the schema) and puts the role's URL in the session's Secret;
`drop_session_role` when the session goes. What such a role may do is decided by the
migrations (`0005_tenancy.sql`: row-level security, the device binding, the lock
functions), not here: this module only creates the role, makes it a member of the sessions
group and records which company it acts for (`salon_session_roles`, a table rather than a
name convention, because roles are cluster-wide and policies per database). docs/SECURITY.md
has the model.

The password reaches PostgreSQL as a SCRAM-SHA-256 verifier computed here, so the plain
password never appears in the server's statement log or `pg_stat_activity`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import secrets

import asyncpg

from salon_sessions.core.company import canonical_company_id
from salon_sessions.db.locks import session_lock_key

log = logging.getLogger(__name__)

CONNECTION_LIMIT = 32
"""Per session role: the worker's pool, its lock connection, the whatsmeow store's pool and
one connection per neonize client run, with room to spare; a runaway worker cannot use up
the server's `max_connections`."""

SCRAM_ITERATIONS = 4096
_ROLE_ATTRIBUTES = ("LOGIN INHERIT NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION "
                    f"NOBYPASSRLS CONNECTION LIMIT {CONNECTION_LIMIT}")


class TenancyError(Exception):
    """The database is not ready for session roles, or a role name is taken."""


def scram_verifier(password: str, *, salt: bytes | None = None,
                   iterations: int = SCRAM_ITERATIONS) -> str:
    """PostgreSQL's stored form of a SCRAM-SHA-256 password (RFC 5802/7677).

    PostgreSQL SASLpreps passwords; for printable ASCII that is the identity, so other
    passwords are refused rather than hashed differently from what clients send.

    By hand because asyncpg exposes no such function (libpq's `PQencryptPasswordConn`, as
    psycopg's `encrypt_password`, would bring a second driver for these few lines); the
    tests log in with the result.
    """
    if not password or not password.isascii() or not password.isprintable():
        raise ValueError("a session role's password must be non-empty printable ASCII")
    salt = salt if salt is not None else secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.digest(salted, b"Client Key", "sha256")
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.digest(salted, b"Server Key", "sha256")

    def b64(raw: bytes) -> str:
        return base64.b64encode(raw).decode()

    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


async def _tenancy(conn: asyncpg.Connection) -> tuple[str, str]:
    try:
        row = await conn.fetchrow("SELECT role_prefix, sessions_group FROM salon_tenancy")
    except asyncpg.UndefinedTableError:
        row = None
    if row is None:
        raise TenancyError("the database has no session roles yet: run "
                           "`salon-sessions migrate up` first")
    return str(row["role_prefix"]), str(row["sessions_group"])


async def _execute(conn: asyncpg.Connection, template: str, *args: str) -> None:
    """DDL takes no parameters: quote with the server's own `format()` (%I, %L)."""
    placeholders = ", ".join(f"${i}::text" for i in range(2, len(args) + 2))
    await conn.execute(await conn.fetchval(f"SELECT format($1, {placeholders})",
                                           template, *args))


async def ensure_session_role(conn: asyncpg.Connection, company_id: str,
                              password: str) -> str:
    """Create or update the LOGIN role of `company_id`'s session (password, attributes,
    membership of the sessions group and of nothing else, company binding); returns the
    role name. Idempotent."""
    company = canonical_company_id(company_id)
    verifier = scram_verifier(password)
    async with conn.transaction():
        prefix, group = await _tenancy(conn)
        name = await conn.fetchval(
            "SELECT role_name FROM salon_session_roles WHERE company_id = $1", company)
        if name is None:
            name = prefix + company
            if await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", name):
                raise TenancyError(f"a role named {name} exists but is not {company}'s "
                                   "session role; refusing to take it over")
            await _execute(conn, f"CREATE ROLE %I {_ROLE_ATTRIBUTES} PASSWORD %L",
                           name, verifier)
            await conn.execute(
                "INSERT INTO salon_session_roles (role_name, company_id, lock_key) "
                "VALUES ($1, $2, $3)", name, company, session_lock_key(company))
        else:
            await _execute(conn, f"ALTER ROLE %I {_ROLE_ATTRIBUTES} PASSWORD %L",
                           name, verifier)
        await _execute(conn, "GRANT %I TO %I", group, name)
        # its own whatsmeow LID directory, first in its search_path (migration 0006)
        await conn.execute("SELECT salon_session_lid_map($1)", name)
        for other in await conn.fetch(
                "SELECT g.rolname FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid "
                "JOIN pg_roles r ON r.oid = m.member WHERE r.rolname = $1 AND g.rolname <> $2",
                name, group):
            await _execute(conn, "REVOKE %I FROM %I", other["rolname"], name)
    if not await advisory_locks_restricted(conn):
        log.warning("session role %s can call pg_advisory_lock directly: migrations were not "
                    "applied by a superuser (docs/SECURITY.md)", name,
                    extra={"company_id": company})
    return str(name)


async def drop_session_role(conn: asyncpg.Connection, company_id: str) -> None:
    """Drop `company_id`'s session role and its binding, after refusing new logins and
    ending its connections. The company's rows and device bindings stay
    (`db.credentials.delete_session_credentials` deletes those). Idempotent."""
    company = canonical_company_id(company_id)
    await _tenancy(conn)
    name = await conn.fetchval(
        "SELECT role_name FROM salon_session_roles WHERE company_id = $1", company)
    if name is None:
        return
    exists = await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", name)
    if exists:
        await _execute(conn, "ALTER ROLE %I NOLOGIN", name)  # committed: no new logins
        try:
            await conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                               "WHERE usename = $1", name)
        except asyncpg.InsufficientPrivilegeError:
            log.warning("could not end the connections of the session role %s", name,
                        extra={"company_id": company})
    async with conn.transaction():
        await conn.execute("DELETE FROM salon_session_roles WHERE role_name = $1", name)
        await _execute(conn, "DROP SCHEMA IF EXISTS %I CASCADE", name)  # its lid map
        if exists:
            await _execute(conn, "DROP ROLE IF EXISTS %I", name)


async def advisory_locks_restricted(conn: asyncpg.Connection) -> bool:
    """Whether PUBLIC lost EXECUTE on `pg_advisory_lock(bigint)` in this database (the
    migration can do that only when a superuser applies it)."""
    return not bool(await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM pg_proc p, aclexplode(coalesce(p.proacl, "
        "acldefault('f', p.proowner))) a WHERE p.oid = 'pg_advisory_lock(bigint)'::"
        "regprocedure AND a.grantee = 0 AND a.privilege_type = 'EXECUTE')"))


async def read_refusals(conn: asyncpg.Connection) -> int:
    """The database's count of refusals of session roles (0 before the first one): the
    sequence `salon_tenancy_refusals` (`0007_tenancy_refusals.sql`; a rolled-back
    statement cannot count in a table, a sequence survives the rollback)."""
    row = await conn.fetchrow("SELECT last_value, is_called FROM salon_tenancy_refusals")
    return int(row["last_value"]) if row is not None and row["is_called"] else 0
