-- Refusals counted by PostgreSQL itself (issue 10: a forged write is refused by the
-- database *and the attempt is counted*). A refused statement's transaction is rolled back,
-- so no table can hold the count; a sequence can: nextval() is not transactional. Every
-- place where the tenancy model refuses a session role bumps `salon_tenancy_refusals`
-- before it fails: the row-level-security WITH CHECK of every isolated table (a row written
-- for another company), the device binding (another company's device JID) and the session
-- lock functions (another session's lock). Reading another company's rows is no refusal:
-- they are simply not there. The operator exports the sequence as
-- salon_postgres_tenancy_refusals_total (operator/refusals.py).

CREATE SEQUENCE salon_tenancy_refusals;
COMMENT ON SEQUENCE salon_tenancy_refusals IS
    'Refusals of session roles by the tenancy model (docs/SECURITY.md).';

-- Counts one refusal and answers false (for a policy's WITH CHECK and the functions below).
CREATE FUNCTION salon_refused() RETURNS boolean
    LANGUAGE sql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, public, pg_temp
    AS $$ SELECT nextval('salon_tenancy_refusals') IS NULL $$;

REVOKE ALL ON FUNCTION salon_refused() FROM PUBLIC;
DO $$
BEGIN
    EXECUTE format('GRANT EXECUTE ON FUNCTION salon_refused() TO %I',
                   (SELECT sessions_group FROM salon_tenancy));
END
$$;

-- A policy check that counts its failures: CASE (not OR) fixes the order, so the counter
-- runs only when the rule is false.
CREATE FUNCTION salon_counted_check(rule text) RETURNS text
    LANGUAGE sql IMMUTABLE
    AS $$ SELECT format('CASE WHEN (%s) THEN true ELSE salon_refused() END', rule) $$;

REVOKE ALL ON FUNCTION salon_counted_check(text) FROM PUBLIC;

-- every table isolated so far
DO $$
DECLARE
    p record;
BEGIN
    FOR p IN SELECT schemaname, tablename, with_check FROM pg_policies
             WHERE policyname = 'salon_own_rows' AND with_check IS NOT NULL LOOP
        EXECUTE format('ALTER POLICY salon_own_rows ON %I.%I WITH CHECK (%s)',
                       p.schemaname, p.tablename, salon_counted_check(p.with_check));
    END LOOP;
END
$$;

-- and every table isolated from now on
CREATE OR REPLACE FUNCTION salon_tenancy_isolate(tbl regclass, by text, privileges text) RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, public, pg_temp
    AS $$
DECLARE
    grp text := (SELECT sessions_group FROM salon_tenancy);
    rule text;
BEGIN
    IF privileges !~ '^(SELECT|INSERT|UPDATE|DELETE)(, (SELECT|INSERT|UPDATE|DELETE))*$' THEN
        RAISE EXCEPTION 'privileges must be a list of SELECT, INSERT, UPDATE, DELETE: %',
            privileges;
    END IF;
    IF by = 'company_id' THEN
        rule := 'company_id = (SELECT salon_session_company())';
    ELSE
        rule := format('%I = ANY ((SELECT salon_session_devices())::text[])', by);
    END IF;
    EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', tbl);
    EXECUTE format('CREATE POLICY salon_own_rows ON %s USING (%s) WITH CHECK (%s)',
                   tbl, rule, salon_counted_check(rule));
    EXECUTE format('GRANT %s ON %s TO %I', privileges, tbl, grp);
END
$$;

CREATE OR REPLACE FUNCTION salon_claim_device() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, public, pg_temp
    AS $$
DECLARE
    mine  text := salon_session_company();
    owner text;
BEGIN
    IF mine IS NULL THEN
        RETURN NEW;  -- the owner or an administrator: trusted, binds nothing
    END IF;
    IF NOT EXISTS (SELECT 1 FROM salon_device_owners o WHERE o.jid = NEW.jid)
       AND EXISTS (SELECT 1 FROM whatsmeow_device d WHERE d.jid = NEW.jid) THEN
        -- stored by an administrator and bound to nobody: not up for grabs (an upsert
        -- would otherwise bind it here and then update it)
        PERFORM salon_refused();
        RAISE EXCEPTION 'device % exists and belongs to no session', NEW.jid
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    INSERT INTO salon_device_owners (jid, company_id) VALUES (NEW.jid, mine)
    ON CONFLICT (jid) DO NOTHING;
    SELECT o.company_id INTO owner FROM salon_device_owners o WHERE o.jid = NEW.jid;
    IF owner IS DISTINCT FROM mine THEN
        PERFORM salon_refused();
        RAISE EXCEPTION 'device % belongs to another company', NEW.jid
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END
$$;

CREATE OR REPLACE FUNCTION salon_session_lock_key(requested bigint) RETURNS bigint
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, public, pg_temp
    AS $$
DECLARE
    own bigint;
    is_session boolean;
BEGIN
    SELECT true, r.lock_key INTO is_session, own
    FROM salon_session_roles r WHERE r.role_name = session_user;
    IF is_session AND own IS DISTINCT FROM requested THEN
        PERFORM salon_refused();
        RAISE EXCEPTION 'advisory lock % is not this session''s lock', requested
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN requested;
END
$$;
