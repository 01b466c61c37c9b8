"""`salon-sessions migrate up|status|company-ids`: the database commands.

The database URL comes from `SALON_DATABASE_URL` only (never a command-line argument, where
`ps` would show the password).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
from pydantic import ValidationError

from salon_sessions.core.redact import redact_text
from salon_sessions.core.settings import MigrateSettings
from salon_sessions.db.company_ids import CompanyIdMigrationError, convert_company_ids
from salon_sessions.db.connections import connect
from salon_sessions.db.migrator import MigrationError, applied_versions, load_migrations, migrate

Handler = Callable[[argparse.Namespace], int]


def register(sub: Any) -> None:
    """Add `migrate` and its subcommands to the top-level subparsers."""
    parser: argparse.ArgumentParser = sub.add_parser(
        "migrate", help="database migrations and legacy data conversion",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = parser.add_subparsers(dest="migrate_command", required=True, metavar="ACTION")
    up = actions.add_parser("up", help="apply pending schema migrations (safe to run twice, "
                                       "or from two processes at once)")
    up.set_defaults(handler=_run(_up))
    status = actions.add_parser("status", help="list applied and pending migrations")
    status.set_defaults(handler=_run(_status))
    ids = actions.add_parser(
        "company-ids", help="convert legacy company ids (962302) to company_962302",
        description="Convert every legacy company id to the canonical form in one "
                    "transaction, after writing a backup table; verify and roll back on any "
                    "doubt.")
    ids.add_argument("--dry-run", action="store_true",
                     help="print what would change, change nothing")
    ids.add_argument("--column", default="company_id", metavar="NAME",
                     help="name of the company id columns (default: company_id)")
    ids.add_argument("--table", action="append", default=[], metavar="[SCHEMA.]TABLE",
                     help="only these tables (repeatable; default: every table with the column)")
    ids.set_defaults(handler=_run(_company_ids))


def _run(action: Callable[[asyncpg.Connection, argparse.Namespace], Awaitable[int]]) -> Handler:
    def handler(args: argparse.Namespace) -> int:
        try:
            settings = MigrateSettings.from_env()
        except ValidationError as exc:
            print(f"salon-sessions migrate: configuration error:\n{exc}", file=sys.stderr)
            return 2
        return asyncio.run(_with_connection(settings, action, args))

    return handler


async def _with_connection(settings: MigrateSettings,
                           action: Callable[[asyncpg.Connection, argparse.Namespace],
                                            Awaitable[int]],
                           args: argparse.Namespace) -> int:
    # PostgreSQL directly (SALON_LOCK_DATABASE_URL when SALON_DATABASE_URL is a pooler's):
    # migrations hold a session-level advisory lock
    url = settings.direct_database_url
    try:
        conn = await connect(url, "salon-migrate", connect_timeout_s=60)
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        print(f"cannot connect to {url}: {redact_text(str(exc))}", file=sys.stderr)
        return 1
    try:
        return await action(conn, args)
    except (MigrationError, CompanyIdMigrationError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        await conn.close()


async def _up(conn: asyncpg.Connection, _: argparse.Namespace) -> int:
    report = await migrate(conn)
    for label in report.applied:
        print(f"applied {label}")
    print(f"schema up to date ({len(report.applied)} applied now, "
          f"{len(report.already)} already)")
    return 0


async def _status(conn: asyncpg.Connection, _: argparse.Namespace) -> int:
    done = await applied_versions(conn)
    missing = 0
    for migration in load_migrations():
        state = "applied" if migration.version in done else "pending"
        missing += state == "pending"
        print(f"{migration.label}: {state}")
    return 0 if not missing else 3


async def _company_ids(conn: asyncpg.Connection, args: argparse.Namespace) -> int:
    await convert_company_ids(conn, dry_run=args.dry_run, column_name=args.column,
                              tables=args.table)
    return 0
