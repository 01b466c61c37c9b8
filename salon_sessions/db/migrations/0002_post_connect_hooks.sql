-- Post-connect hooks (e.g. the marketplace activation): retried and reported, never
-- blocking the session. One row per (company, hook).

CREATE TABLE salon_post_connect_hooks (
    company_id      text NOT NULL
                    CONSTRAINT salon_post_connect_hooks_company_id_canonical
                    CHECK (company_id ~ '^company_[1-9][0-9]{0,17}$'),
    hook            text NOT NULL CHECK (hook ~ '^[a-z][a-z0-9_]{0,63}$'),
    status          text NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'succeeded', 'failed')),
    attempts        integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    last_error      text,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    succeeded_at    timestamptz,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (company_id, hook)
);

CREATE INDEX salon_post_connect_hooks_due_idx
    ON salon_post_connect_hooks (next_attempt_at) WHERE status = 'pending';
