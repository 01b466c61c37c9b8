"""`salon-sessions migrate company-ids`: convert legacy company ids to the canonical form.

The legacy system stored `962302` in some tables and `company_962302` in others. This
conversion, in one transaction:

1. finds every text column named `company_id` (or `--column`) in the database's base
   tables, optionally only in the tables given, and locks those tables against writers;
2. plans the conversion with `core.company.canonical_company_id` (the one rule) and
   refuses, changing nothing, if a value is not a company id, a column cannot hold the
   canonical form, or one table holds two forms of the same company (`962302` and
   `company_962302`: rows that may be duplicates, which only a human can merge);
3. writes the backup table `salon_backup.company_ids_<timestamp>` (table, column, old value,
   new value, rows) first; within one column the mapping is one-to-one, so the backup
   undoes the conversion exactly:
   `UPDATE t SET company_id = b.old_value FROM <backup> b WHERE b.table_schema = ...
   AND b.table_name = ... AND b.column_name = 'company_id' AND t.company_id = b.new_value`;
4. converts, then verifies that the row counts match, that every planned row changed and
   that no legacy form remains; anything else rolls everything back with the reason.

`--dry-run` prints the plan (or the problems) and writes nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import asyncpg

from salon_sessions.core.company import (
    COMPANY_ID_PATTERN,
    MAX_DIGITS,
    PREFIX,
    InvalidCompanyId,
    canonical_company_id,
)
from salon_sessions.db.locks import COMPANY_IDS_LOCK

BACKUP_SCHEMA = "salon_backup"
_TEXT_TYPES = ("text", "character varying")
_CANONICAL_MAX_LEN = len(PREFIX) + MAX_DIGITS


@dataclass(frozen=True, slots=True, order=True)
class Column:
    schema: str
    table: str
    column: str

    @property
    def table_sql(self) -> str:
        return f"{_ident(self.schema)}.{_ident(self.table)}"

    @property
    def column_sql(self) -> str:
        return _ident(self.column)

    def __str__(self) -> str:
        return f"{self.schema}.{self.table}.{self.column}"


@dataclass(frozen=True, slots=True)
class Change:
    column: Column
    old: str
    new: str
    rows: int


@dataclass
class Plan:
    columns: list[Column] = field(default_factory=list)
    changes: list[Change] = field(default_factory=list)
    row_counts: dict[Column, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def rows_to_change(self, column: Column | None = None) -> int:
        return sum(c.rows for c in self.changes if column is None or c.column == column)


@dataclass
class Result:
    plan: Plan
    dry_run: bool
    backup_table: str | None = None
    converted_rows: int = 0


class CompanyIdMigrationError(Exception):
    """Nothing was changed; `problems` says why."""

    def __init__(self, summary: str, problems: Sequence[str] = ()) -> None:
        self.problems = list(problems)
        lines = [summary, *(f"  - {p}" for p in self.problems)]
        super().__init__("\n".join(lines))


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


async def convert_company_ids(
    conn: asyncpg.Connection, *, dry_run: bool, column_name: str = "company_id",
    tables: Sequence[str] = (), out: Callable[[str], None] = print,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> Result:
    """Plan and (unless `dry_run`) apply the conversion; raises `CompanyIdMigrationError`."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", COMPANY_IDS_LOCK)
        plan = Plan()
        plan.columns = await _discover(conn, column_name, tables, plan.problems)
        if not dry_run:
            for table_sql in sorted({c.table_sql for c in plan.columns}):
                await conn.execute(f"LOCK TABLE {table_sql} IN SHARE ROW EXCLUSIVE MODE")
        await _plan(conn, plan)
        _print_plan(plan, out)
        if plan.problems:
            raise CompanyIdMigrationError(
                "company id conversion refused; nothing was changed:", plan.problems)
        result = Result(plan=plan, dry_run=dry_run)
        if dry_run:
            out(f"dry run: would convert {plan.rows_to_change()} row(s) in "
                f"{len({c.column for c in plan.changes})} column(s); nothing was changed")
            return result
        if not plan.changes:
            out("nothing to convert: every company id is canonical already")
            return result
        result.backup_table = await _write_backup(conn, plan, now())
        out(f"backup written to {result.backup_table}")
        result.converted_rows = await _convert(conn, plan)
        await _verify(conn, plan, result.converted_rows)
    out(f"converted {result.converted_rows} row(s); verified: row counts match and no legacy "
        "form remains")
    return result


async def _discover(conn: asyncpg.Connection, column_name: str, tables: Sequence[str],
                    problems: list[str]) -> list[Column]:
    rows = await conn.fetch(
        """
        SELECT c.table_schema, c.table_name, c.column_name, c.data_type,
               c.character_maximum_length
        FROM information_schema.columns c
        JOIN information_schema.tables t
          ON t.table_schema = c.table_schema AND t.table_name = c.table_name
        WHERE c.column_name = $1 AND t.table_type = 'BASE TABLE'
          AND c.table_schema NOT IN ('pg_catalog', 'information_schema', $2)
          AND c.table_schema NOT LIKE 'pg\\_%'
        ORDER BY 1, 2
        """, column_name, BACKUP_SCHEMA)
    wanted = {t: False for t in tables}
    columns: list[Column] = []
    for row in rows:
        column = Column(row["table_schema"], row["table_name"], row["column_name"])
        if tables:
            names = [t for t in wanted if t in (column.table, f"{column.schema}.{column.table}")]
            if not names:
                continue
            for name in names:
                wanted[name] = True
        if row["data_type"] not in _TEXT_TYPES:
            problems.append(f"{column} is of type {row['data_type']}, which cannot hold "
                            f"'company_<digits>': change it to text first or leave the table "
                            "out (--table)")
            continue
        limit = row["character_maximum_length"]
        if limit is not None and limit < _CANONICAL_MAX_LEN:
            problems.append(f"{column} is varchar({limit}); canonical ids need up to "
                            f"{_CANONICAL_MAX_LEN} characters")
            continue
        columns.append(column)
    problems.extend(f"table {name!r} has no column {column_name!r}"
                    for name, found in wanted.items() if not found)
    if not rows and not tables:
        problems.append(f"no table has a column named {column_name!r}")
    return columns


async def _plan(conn: asyncpg.Connection, plan: Plan) -> None:
    for column in plan.columns:
        plan.row_counts[column] = await conn.fetchval(
            f"SELECT count(*) FROM {column.table_sql}")
        values = await conn.fetch(
            f"SELECT {column.column_sql} AS value, count(*) AS rows FROM {column.table_sql} "
            f"WHERE {column.column_sql} IS NOT NULL GROUP BY 1 ORDER BY 1")
        forms: dict[str, list[tuple[str, int]]] = {}
        for row in values:
            raw, rows = row["value"], row["rows"]
            try:
                canonical = canonical_company_id(raw)
            except InvalidCompanyId as exc:
                plan.problems.append(f"{column}: {raw!r} in {rows} row(s) is not a company id "
                                     f"({exc.why})")
                continue
            forms.setdefault(canonical, []).append((raw, rows))
        for canonical, found in forms.items():
            if len(found) > 1:
                shown = ", ".join(f"{raw!r} ({rows} row(s))" for raw, rows in found)
                plan.problems.append(f"{column}: conflict: {canonical} is stored as {shown}; "
                                     "merge or delete the duplicates by hand, then re-run")
                continue
            raw, rows = found[0]
            if raw != canonical:
                plan.changes.append(Change(column, raw, canonical, rows))


def _print_plan(plan: Plan, out: Callable[[str], None]) -> None:
    for column in plan.columns:
        changes = [c for c in plan.changes if c.column == column]
        out(f"{column}: {plan.row_counts.get(column, 0)} row(s), "
            f"{sum(c.rows for c in changes)} to convert")
        for change in changes:
            out(f"  {change.old!r} -> {change.new!r} ({change.rows} row(s))")


async def _write_backup(conn: asyncpg.Connection, plan: Plan, at: datetime) -> str:
    name = f"{BACKUP_SCHEMA}.company_ids_{at.strftime('%Y%m%d_%H%M%S_%f')}"
    await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {BACKUP_SCHEMA}")
    await conn.execute(f"""
        CREATE TABLE {name} (
            table_schema text NOT NULL,
            table_name   text NOT NULL,
            column_name  text NOT NULL,
            old_value    text NOT NULL,
            new_value    text NOT NULL,
            row_count    bigint NOT NULL,
            converted_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (table_schema, table_name, column_name, old_value)
        )""")
    await conn.executemany(
        f"INSERT INTO {name} (table_schema, table_name, column_name, old_value, new_value, "
        "row_count) VALUES ($1, $2, $3, $4, $5, $6)",
        [(c.column.schema, c.column.table, c.column.column, c.old, c.new, c.rows)
         for c in plan.changes])
    return name


async def _convert(conn: asyncpg.Connection, plan: Plan) -> int:
    total = 0
    for column in sorted({c.column for c in plan.changes}):
        changes = [c for c in plan.changes if c.column == column]
        try:
            status = await conn.execute(
                f"UPDATE {column.table_sql} AS t SET {column.column_sql} = m.new "
                f"FROM unnest($1::text[], $2::text[]) AS m(old, new) "
                f"WHERE t.{column.column_sql} = m.old",
                [c.old for c in changes], [c.new for c in changes])
        except asyncpg.PostgresError as exc:
            raise CompanyIdMigrationError(
                "converting failed; everything was rolled back:",
                [f"{column}: {type(exc).__name__}: {exc}"]) from exc
        updated = int(status.rsplit(" ", 1)[-1])
        if updated != plan.rows_to_change(column):
            raise CompanyIdMigrationError(
                "verification failed; everything was rolled back:",
                [f"{column}: updated {updated} row(s), planned {plan.rows_to_change(column)}"])
        total += updated
    return total


async def _verify(conn: asyncpg.Connection, plan: Plan, converted: int) -> None:
    problems: list[str] = []
    if converted != plan.rows_to_change():
        problems.append(f"converted {converted} row(s), planned {plan.rows_to_change()}")
    for column in plan.columns:
        count = await conn.fetchval(f"SELECT count(*) FROM {column.table_sql}")
        if count != plan.row_counts[column]:
            problems.append(f"{column.schema}.{column.table}: {count} row(s) after, "
                            f"{plan.row_counts[column]} before")
        legacy = await conn.fetchval(
            f"SELECT count(*) FROM {column.table_sql} WHERE {column.column_sql} IS NOT NULL "
            f"AND {column.column_sql} !~ $1", COMPANY_ID_PATTERN)
        if legacy:
            problems.append(f"{column}: {legacy} row(s) still not canonical")
    if problems:
        raise CompanyIdMigrationError("verification failed; everything was rolled back:",
                                      problems)

