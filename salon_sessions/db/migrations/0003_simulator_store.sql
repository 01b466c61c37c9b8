-- The simulator driver's device store (salon_sessions/worker/simulator.py), created here
-- instead of by the worker: a session's database role runs no DDL (0005_tenancy.sql).
-- IF NOT EXISTS: databases where a worker of an earlier release created them already.

CREATE TABLE IF NOT EXISTS simulator_device (
    company_id text PRIMARY KEY,
    jid        text NOT NULL,
    phone      text NOT NULL,
    push_name  text,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS simulator_lid_map (
    company_id text NOT NULL,
    lid        text NOT NULL,
    phone      text NOT NULL,
    PRIMARY KEY (company_id, lid)
);
