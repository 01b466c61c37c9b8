"""whatsmeow store rows written by hand, as whatsmeow writes them (its schema's checks: key
sizes, foreign keys), for tests that need a linked device without WhatsApp."""

from __future__ import annotations

import asyncpg


def _bytes(n: int) -> str:
    return f"decode(repeat('ab', {n}), 'hex')"


DEVICE = (
    "INSERT INTO whatsmeow_device (jid, registration_id, noise_key, identity_key, "
    "signed_pre_key, signed_pre_key_id, signed_pre_key_sig, adv_key, adv_details, "
    f"adv_account_sig, adv_account_sig_key, adv_device_sig) VALUES ($1, 1234, {_bytes(32)}, "
    f"{_bytes(32)}, {_bytes(32)}, 1, {_bytes(64)}, {_bytes(32)}, '\\x0a00'::bytea, "
    f"{_bytes(64)}, {_bytes(32)}, {_bytes(64)})")
"""A registered device `$1` (the statement whatsmeow's pairing runs, with dummy keys)."""

PER_DEVICE: dict[str, str] = {
    "whatsmeow_identity_keys":
        f"INSERT INTO whatsmeow_identity_keys VALUES ($1, 'them', {_bytes(32)})",
    "whatsmeow_pre_keys":
        f"INSERT INTO whatsmeow_pre_keys VALUES ($1, 7, {_bytes(32)}, true)",
    "whatsmeow_sessions": "INSERT INTO whatsmeow_sessions VALUES ($1, 'them', '\\x01'::bytea)",
    "whatsmeow_sender_keys":
        "INSERT INTO whatsmeow_sender_keys VALUES ($1, 'chat', 'them', '\\x01'::bytea)",
    "whatsmeow_app_state_sync_keys":
        "INSERT INTO whatsmeow_app_state_sync_keys VALUES ($1, '\\x01'::bytea, '\\x02'::bytea, "
        "1, '\\x03'::bytea)",
    "whatsmeow_app_state_version":
        f"INSERT INTO whatsmeow_app_state_version VALUES ($1, 'regular', 1, {_bytes(128)})",
    "whatsmeow_app_state_mutation_macs":
        f"INSERT INTO whatsmeow_app_state_mutation_macs VALUES ($1, 'regular', 1, {_bytes(32)}, "
        f"{_bytes(32)})",
    "whatsmeow_contacts":
        "INSERT INTO whatsmeow_contacts (our_jid, their_jid, push_name) VALUES ($1, 'them', 'A')",
    "whatsmeow_chat_settings":
        "INSERT INTO whatsmeow_chat_settings (our_jid, chat_jid) VALUES ($1, 'chat')",
    "whatsmeow_message_secrets":
        "INSERT INTO whatsmeow_message_secrets VALUES ($1, 'chat', 'them', 'id', '\\x01'::bytea)",
    "whatsmeow_privacy_tokens":
        "INSERT INTO whatsmeow_privacy_tokens (our_jid, their_jid, token, timestamp) "
        "VALUES ($1, 'them', '\\x01'::bytea, 1)",
    "whatsmeow_nct_salt": "INSERT INTO whatsmeow_nct_salt VALUES ($1, '\\x01'::bytea)",
    "whatsmeow_event_buffer":
        f"INSERT INTO whatsmeow_event_buffer VALUES ($1, {_bytes(32)}, NULL, 1, 1)",
    "whatsmeow_retry_buffer":
        "INSERT INTO whatsmeow_retry_buffer VALUES ($1, 'chat', 'id', 'fmt', '\\x01'::bytea, 1)",
}
"""One row keyed by device `$1` in every other per-device table, in foreign-key order."""

DEVICE_COLUMN = {"whatsmeow_device": "jid", "whatsmeow_pre_keys": "jid",
                 "whatsmeow_app_state_sync_keys": "jid", "whatsmeow_app_state_version": "jid",
                 "whatsmeow_app_state_mutation_macs": "jid"}
"""The device JID column of each per-device table that does not call it `our_jid`."""


def device_column(table: str) -> str:
    return DEVICE_COLUMN.get(table, "our_jid")


async def insert_device(conn: asyncpg.Connection, jid: str, *, rows: bool = False) -> None:
    """A registered device; with `rows`, one row in every per-device table too."""
    await conn.execute(DEVICE, jid)
    if rows:
        for sql in PER_DEVICE.values():
            await conn.execute(sql, jid)
