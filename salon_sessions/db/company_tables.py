"""Every table of the project that holds rows per company, and what deleting a session does
to them: the one list that `db.credentials` deletes by and that a test holds against the
migrations (`tests/db/test_company_tables.py`: every table the migrations create with a
`company_id` column is here).

Why a list: a table added by a migration must not outlive a deleted session unnoticed (its
rows are a company's data: a device, a phone number). Adding it to the migrations without
saying here what happens to its rows fails that test; listing it without `kept` is enough
for `db.credentials` to delete them.

whatsmeow's tables are not per company but per device (`whatsmeow_device(jid)` and the
tables that cascade from it); `db.credentials` deletes them by the session's device JIDs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final


@dataclass(frozen=True, slots=True)
class CompanyTable:
    name: str
    kept: str | None = None
    """None: `db.credentials` deletes the company's rows with its session; else why and how
    long they stay."""


COMPANY_TABLES: Final[tuple[CompanyTable, ...]] = (
    # deleted in this order (a company's hooks before its session row)
    CompanyTable("simulator_device"),  # db.simulator_store
    CompanyTable("simulator_lid_map"),  # db.simulator_store
    CompanyTable("salon_post_connect_hooks"),
    CompanyTable("salon_sessions"),
    CompanyTable("salon_link_history",
                 kept="append-only history; db.credentials appends a 'deleted' row"),
    CompanyTable("salon_device_owners",
                 kept="until the device's whatsmeow row goes (a trigger, 0005_tenancy.sql)"),
    CompanyTable("salon_session_roles",
                 kept="until the session's role goes (db.tenancy.drop_session_role)"),
    CompanyTable("salon_company_aliases",
                 kept="the administrator's: legacy identifiers mapped to company ids"),
)

DELETED_WITH_SESSION: Final[tuple[str, ...]] = tuple(
    t.name for t in COMPANY_TABLES if t.kept is None)
"""The tables whose rows of the company `db.credentials` deletes, in order."""
