-- Tenant isolation in PostgreSQL: one LOGIN role per session (salon_sessions/db/tenancy.py
-- creates it), and row-level security so that a session's role reads and writes only its
-- own company's rows and its own devices' whatsmeow rows, and takes only its own advisory
-- lock. docs/SECURITY.md ("PostgreSQL") describes the model; this file is its one source.
--
-- - Roles are cluster-wide, policies per database: the role -> company mapping is a table of
--   this database (salon_session_roles), and role names carry a tag of this database
--   (salon_tenancy.role_prefix) so two deployments on one cluster never share a role.
-- - Every policy asks salon_session_company(), which maps session_user (the login role;
--   current_user is the definer inside SECURITY DEFINER functions) to its company. Any other
--   role that is not the tables' owner (or a superuser, or BYPASSRLS) sees no rows at all.
-- - A whatsmeow device row is bound to the inserting role's company by a trigger
--   (salon_device_owners) when whatsmeow first saves it at pairing; a JID bound to another
--   company is refused. Every other whatsmeow table is filtered by its device JID column.
-- - The session lock: pg_advisory* is revoked from PUBLIC (needs a superuser; otherwise a
--   WARNING and tenancy.advisory_locks_restricted() says so); the session group gets
--   salon_session_lock_try/held/release(key), which accept only the caller's own key.

CREATE TABLE salon_tenancy (
    singleton      boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    role_prefix    text NOT NULL CHECK (role_prefix ~ '^[a-z][a-z0-9_]{0,30}_$'),
    sessions_group text NOT NULL
);

COMMENT ON TABLE salon_tenancy IS
    'One row: the prefix of this database''s session roles and their group role.';

INSERT INTO salon_tenancy (role_prefix, sessions_group)
SELECT 'salon_' || tag || '_', 'salon_' || tag || '_sessions'
FROM (SELECT substr(md5(current_database()), 1, 8) AS tag) t;

CREATE TABLE salon_session_roles (
    role_name   text PRIMARY KEY,
    company_id  text NOT NULL UNIQUE
                CONSTRAINT salon_session_roles_company_id_canonical
                CHECK (company_id ~ '^company_[1-9][0-9]{0,17}$'),
    lock_key    bigint NOT NULL UNIQUE,
    created_at  timestamptz NOT NULL DEFAULT now()
);

COMMENT ON TABLE salon_session_roles IS
    'Which company a session''s LOGIN role acts for, and its advisory lock key '
    '(db.locks.session_lock_key of the company).';

CREATE TABLE salon_device_owners (
    jid         text PRIMARY KEY,
    company_id  text NOT NULL
                CONSTRAINT salon_device_owners_company_id_canonical
                CHECK (company_id ~ '^company_[1-9][0-9]{0,17}$'),
    claimed_at  timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX salon_device_owners_company_idx ON salon_device_owners (company_id);

COMMENT ON TABLE salon_device_owners IS
    'The company each whatsmeow device JID belongs to: recorded when a session role '
    'inserts the device row, removed with the device row.';

-- Nobody but the owner touches these two directly.
ALTER TABLE salon_tenancy ENABLE ROW LEVEL SECURITY;
ALTER TABLE salon_session_roles ENABLE ROW LEVEL SECURITY;
ALTER TABLE salon_device_owners ENABLE ROW LEVEL SECURITY;

-- existing devices: the company that recorded them (its current row first, then history)
INSERT INTO salon_device_owners (jid, company_id)
SELECT DISTINCT ON (jid) jid, company_id
FROM (SELECT device_jid AS jid, company_id, 1 AS rank, updated_at AS at
      FROM salon_sessions WHERE device_jid IS NOT NULL
      UNION ALL
      SELECT device_jid, company_id, 2, occurred_at
      FROM salon_link_history WHERE action = 'linked' AND device_jid IS NOT NULL) known
WHERE jid IN (SELECT jid FROM whatsmeow_device)
ORDER BY jid, rank, at DESC;

-- ---------------------------------------------------------------- who is calling

CREATE FUNCTION salon_session_company() RETURNS text
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, public, pg_temp
    AS $$ SELECT company_id FROM salon_session_roles WHERE role_name = session_user $$;

COMMENT ON FUNCTION salon_session_company() IS
    'The company of the session role logged in on this connection; NULL for any other role.';

-- VOLATILE: it must see the binding that salon_claim_device() has just written when the
-- policy checks the new device row of the same INSERT (a STABLE function would read the
-- statement's snapshot). Policies call it once per statement, as an InitPlan.
CREATE FUNCTION salon_session_devices() RETURNS text[]
    LANGUAGE sql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, public, pg_temp
    AS $$
        SELECT coalesce(array_agg(o.jid), '{}') FROM salon_device_owners o
        WHERE o.company_id = (SELECT salon_session_company())
    $$;

COMMENT ON FUNCTION salon_session_devices() IS
    'The whatsmeow device JIDs bound to the calling session role''s company.';

-- ---------------------------------------------------------------- the session group

DO $$
DECLARE
    grp text := (SELECT sessions_group FROM salon_tenancy);
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = grp) THEN
        EXECUTE format('CREATE ROLE %I NOLOGIN NOINHERIT', grp);
    END IF;
    EXECUTE format('GRANT USAGE ON SCHEMA public TO %I', grp);
    BEGIN  -- PostgreSQL 15's default; databases created by older releases still allow it
        REVOKE CREATE ON SCHEMA public FROM PUBLIC;
    EXCEPTION WHEN insufficient_privilege THEN
        RAISE WARNING 'CREATE on schema public not revoked from PUBLIC: not its owner';
    END;
    BEGIN  -- needed only where CONNECT was revoked from PUBLIC; needs the database's owner
        EXECUTE format('GRANT CONNECT ON DATABASE %I TO %I', current_database(), grp);
    EXCEPTION WHEN insufficient_privilege THEN
        RAISE WARNING 'CONNECT on this database not granted to %: not its owner', grp;
    END;
END
$$;

-- Row-level security on one table for the session roles, and their privileges on it.
-- `by` is 'company_id' or the name of a device JID column. Later migrations call it for
-- their new tables (`SELECT salon_tenancy_isolate('my_table', 'company_id', 'SELECT')`).
CREATE FUNCTION salon_tenancy_isolate(tbl regclass, by text, privileges text) RETURNS void
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
                   tbl, rule, rule);
    EXECUTE format('GRANT %s ON %s TO %I', privileges, tbl, grp);
END
$$;

REVOKE ALL ON FUNCTION salon_tenancy_isolate(regclass, text, text) FROM PUBLIC;

-- the project's tables
SELECT salon_tenancy_isolate('salon_sessions', 'company_id', 'SELECT, INSERT, UPDATE');
SELECT salon_tenancy_isolate('salon_link_history', 'company_id', 'SELECT, INSERT');
SELECT salon_tenancy_isolate('salon_company_aliases', 'company_id', 'SELECT');
SELECT salon_tenancy_isolate('salon_post_connect_hooks', 'company_id',
                             'SELECT, INSERT, UPDATE, DELETE');
-- the simulator's
SELECT salon_tenancy_isolate('simulator_device', 'company_id', 'SELECT, INSERT, UPDATE, DELETE');
SELECT salon_tenancy_isolate('simulator_lid_map', 'company_id', 'SELECT, INSERT, UPDATE, DELETE');
-- whatsmeow's: every per-device table, by its device JID column
SELECT salon_tenancy_isolate(format('%I', c.table_name)::regclass, c.column_name,
                             'SELECT, INSERT, UPDATE, DELETE')
FROM information_schema.columns c
WHERE c.table_schema = 'public' AND c.table_name LIKE 'whatsmeow\_%'
  AND c.table_name <> 'whatsmeow_device'
  AND c.column_name = (CASE WHEN EXISTS (
        SELECT 1 FROM information_schema.columns o
        WHERE o.table_schema = 'public' AND o.table_name = c.table_name
          AND o.column_name = 'our_jid') THEN 'our_jid' ELSE 'jid' END)
ORDER BY c.table_name;
SELECT salon_tenancy_isolate('whatsmeow_device', 'jid', 'SELECT, INSERT, UPDATE, DELETE');

DO $$
DECLARE
    grp text := (SELECT sessions_group FROM salon_tenancy);
BEGIN
    -- whatsmeow reads its version at every open; the worker checks for pending migrations
    EXECUTE format('GRANT SELECT ON whatsmeow_version, salon_schema_migrations TO %I', grp);
    -- a global LID -> phone directory that whatsmeow loads whole and upserts by lid: it
    -- cannot be split by company without changing whatsmeow (docs/SECURITY.md)
    EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON whatsmeow_lid_map TO %I', grp);
END
$$;

-- ---------------------------------------------------------------- device ownership

CREATE FUNCTION salon_claim_device() RETURNS trigger
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
        RAISE EXCEPTION 'device % exists and belongs to no session', NEW.jid
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    INSERT INTO salon_device_owners (jid, company_id) VALUES (NEW.jid, mine)
    ON CONFLICT (jid) DO NOTHING;
    SELECT o.company_id INTO owner FROM salon_device_owners o WHERE o.jid = NEW.jid;
    IF owner IS DISTINCT FROM mine THEN
        RAISE EXCEPTION 'device % belongs to another company', NEW.jid
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER salon_claim_device
    BEFORE INSERT OR UPDATE OF jid ON whatsmeow_device
    FOR EACH ROW EXECUTE FUNCTION salon_claim_device();

-- A deleted device leaves nothing behind: its rows in the one whatsmeow table without a
-- foreign key to whatsmeow_device, and its binding (the JID could be linked again).
CREATE FUNCTION salon_release_device() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, public, pg_temp
    AS $$
BEGIN
    DELETE FROM whatsmeow_privacy_tokens WHERE our_jid = OLD.jid;
    DELETE FROM salon_device_owners WHERE jid = OLD.jid;
    RETURN OLD;
END
$$;

CREATE TRIGGER salon_release_device
    AFTER DELETE ON whatsmeow_device
    FOR EACH ROW EXECUTE FUNCTION salon_release_device();

REVOKE ALL ON FUNCTION salon_claim_device(), salon_release_device() FROM PUBLIC;

-- ---------------------------------------------------------------- the session lock

-- The advisory key a caller may use: a session role only its own (salon_session_roles),
-- anyone else allowed to call these functions (the owner) any key.
CREATE FUNCTION salon_session_lock_key(requested bigint) RETURNS bigint
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, public, pg_temp
    AS $$
DECLARE
    own bigint;
    is_session boolean;
BEGIN
    SELECT true, r.lock_key INTO is_session, own
    FROM salon_session_roles r WHERE r.role_name = session_user;
    IF is_session AND own IS DISTINCT FROM requested THEN
        RAISE EXCEPTION 'advisory lock % is not this session''s lock', requested
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN requested;
END
$$;

-- Advisory locks belong to the backend that takes them, whichever role a function runs
-- as: a lock taken here is the caller's, released when its connection ends.
CREATE FUNCTION salon_session_lock_try(key bigint) RETURNS boolean
    LANGUAGE sql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, public, pg_temp
    AS $$ SELECT pg_try_advisory_lock(salon_session_lock_key(key)) $$;

CREATE FUNCTION salon_session_lock_held(key bigint) RETURNS boolean
    LANGUAGE sql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, public, pg_temp
    AS $$
        SELECT EXISTS (
            SELECT 1 FROM pg_locks l
            WHERE l.locktype = 'advisory' AND l.granted AND l.mode = 'ExclusiveLock'
              AND l.pid = pg_backend_pid()
              AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
              AND l.classid = ((salon_session_lock_key(key) >> 32) & 4294967295)::oid
              AND l.objid = (salon_session_lock_key(key) & 4294967295)::oid
              AND l.objsubid = 1)
    $$;

CREATE FUNCTION salon_session_lock_release(key bigint) RETURNS boolean
    LANGUAGE sql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, public, pg_temp
    AS $$ SELECT pg_advisory_unlock(salon_session_lock_key(key)) $$;

REVOKE ALL ON FUNCTION salon_session_lock_key(bigint), salon_session_lock_try(bigint),
    salon_session_lock_held(bigint), salon_session_lock_release(bigint),
    salon_session_company(), salon_session_devices() FROM PUBLIC;

DO $$
DECLARE
    grp text := (SELECT sessions_group FROM salon_tenancy);
BEGIN
    EXECUTE format('GRANT EXECUTE ON FUNCTION salon_session_lock_try(bigint), '
                   'salon_session_lock_held(bigint), salon_session_lock_release(bigint), '
                   'salon_session_company(), salon_session_devices() TO %I', grp);
END
$$;

-- pg_advisory_* and the lock table for nobody but the owner (and superusers). Only a
-- superuser may change the privileges of pg_catalog's functions: otherwise this warns,
-- and the session roles can still take (never steal) any advisory lock.
-- pg_advisory_unlock_all stays: it releases only the caller's own locks, and asyncpg's
-- pool runs it whenever a connection goes back to the pool.
DO $$
DECLARE
    fn regprocedure;
    owner text := (SELECT r.rolname FROM pg_class c JOIN pg_roles r ON r.oid = c.relowner
                   WHERE c.oid = 'salon_sessions'::regclass);
BEGIN
    IF NOT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
        RAISE WARNING 'not a superuser: pg_advisory_lock() and pg_locks stay open to every '
                      'role of this database (see docs/SECURITY.md)';
        RETURN;
    END IF;
    FOR fn IN
        SELECT p.oid::regprocedure FROM pg_proc p
        WHERE p.pronamespace = 'pg_catalog'::regnamespace
          AND p.proname ~ '^pg_(try_)?advisory_' AND p.proname <> 'pg_advisory_unlock_all'
    LOOP
        EXECUTE format('REVOKE EXECUTE ON FUNCTION %s FROM PUBLIC', fn);
        EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO %I', fn, owner);
    END LOOP;
    REVOKE EXECUTE ON FUNCTION pg_lock_status() FROM PUBLIC;
    REVOKE SELECT ON pg_locks FROM PUBLIC;
    EXECUTE format('GRANT EXECUTE ON FUNCTION pg_lock_status() TO %I', owner);
    EXECUTE format('GRANT SELECT ON pg_locks TO %I', owner);
END
$$;
