"""Apply the versioned SQL migrations in `salon_sessions/db/migrations/`.

- Files are `NNNN_name.sql`; each runs in its own transaction together with its row in
  `salon_schema_migrations`, so a failing migration leaves nothing behind.
- A session-level advisory lock serialises concurrent runners (two pods starting at once):
  the second waits, then finds everything applied.
- Re-running is a no-op. An applied migration whose file changed since (checksum) or a
  database migrated by a newer release stops the run instead of guessing.
- Statements that cannot run in a transaction (`CREATE INDEX CONCURRENTLY`) are not
  supported.
- Migrations are applied by the role that owns the schema (the administrator's URL: the
  Helm hook, `salon-sessions migrate up`, the operator before it creates a session role). A
  session's own role runs no DDL (`0005_tenancy.sql`), and a worker waits until nothing is
  pending (`wait_for_migrations`) instead of migrating: schema changes belong to the hook,
  not to every pod start.

Why not a migration library: alembic builds on SQLAlchemy (revision scripts in Python, a
revision graph, autogenerate from models: none of which a schema of plain SQL files with
row-level security and `SECURITY DEFINER` functions uses) and has no lock between concurrent
runners unless its `env.py` adds one; yoyo-migrations applies plain SQL files but through a
synchronous DB-API driver (psycopg), a second PostgreSQL driver beside asyncpg in every
image. Neither checks that an applied file was not edited since (our checksum), nor answers
"may this role migrate, and is anything pending" for a session role (`may_migrate`,
`pending`, `wait_for_migrations`), which are most of this module. What is left is ~60 lines
(read files, one transaction each, a version row, an advisory lock): kept by hand; revisit
if down-migrations or non-transactional statements are ever needed.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources

import asyncpg

from salon_sessions.db.connections import connect
from salon_sessions.db.locks import MIGRATIONS_LOCK

log = logging.getLogger(__name__)

VERSION_TABLE = "salon_schema_migrations"
_FILE = re.compile(r"(?P<version>[0-9]{4})_(?P<name>[a-z0-9_]+)\.sql")
_CREATE_VERSION_TABLE = f"""
CREATE TABLE IF NOT EXISTS {VERSION_TABLE} (
    version     integer PRIMARY KEY,
    name        text NOT NULL,
    checksum    text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now(),
    duration_ms integer NOT NULL
)"""


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()

    @property
    def label(self) -> str:
        return f"{self.version:04d}_{self.name}"


@dataclass
class MigrationReport:
    applied: list[str] = field(default_factory=list)
    already: list[str] = field(default_factory=list)


class MigrationError(Exception):
    pass


def load_migrations(package: str = "salon_sessions.db.migrations") -> list[Migration]:
    """The packaged migrations, ordered by version."""
    found: list[Migration] = []
    for entry in resources.files(package).iterdir():
        match = _FILE.fullmatch(entry.name)
        if match is None:
            if entry.name.endswith(".sql"):
                raise MigrationError(f"migration file {entry.name!r} is not named NNNN_name.sql")
            continue
        found.append(Migration(int(match["version"]), match["name"],
                               entry.read_text(encoding="utf-8")))
    return _checked(found)


def _checked(migrations: Sequence[Migration]) -> list[Migration]:
    ordered = sorted(migrations, key=lambda m: m.version)
    versions = [m.version for m in ordered]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"duplicate migration versions in {[m.label for m in ordered]}")
    if any(v < 1 for v in versions):
        raise MigrationError("migration versions start at 1")
    return ordered


async def applied_versions(conn: asyncpg.Connection) -> dict[int, tuple[str, str]]:
    """Applied migrations as {version: (name, checksum)}; empty on a fresh database."""
    exists = await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", VERSION_TABLE)
    if not exists:
        return {}
    rows = await conn.fetch(f"SELECT version, name, checksum FROM {VERSION_TABLE}")
    return {r["version"]: (r["name"], r["checksum"]) for r in rows}


async def pending(conn: asyncpg.Connection,
                  migrations: Sequence[Migration] | None = None) -> list[Migration]:
    """Migrations not applied yet (components can refuse to start while any are)."""
    done = await applied_versions(conn)
    todo = _checked(migrations if migrations is not None else load_migrations())
    return [m for m in todo if m.version not in done]


async def migrate(conn: asyncpg.Connection, migrations: Sequence[Migration] | None = None,
                  *, lock_timeout_s: float = 60.0) -> MigrationReport:
    """Apply every pending migration; returns what was applied and what already was."""
    todo = _checked(migrations if migrations is not None else load_migrations())
    report = MigrationReport()
    await conn.execute("SELECT pg_advisory_lock($1)", MIGRATIONS_LOCK)
    try:
        await conn.execute(_CREATE_VERSION_TABLE)
        done = await applied_versions(conn)
        _verify_history(todo, done)
        for migration in todo:
            if migration.version in done:
                report.already.append(migration.label)
                continue
            await _apply(conn, migration, lock_timeout_s)
            report.applied.append(migration.label)
    finally:
        try:
            await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATIONS_LOCK)
        except (asyncpg.PostgresError, OSError):  # closing the connection releases it too
            log.warning("could not release the migrations lock", exc_info=True)
    return report


def _verify_history(todo: Sequence[Migration], done: dict[int, tuple[str, str]]) -> None:
    known = {m.version: m for m in todo}
    newer = sorted(v for v in done if v not in known)
    if newer:
        raise MigrationError(f"the database has migrations {newer} that this release does not "
                             "know: it was migrated by a newer release")
    for version, (name, checksum) in sorted(done.items()):
        if known[version].checksum != checksum:
            raise MigrationError(f"migration {known[version].label} changed after it was "
                                 f"applied (as {version:04d}_{name}); add a new migration "
                                 "instead of editing an applied one")


async def _apply(conn: asyncpg.Connection, migration: Migration, lock_timeout_s: float) -> None:
    started = time.monotonic()
    try:
        async with conn.transaction():
            await conn.execute(f"SET LOCAL lock_timeout = '{int(lock_timeout_s * 1000)}ms'")
            await conn.execute(migration.sql)
            await conn.execute(
                f"INSERT INTO {VERSION_TABLE} (version, name, checksum, duration_ms) "
                "VALUES ($1, $2, $3, $4)",
                migration.version, migration.name, migration.checksum,
                int((time.monotonic() - started) * 1000),
            )
    except asyncpg.PostgresError as exc:
        raise MigrationError(f"migration {migration.label} failed and was rolled back: "
                             f"{type(exc).__name__}: {exc}") from exc
    log.info("applied migration %s", migration.label)


async def may_migrate(conn: asyncpg.Connection) -> bool:
    """Whether this connection's role applies migrations: it owns (or is a member of the
    owner of) the version table, or there is none yet."""
    return bool(await conn.fetchval(
        "SELECT coalesce((SELECT pg_has_role(current_user, relowner, 'USAGE') FROM pg_class "
        "WHERE oid = to_regclass($1)), true)", VERSION_TABLE))


async def migrate_database(dsn: str) -> MigrationReport:
    """Connect, migrate, disconnect."""
    conn = await connect(dsn, "salon-migrate")
    try:
        return await migrate(conn)
    finally:
        await conn.close()


async def wait_for_migrations(dsn: str, application_name: str, *, timeout_s: float,
                              poll_s: float = 2.0) -> MigrationReport:
    """Wait until no migration is pending, checking every `poll_s`; raise `MigrationError`
    naming the pending ones once `timeout_s` has passed (0: check once).

    For a process that must not change the schema (a session worker): the Helm hook, the
    operator or `salon-sessions migrate up` applies the migrations, maybe while this one
    starts. Each check opens one connection named `application_name` and closes it before
    waiting, so that the waiting holds no connection (a worker's bound, issue 16, is its
    lock connection and one pool connection). Connection errors propagate, as from any
    other first connection of the process."""
    migrations = load_migrations()
    deadline = time.monotonic() + timeout_s
    said: tuple[str, float] | None = None  # what was logged, when: once, then every 30 s
    while True:
        conn = await connect(dsn, application_name)
        try:
            todo = await pending(conn, migrations)
        finally:
            await conn.close()
        if not todo:
            return MigrationReport(already=[m.label for m in migrations])
        left = deadline - time.monotonic()
        if left <= 0:
            raise MigrationError(
                f"migrations {[m.label for m in todo]} are still pending after waiting "
                f"{timeout_s:g} s; run `salon-sessions migrate up` with the administrator's "
                "URL (the Helm hook does on install and upgrade)")
        labels = str([m.label for m in todo])
        if said is None or said[0] != labels or time.monotonic() - said[1] >= 30:
            log.info("waiting for pending migrations %s (up to %.0f s more)", labels, left)
            said = (labels, time.monotonic())
        await asyncio.sleep(min(poll_s, left))
