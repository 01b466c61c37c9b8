-- whatsmeow's LID -> phone directory, one per session role (issue 10: a session sees only
-- its own device's data). whatsmeow loads `whatsmeow_lid_map` whole and upserts it with
-- `ON CONFLICT (lid)`, so row-level security cannot split one shared table by company (an
-- upsert that meets another company's invisible row fails). Instead each session role gets
-- a schema of its own, named like the role, with its own `whatsmeow_lid_map`, first in its
-- search_path (db/tenancy.py ensure_session_role): whatsmeow's unqualified statements find
-- it there. The shared `public.whatsmeow_lid_map` is no longer the sessions group's.
-- Mappings already in the shared table stay the administrator's: they cannot be told apart
-- by company, and whatsmeow learns a session's mappings again as messages arrive.

-- One session role's own schema and lid map (idempotent; called by ensure_session_role and
-- above). Owned by the administrator: the role may use the table, not change its shape.
CREATE FUNCTION salon_session_lid_map(role text) RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, public, pg_temp
    AS $$
BEGIN
    EXECUTE format('CREATE SCHEMA IF NOT EXISTS %I', role);
    EXECUTE format('REVOKE ALL ON SCHEMA %I FROM PUBLIC', role);
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO %I', role, role);
    EXECUTE format('CREATE TABLE IF NOT EXISTS %I.whatsmeow_lid_map '
                   '(lid TEXT PRIMARY KEY, pn TEXT UNIQUE NOT NULL)', role);
    EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON %I.whatsmeow_lid_map TO %I',
                   role, role);
    EXECUTE format('ALTER ROLE %I SET search_path = %I, public', role, role);
END
$$;

REVOKE ALL ON FUNCTION salon_session_lid_map(text) FROM PUBLIC;

DO $$
DECLARE
    grp text := (SELECT sessions_group FROM salon_tenancy);
BEGIN
    EXECUTE format('REVOKE ALL ON whatsmeow_lid_map FROM %I', grp);
END
$$;

-- the schema, table, grants and search_path of every session role made before this migration
DO $$
DECLARE
    role text;
BEGIN
    FOR role IN SELECT role_name FROM salon_session_roles
                WHERE role_name IN (SELECT rolname FROM pg_roles) LOOP
        PERFORM salon_session_lid_map(role);
    END LOOP;
END
$$;
