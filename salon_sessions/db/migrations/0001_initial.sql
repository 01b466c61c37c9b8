-- The project's own tables. neonize/whatsmeow keep device credentials and keys in their
-- own whatsmeow_* tables (created by neonize); salon_sessions.device_jid points at them.
-- The patterns are core.company.COMPANY_ID_PATTERN and core.phone.PHONE_PATTERN.

CREATE TABLE salon_sessions (
    company_id        text PRIMARY KEY
                      CONSTRAINT salon_sessions_company_id_canonical
                      CHECK (company_id ~ '^company_[1-9][0-9]{0,17}$'),
    namespace         text NOT NULL,
    resource_name     text NOT NULL,
    display_name      text,
    device_jid        text,
    phone             text
                      CONSTRAINT salon_sessions_phone_e164
                      CHECK (phone ~ '^[1-9][0-9]{7,14}$'),
    link_method       text CHECK (link_method IN ('qr', 'pairingCode')),
    linked_at         timestamptz,
    logged_out_at     timestamptz,
    last_connected_at timestamptz,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    deleted_at        timestamptz,
    CONSTRAINT salon_sessions_device_needs_link CHECK (device_jid IS NULL OR linked_at IS NOT NULL),
    CONSTRAINT salon_sessions_resource_unique UNIQUE (namespace, resource_name)
);

COMMENT ON TABLE salon_sessions IS
    'One row per salon (company) session; at most one per company.';
COMMENT ON COLUMN salon_sessions.device_jid IS
    'whatsmeow device JID while linked (e.g. 79686484488:32@s.whatsapp.net); NULL otherwise';
COMMENT ON COLUMN salon_sessions.phone IS
    'digits-only E.164 phone of the linked account, never a LID';

CREATE TABLE salon_link_history (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    company_id  text NOT NULL
                CONSTRAINT salon_link_history_company_id_canonical
                CHECK (company_id ~ '^company_[1-9][0-9]{0,17}$'),
    action      text NOT NULL CHECK (action IN ('linked', 'logged_out', 'unlinked', 'deleted')),
    method      text CHECK (method IN ('qr', 'pairingCode')),
    device_jid  text,
    phone       text CHECK (phone ~ '^[1-9][0-9]{7,14}$'),
    actor       text NOT NULL DEFAULT 'system',
    reason      text,
    occurred_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT salon_link_history_linked_has_device
        CHECK (action <> 'linked' OR device_jid IS NOT NULL)
);

CREATE INDEX salon_link_history_company_idx ON salon_link_history (company_id, occurred_at DESC);

COMMENT ON TABLE salon_link_history IS
    'Append-only: who linked a session, when and how; logouts, unlinks and deletions.';
COMMENT ON COLUMN salon_link_history.actor IS
    'who acted: worker, operator, api:<user>, kubectl, ...';

CREATE TABLE salon_company_aliases (
    alias       text PRIMARY KEY CHECK (alias <> '' AND alias = btrim(alias)),
    company_id  text NOT NULL
                CONSTRAINT salon_company_aliases_company_id_canonical
                CHECK (company_id ~ '^company_[1-9][0-9]{0,17}$'),
    source      text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX salon_company_aliases_company_idx ON salon_company_aliases (company_id);

COMMENT ON TABLE salon_company_aliases IS
    'Legacy identifiers (e.g. internal ids of the seed system) mapped to canonical company ids; '
    'the numeric form 962302 needs no row, core.company converts it by rule.';
