"""PostgreSQL advisory locks: one key derivation for every lock the project takes, and the
session lock's SQL in one place.

A session's database role may not call `pg_advisory_lock` & co. (migration
`0005_tenancy.sql` revokes them from PUBLIC): it takes, proves and releases its session lock
through `salon_session_lock_try/held/release(key)`, SECURITY DEFINER functions that refuse
any key but the caller's own (recorded by `db.tenancy.ensure_session_role`). The lock still
belongs to the caller's backend, so it lives exactly as long as the caller's connection.
The administrator's role (the tables' owner) may pass any key, so the same calls serve a
worker started with the administrator's URL.

`salon_session_lock_held` proves that PostgreSQL grants the lock to *this* backend right
now (`pg_locks`), not merely that the connection answers: a single-bigint advisory lock
shows there as `classid` = the key's high 32 bits, `objid` = its low 32 bits (both unsigned
`oid`s) and `objsubid = 1` (`key_halves`).
"""

from __future__ import annotations

import hashlib

import asyncpg

from salon_sessions.core.company import canonical_company_id


def advisory_key(name: str) -> int:
    """A stable signed 64-bit key for `pg_advisory_lock(bigint)`."""
    digest = hashlib.blake2b(f"salon-sessions/{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


MIGRATIONS_LOCK = advisory_key("migrations")
COMPANY_IDS_LOCK = advisory_key("migrate-company-ids")


def session_lock_key(company_id: str | int) -> int:
    """The lock a worker holds while its session is connected (one live connection)."""
    return advisory_key(f"session/{canonical_company_id(company_id)}")


async def try_session_lock(conn: asyncpg.Connection, company_id: str) -> bool:
    """Take the session's lock on this connection without waiting; True when taken (or
    already held by this connection)."""
    return bool(await conn.fetchval("SELECT salon_session_lock_try($1)",
                                    session_lock_key(company_id)))


async def session_lock_held(conn: asyncpg.Connection, company_id: str) -> bool:
    """Whether PostgreSQL grants the session's lock to this very connection right now
    (`pg_locks`), not merely whether the connection answers."""
    return bool(await conn.fetchval("SELECT salon_session_lock_held($1)",
                                    session_lock_key(company_id)))


async def release_session_lock(conn: asyncpg.Connection, company_id: str) -> bool:
    """Release the session's lock held by this connection; False when it held none."""
    return bool(await conn.fetchval("SELECT salon_session_lock_release($1)",
                                    session_lock_key(company_id)))


async def try_xact_lock(conn: asyncpg.Connection, key: int) -> bool:
    """Take the lock until the end of the current transaction, without waiting (the
    administrator's calls: credential deletion)."""
    return bool(await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", key))


def key_halves(key: int) -> tuple[int, int]:
    """`(classid, objid)` of a bigint advisory lock in `pg_locks`."""
    unsigned = key & 0xFFFF_FFFF_FFFF_FFFF
    return unsigned >> 32, unsigned & 0xFFFF_FFFF


async def lock_holder_pids(conn: asyncpg.Connection, key: int) -> list[int]:
    """Backends that hold `key` (diagnostics and tests)."""
    classid, objid = key_halves(key)
    rows = await conn.fetch(
        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted "
        "AND classid = $1::bigint::oid AND objid = $2::bigint::oid AND objsubid = 1",
        classid, objid)
    return [int(r["pid"]) for r in rows]
