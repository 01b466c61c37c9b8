"""PostgreSQL advisory lock keys (one derivation for every lock the project takes)."""

from __future__ import annotations

import hashlib

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
