"""PostgreSQL advisory locks: the key derivation and every piece of lock SQL.

All lock SQL lives here, as small functions taking a connection, so that the statements
can later become SECURITY DEFINER wrappers (a session's role may then hold only its own
lock) without touching their callers.

A single-bigint advisory lock shows in `pg_locks` as `classid` = the key's high 32 bits,
`objid` = its low 32 bits (both unsigned `oid`s) and `objsubid = 1` (2 is the two-int4
form), so `holds_lock` compares the two halves instead of re-assembling a signed bigint.
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


def key_halves(key: int) -> tuple[int, int]:
    """`(classid, objid)` of a bigint advisory lock in `pg_locks`."""
    unsigned = key & 0xFFFF_FFFF_FFFF_FFFF
    return unsigned >> 32, unsigned & 0xFFFF_FFFF


async def try_lock(conn: asyncpg.Connection, key: int) -> bool:
    """Take the session-level lock without waiting; False when another session holds it."""
    return bool(await conn.fetchval("SELECT pg_try_advisory_lock($1)", key))


async def try_xact_lock(conn: asyncpg.Connection, key: int) -> bool:
    """Take the lock until the end of the current transaction, without waiting."""
    return bool(await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", key))


async def holds_lock(conn: asyncpg.Connection, key: int) -> bool:
    """Whether PostgreSQL grants `key` to *this* connection's backend right now (not merely
    that the connection answers)."""
    classid, objid = key_halves(key)
    return bool(await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' "
        "AND pid = pg_backend_pid() AND granted AND classid = $1::bigint::oid "
        "AND objid = $2::bigint::oid AND objsubid = 1)", classid, objid))


async def unlock(conn: asyncpg.Connection, key: int) -> bool:
    """Release the lock held by this connection; False when it did not hold it."""
    return bool(await conn.fetchval("SELECT pg_advisory_unlock($1)", key))


async def lock_holder_pids(conn: asyncpg.Connection, key: int) -> list[int]:
    """Backends that hold `key` (diagnostics and tests)."""
    classid, objid = key_halves(key)
    rows = await conn.fetch(
        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted "
        "AND classid = $1::bigint::oid AND objid = $2::bigint::oid AND objsubid = 1",
        classid, objid)
    return [int(r["pid"]) for r in rows]
