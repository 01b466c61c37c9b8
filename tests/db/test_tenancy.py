"""A session's PostgreSQL role against another company's data and lock, on a real server.

Every refusal here is PostgreSQL's own (row-level security, privileges, the device-binding
trigger, the lock functions); the same statements with the company's own rows succeed, so
each test fails if the rule it checks is missing.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator

import asyncpg
import pytest

from salon_sessions.core.urls import with_credentials
from salon_sessions.db.credentials import (
    DeletedCredentials,
    SessionInUse,
    delete_session_credentials,
)
from salon_sessions.db.locks import (
    release_session_lock,
    session_lock_held,
    session_lock_key,
    try_session_lock,
)
from salon_sessions.db.migrator import MigrationError, may_migrate, wait_for_migrations
from salon_sessions.db.tenancy import (
    CONNECTION_LIMIT,
    TenancyError,
    advisory_locks_restricted,
    drop_session_role,
    ensure_session_role,
    read_refusals,
    scram_verifier,
)
from tests.helpers import wait_for
from tests.tenants import Tenants, session_roles
from tests.whatsmeow_rows import DEVICE, PER_DEVICE, device_column, insert_device

A, B = "company_101", "company_202"
JID_A, JID_B, JID_LOOSE = ("79680000001:11@s.whatsapp.net", "79680000002:12@s.whatsapp.net",
                           "79680000003:13@s.whatsapp.net")

# one row of `$1`'s in every table that holds company rows
COMPANY_ROWS = {
    "salon_sessions": "INSERT INTO salon_sessions (company_id, namespace, resource_name) "
                      "VALUES ($1, 'ns', $1)",
    "salon_link_history": "INSERT INTO salon_link_history (company_id, action) "
                          "VALUES ($1, 'unlinked')",
    "salon_company_aliases": "INSERT INTO salon_company_aliases (alias, company_id, source) "
                             "VALUES ('legacy-' || $1, $1, 'test')",
    "salon_post_connect_hooks": "INSERT INTO salon_post_connect_hooks (company_id, hook) "
                                "VALUES ($1, 'marketplace')",
    "simulator_device": "INSERT INTO simulator_device (company_id, jid, phone) "
                        "VALUES ($1, $1 || '@s.whatsapp.net', '79680000009')",
    "simulator_lid_map": "INSERT INTO simulator_lid_map (company_id, lid, phone) "
                         "VALUES ($1, '123', '79680000009')",
}
READ_ONLY = {"salon_company_aliases"}
NOT_FOR_SESSIONS = {"salon_tenancy", "salon_session_roles", "salon_device_owners"}
SHARED = {"salon_schema_migrations", "whatsmeow_version"}
"""Tables a session role reads without a company filter; docs/SECURITY.md says why."""
PER_SESSION = {"whatsmeow_lid_map"}
"""whatsmeow tables a session role has its own copy of, in its own schema (migration 0006);
the shared one in `public` is not the sessions group's."""

pytestmark = pytest.mark.slow


@pytest.fixture
async def tenants(database: str) -> AsyncIterator[Tenants]:
    """A migrated database with the session roles of companies A and B."""
    async with session_roles(database, A, B) as t:
        yield t


async def refused(conn: asyncpg.Connection, sql: str, *args: object) -> str:
    """The statement fails with PostgreSQL's insufficient_privilege; returns the message."""
    with pytest.raises(asyncpg.InsufficientPrivilegeError) as err:
        await conn.execute(sql, *args)
    return str(err.value)


async def affects_nothing(conn: asyncpg.Connection, sql: str, *args: object) -> None:
    """The statement touches no row: the rows are invisible (or the privilege is missing)."""
    try:
        status = await conn.execute(sql, *args)
    except asyncpg.InsufficientPrivilegeError:
        return
    assert status.endswith(" 0"), (sql, status)


# --------------------------------------------------------------------------- the roles

async def test_a_session_role_is_a_plain_login_in_the_sessions_group(
        tenants: Tenants) -> None:
    t = tenants
    role = await t.admin.fetchrow("SELECT * FROM pg_roles WHERE rolname = $1", t.roles[A])
    assert role["rolcanlogin"]
    assert role["rolinherit"]
    assert not any(role[k] for k in ("rolsuper", "rolcreaterole", "rolcreatedb",
                                     "rolreplication", "rolbypassrls"))
    assert role["rolconnlimit"] == CONNECTION_LIMIT
    group = await t.admin.fetchval("SELECT sessions_group FROM salon_tenancy")
    assert await memberships(t.admin, t.roles[A]) == {group}
    assert t.roles[A] != t.roles[B]
    conn = await t.connect(A)
    assert await conn.fetchval("SELECT salon_session_company()") == A
    with pytest.raises(asyncpg.InvalidPasswordError):
        await asyncpg.connect(with_credentials(t.admin_dsn, t.roles[A], "wrong"))


async def test_ensure_is_idempotent_rotates_the_password_and_drops_extra_memberships(
        tenants: Tenants) -> None:
    t = tenants
    await t.admin.execute(f'GRANT pg_read_all_data TO "{t.roles[A]}"')
    old = t.passwords[A]
    t.passwords[A] = "rotated-" + secrets.token_hex(8)
    assert await ensure_session_role(t.admin, "101", t.passwords[A]) == t.roles[A]
    group = await t.admin.fetchval("SELECT sessions_group FROM salon_tenancy")
    assert await memberships(t.admin, t.roles[A]) == {group}
    with pytest.raises(asyncpg.InvalidPasswordError):
        await asyncpg.connect(with_credentials(t.admin_dsn, t.roles[A], old))
    await (await t.connect(A)).fetchval("SELECT 1")
    assert await t.admin.fetchval("SELECT count(*) FROM salon_session_roles") == 2


async def test_a_role_of_that_name_that_is_not_the_session_role_is_not_taken_over(
        tenants: Tenants) -> None:
    prefix = await tenants.admin.fetchval("SELECT role_prefix FROM salon_tenancy")
    squatter = prefix + "company_303"
    await tenants.admin.execute(f'CREATE ROLE "{squatter}"')
    try:
        with pytest.raises(TenancyError):
            await ensure_session_role(tenants.admin, "company_303", "pw")
    finally:
        await tenants.admin.execute(f'DROP ROLE "{squatter}"')


LID_UPSERT = ("INSERT INTO whatsmeow_lid_map (lid, pn) VALUES ($1, $2) "
              "ON CONFLICT (lid) DO UPDATE SET pn = excluded.pn")
"""whatsmeow's own statement (unqualified, upserting by lid)."""


async def test_each_session_has_its_own_lid_directory(tenants: Tenants) -> None:
    """The same LID in two salons: each role upserts into its own table (its schema comes
    first in its search_path), sees only its own mapping, and cannot reach the shared or
    the other's table; the administrator's shared table is untouched."""
    t = tenants
    a, b = await t.connect(A), await t.connect(B)
    await a.execute(LID_UPSERT, "111", "79680000001")
    await a.execute(LID_UPSERT, "111", "79680000002")  # the upsert works
    await b.execute(LID_UPSERT, "111", "79680000003")
    assert await a.fetch("SELECT lid, pn FROM whatsmeow_lid_map") == [("111", "79680000002")]
    assert await b.fetch("SELECT lid, pn FROM whatsmeow_lid_map") == [("111", "79680000003")]
    await refused(a, "SELECT * FROM public.whatsmeow_lid_map")
    await refused(a, LID_UPSERT.replace("whatsmeow_lid_map", "public.whatsmeow_lid_map"),
                  "222", "79680000004")
    await refused(a, f'SELECT * FROM "{t.roles[B]}".whatsmeow_lid_map')
    await refused(a, f'CREATE TABLE "{t.roles[A]}".mine (id int)')
    assert await t.admin.fetchval("SELECT count(*) FROM public.whatsmeow_lid_map") == 0
    await drop_session_role(t.admin, B)
    assert not await t.admin.fetchval(
        "SELECT 1 FROM pg_namespace WHERE nspname = $1", t.roles[B])


async def test_drop_ends_the_role_and_its_connections(tenants: Tenants) -> None:
    t = tenants
    conn = await asyncpg.connect(t.dsn(A))
    try:
        assert await backends(t.admin, t.roles[A]) == 1
        await drop_session_role(t.admin, A)
        await wait_for(lambda: _no_backends(t.admin, t.roles[A]),
                       what="the dropped role's connection to end")
    finally:
        conn.terminate()
    assert not await t.admin.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", t.roles[A])
    assert not await t.admin.fetchval("SELECT 1 FROM salon_session_roles WHERE company_id = $1",
                                      A)
    await drop_session_role(t.admin, A)  # idempotent
    with pytest.raises((asyncpg.InvalidPasswordError,
                        asyncpg.InvalidAuthorizationSpecificationError)):
        await asyncpg.connect(t.dsn(A))


def test_the_password_reaches_postgresql_as_a_scram_verifier() -> None:
    verifier = scram_verifier("pencil", salt=b"0123456789abcdef")
    assert verifier.startswith("SCRAM-SHA-256$4096:MDEyMzQ1Njc4OWFiY2RlZg==$")
    assert "pencil" not in verifier
    assert verifier != scram_verifier("pencil")  # a fresh salt each time
    for bad in ("", "pässword", "new\nline"):
        with pytest.raises(ValueError, match="printable ASCII"):
            scram_verifier(bad)


async def backends(conn: asyncpg.Connection, role: str) -> int:
    return int(await conn.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE usename = $1", role))


async def _no_backends(conn: asyncpg.Connection, role: str) -> bool:
    return not await backends(conn, role)


async def memberships(conn: asyncpg.Connection, role: str) -> set[str]:
    rows = await conn.fetch("SELECT g.rolname FROM pg_auth_members m "
                            "JOIN pg_roles g ON g.oid = m.roleid "
                            "JOIN pg_roles r ON r.oid = m.member WHERE r.rolname = $1", role)
    return {r[0] for r in rows}


# --------------------------------------------------------------------------- coverage

async def test_every_table_a_session_role_can_touch_is_filtered_or_known_shared(
        tenants: Tenants) -> None:
    """A new table without row-level security fails here until it gets a policy (or is
    added to SHARED with a reason in docs/SECURITY.md)."""
    group = await tenants.admin.fetchval("SELECT sessions_group FROM salon_tenancy")
    rows = await tenants.admin.fetch(
        "SELECT c.relname, c.relrowsecurity, "
        "EXISTS (SELECT 1 FROM pg_policies p WHERE p.tablename = c.relname) AS policy, "
        "has_table_privilege($1, c.oid, 'SELECT, INSERT, UPDATE, DELETE') AS granted "
        "FROM pg_class c WHERE c.relnamespace = 'public'::regnamespace AND c.relkind = 'r'",
        group)
    granted = {r["relname"] for r in rows if r["granted"]}
    filtered = {r["relname"] for r in rows if r["relrowsecurity"] and r["policy"]}
    assert granted - filtered == SHARED
    assert not granted & NOT_FOR_SESSIONS
    whatsmeow = {r["relname"] for r in rows if r["relname"].startswith("whatsmeow_")}
    assert whatsmeow - SHARED - PER_SESSION == set(PER_DEVICE) | {"whatsmeow_device"}
    assert not granted & PER_SESSION
    assert set(COMPANY_ROWS) == {t for t in filtered if not t.startswith("whatsmeow_")}


# --------------------------------------------------------------------------- company rows

@pytest.mark.parametrize("table", sorted(COMPANY_ROWS))
async def test_another_companys_rows_cannot_be_read_or_written(tenants: Tenants,
                                                               table: str) -> None:
    t = tenants
    await t.admin.execute(COMPANY_ROWS[table], B)
    before = await t.admin.fetch(f"SELECT * FROM {table} WHERE company_id = $1", B)
    a = await t.connect(A)
    # its own work (the alias table is read-only for sessions: the administrator fills it)
    await (t.admin if table in READ_ONLY else a).execute(COMPANY_ROWS[table], A)
    assert {r[0] for r in await a.fetch(f"SELECT company_id FROM {table}")} == {A}
    assert not await a.fetch(f"SELECT * FROM {table} WHERE company_id = $1", B)
    await affects_nothing(a, f"UPDATE {table} SET company_id = company_id "
                             "WHERE company_id = $1", B)
    await affects_nothing(a, f"DELETE FROM {table} WHERE company_id = $1", B)
    await t.admin.execute(f"DELETE FROM {table} WHERE company_id = $1", B)
    await refused(a, COMPANY_ROWS[table], B)  # forging a row of B's
    await t.admin.execute(COMPANY_ROWS[table], B)
    await affects_nothing(a, f"UPDATE {table} SET company_id = $1", B)  # or refused
    assert {r[0] for r in await a.fetch(f"SELECT company_id FROM {table}")} == {A}
    after = await t.admin.fetch(f"SELECT * FROM {table} WHERE company_id = $1", B)
    assert len(after) == len(before) == 1


async def test_moving_an_own_row_to_another_company_is_refused(tenants: Tenants) -> None:
    a = await tenants.connect(A)
    await a.execute(COMPANY_ROWS["salon_sessions"], A)
    await refused(a, "UPDATE salon_sessions SET company_id = $1", B)


# --------------------------------------------------------------------------- whatsmeow rows

async def test_whatsmeow_rows_belong_to_the_company_that_stored_the_device(
        tenants: Tenants) -> None:
    t = tenants
    a, b = await t.connect(A), await t.connect(B)
    await insert_device(a, JID_A, rows=True)  # as whatsmeow does at pairing, as A's role
    await insert_device(b, JID_B, rows=True)
    owners = await t.admin.fetch("SELECT jid, company_id FROM salon_device_owners")
    assert {r["jid"]: r["company_id"] for r in owners} == {JID_A: A, JID_B: B}

    for table in ["whatsmeow_device", *PER_DEVICE]:
        col = device_column(table)
        assert {r[0] for r in await b.fetch(f"SELECT {col} FROM {table}")} == {JID_B}, table
        await affects_nothing(b, f"UPDATE {table} SET {col} = {col} WHERE {col} = $1", JID_A)
        assert await t.admin.fetchval(f"SELECT count(*) FROM {table} WHERE {col} = $1",
                                      JID_A) == 1, table
    for table in reversed(PER_DEVICE):
        col = device_column(table)
        await affects_nothing(b, f"DELETE FROM {table} WHERE {col} = $1", JID_A)
        await t.admin.execute(f"DELETE FROM {table} WHERE {col} = $1", JID_A)
    for sql in PER_DEVICE.values():  # rows forged for A's device
        await refused(b, sql, JID_A)
        await a.execute(sql, JID_A)  # A still may


async def test_a_device_jid_bound_to_another_company_is_refused(tenants: Tenants) -> None:
    t = tenants
    a, b = await t.connect(A), await t.connect(B)
    await insert_device(a, JID_A)
    upsert = DEVICE + " ON CONFLICT (jid) DO UPDATE SET push_name = 'mine now'"
    assert "another company" in await refused(b, DEVICE, JID_A)
    assert "another company" in await refused(b, upsert, JID_A)
    await insert_device(b, JID_B)
    assert "another company" in await refused(
        b, "UPDATE whatsmeow_device SET jid = $1 WHERE jid = $2", JID_A, JID_B)
    # a device an administrator stored, bound to nobody, is nobody's to take
    await insert_device(t.admin, JID_LOOSE)
    await refused(b, upsert, JID_LOOSE)
    assert not await b.fetch("SELECT 1 FROM whatsmeow_device WHERE jid = $1", JID_LOOSE)
    assert await t.admin.fetchval("SELECT push_name FROM whatsmeow_device WHERE jid = $1",
                                  JID_A) == ""
    owners = await t.admin.fetch("SELECT jid, company_id FROM salon_device_owners")
    assert {r["jid"]: r["company_id"] for r in owners} == {JID_A: A, JID_B: B}


async def test_postgresql_counts_every_refusal_of_a_session_role(tenants: Tenants) -> None:
    """A row written for another company, another company's device and another session's
    lock are each refused *and counted* (a sequence: the refused statement's rollback
    cannot undo it); reading another company's rows and a session's own work count
    nothing."""
    t = tenants
    a, b = await t.connect(A), await t.connect(B)
    await insert_device(b, JID_B)
    before = await read_refusals(t.admin)
    await a.execute(COMPANY_ROWS["salon_sessions"], A)  # its own: fine
    await affects_nothing(a, "UPDATE salon_sessions SET phone = phone WHERE company_id = $1", B)
    assert await read_refusals(t.admin) == before
    await refused(a, COMPANY_ROWS["salon_sessions"], B)
    await refused(a, COMPANY_ROWS["simulator_device"], B)
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await insert_device(a, JID_B)
    await refused(a, "SELECT salon_session_lock_try($1)", session_lock_key(B))
    assert await read_refusals(t.admin) == before + 4


async def test_a_deleted_device_leaves_no_rows_and_no_binding(tenants: Tenants) -> None:
    t = tenants
    a = await t.connect(A)
    await insert_device(a, JID_A, rows=True)
    assert await a.execute("DELETE FROM whatsmeow_device WHERE jid = $1", JID_A) == "DELETE 1"
    for table in PER_DEVICE:  # cascades, and the privacy tokens by the trigger
        assert not await t.admin.fetchval(
            f"SELECT count(*) FROM {table} WHERE {device_column(table)} = $1", JID_A), table
    assert not await t.admin.fetch("SELECT 1 FROM salon_device_owners")
    await insert_device(await t.connect(B), JID_A)  # the JID is free again


async def test_the_administrator_deletes_a_sessions_credentials(tenants: Tenants) -> None:
    t = tenants
    a, b = await t.connect(A), await t.connect(B)
    for conn, company, jid in ((a, A, JID_A), (b, B, JID_B)):
        await insert_device(conn, jid, rows=True)
        for table, sql in COMPANY_ROWS.items():
            await (t.admin if table in READ_ONLY else conn).execute(sql, company)
    report = await delete_session_credentials(t.admin, A)
    assert JID_A in report.device_jids
    assert report.whatsmeow_devices == report.project_rows == report.simulator_devices == 1
    assert not await a.fetch("SELECT 1 FROM whatsmeow_device")
    assert await b.fetchval("SELECT count(*) FROM whatsmeow_device") == 1
    owners = await t.admin.fetch("SELECT jid FROM salon_device_owners")
    assert [r[0] for r in owners] == [JID_B]


# --------------------------------------------------------------------------- the lock

async def test_a_session_takes_proves_and_releases_only_its_own_lock(tenants: Tenants) -> None:
    t = tenants
    a, b = await t.connect(A), await t.connect(B)
    assert await advisory_locks_restricted(t.admin)
    assert await try_session_lock(a, A)
    assert await session_lock_held(a, A)
    assert not await session_lock_held(b, B)
    assert await try_session_lock(b, B)  # each its own

    # the lock taken inside the SECURITY DEFINER function is the caller's backend's
    holder = await t.admin.fetchval(
        "SELECT l.pid FROM pg_locks l WHERE l.locktype = 'advisory' AND l.objsubid = 1 "
        "AND l.classid = (($1::bigint >> 32) & 4294967295)::oid "
        "AND l.objid = ($1::bigint & 4294967295)::oid", session_lock_key(A))
    assert holder == await a.fetchval("SELECT pg_backend_pid()")
    with pytest.raises(SessionInUse):
        await delete_session_credentials(t.admin, A)

    key_a = session_lock_key(A)
    for call in ("salon_session_lock_try", "salon_session_lock_held",
                 "salon_session_lock_release"):
        assert "not this session's lock" in await refused(b, f"SELECT {call}($1)", key_a)
    for direct in ("pg_advisory_lock($1)", "pg_try_advisory_lock($1)",
                   "pg_advisory_xact_lock($1)", "pg_try_advisory_xact_lock($1)",
                   "pg_advisory_lock_shared($1)", "pg_advisory_unlock($1)"):
        await refused(b, f"SELECT {direct}", key_a)
    await refused(b, "SELECT pg_advisory_lock(1, 2)")
    await refused(b, "SELECT * FROM pg_locks")
    await refused(b, "SELECT * FROM pg_lock_status()")
    await b.execute("SELECT pg_advisory_unlock_all()")  # asyncpg's pool reset: own locks only
    assert await session_lock_held(a, A)

    assert await release_session_lock(a, A)
    assert not await session_lock_held(a, A)
    assert await try_session_lock(a, A)
    await a.close()  # the connection ends: PostgreSQL releases the lock
    await wait_for(lambda: t.admin.fetchval("SELECT pg_try_advisory_lock($1)", key_a),
                   what="the lock to go with its connection")
    await t.admin.execute("SELECT pg_advisory_unlock($1)", key_a)


# --------------------------------------------------------------------------- no DDL

async def test_a_session_role_runs_no_ddl_and_reads_no_tenancy_table(tenants: Tenants) -> None:
    a = await tenants.connect(A)
    for sql in ("CREATE TABLE public.mine (id int)",
                "CREATE FUNCTION public.f() RETURNS int LANGUAGE sql AS 'SELECT 1'",
                "ALTER TABLE salon_sessions DISABLE ROW LEVEL SECURITY",
                "DROP POLICY salon_own_rows ON whatsmeow_device",
                "ALTER TABLE whatsmeow_device DISABLE TRIGGER salon_claim_device",
                "TRUNCATE whatsmeow_sessions",
                "INSERT INTO whatsmeow_version VALUES (16, 8)",
                "SELECT salon_tenancy_isolate('whatsmeow_lid_map', 'lid', 'SELECT')",
                *(f"SELECT * FROM {table}" for table in sorted(NOT_FOR_SESSIONS))):
        await refused(a, sql)


async def test_only_the_schemas_owner_migrates(tenants: Tenants) -> None:
    t = tenants
    a = await t.connect(A)
    assert await may_migrate(t.admin)
    assert not await may_migrate(a)
    report = await wait_for_migrations(t.dsn(A), "salon-migrate", timeout_s=0)  # checks only
    assert not report.applied
    await t.admin.execute("DELETE FROM salon_schema_migrations WHERE version = 5")
    with pytest.raises(MigrationError, match="pending"):
        await wait_for_migrations(t.dsn(A), "salon-migrate", timeout_s=0)


async def test_an_owner_that_is_not_a_superuser_gets_the_same_rows_model(database: str) -> None:
    """As on a managed PostgreSQL: the schema's owner has CREATEROLE but is no superuser.
    Rows and devices are isolated all the same; only the advisory-lock functions stay open
    to PUBLIC (a superuser must revoke them), and `advisory_locks_restricted` says so."""
    owner, password = f"owner_{secrets.token_hex(4)}", secrets.token_urlsafe(12)
    superuser = await asyncpg.connect(database)
    try:
        await superuser.execute(f"CREATE ROLE {owner} LOGIN CREATEROLE PASSWORD '{password}'")
        await superuser.execute(f"ALTER DATABASE {database.rpartition('/')[2]} OWNER TO {owner}")
    finally:
        await superuser.close()
    async with session_roles(with_credentials(database, owner, password), A, B) as t:
        assert not await t.admin.fetchval("SELECT rolsuper FROM pg_roles "
                                          "WHERE rolname = current_user")
        assert not await advisory_locks_restricted(t.admin)
        a, b = await t.connect(A), await t.connect(B)
        await insert_device(a, JID_A, rows=True)
        assert "another company" in await refused(b, DEVICE, JID_A)
        assert not await b.fetch("SELECT 1 FROM whatsmeow_sessions")
        assert await try_session_lock(a, A)
        await refused(b, "SELECT salon_session_lock_try($1)", session_lock_key(A))
        with pytest.raises(SessionInUse):
            await delete_session_credentials(t.admin, A)
        await a.close()
        report = await wait_for(lambda: _deleted(t.admin, A), what="the lock to go")
        assert report.whatsmeow_devices == 1


async def _deleted(admin: asyncpg.Connection, company: str) -> DeletedCredentials | None:
    try:
        return await delete_session_credentials(admin, company)
    except SessionInUse:
        return None
