-- herald's schema. Instants are integer milliseconds since the epoch (UTC), ids are text
-- UUIDs, flags are 0/1 integers, JSON is text: the same SQL then runs on both backends.

CREATE TABLE sessions (
    id                 TEXT PRIMARY KEY,
    access_token_hash  TEXT NOT NULL,
    learner_name       TEXT,
    subject            TEXT,
    parent_email       TEXT,
    started_at         INTEGER NOT NULL,
    completed_at       INTEGER
);
CREATE INDEX sessions_completed_at ON sessions (completed_at);
CREATE INDEX sessions_parent_email ON sessions (parent_email, completed_at);

CREATE TABLE session_events (
    id          TEXT PRIMARY KEY,
    session_id  TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    kind        TEXT NOT NULL,
    detail      TEXT,
    correct     INTEGER,
    created_at  INTEGER NOT NULL
);
CREATE INDEX session_events_session ON session_events (session_id, created_at);

CREATE TABLE email_preferences (
    email                            TEXT PRIMARY KEY,
    weekly_digest_enabled            INTEGER NOT NULL DEFAULT 1,
    session_reports_enabled          INTEGER NOT NULL DEFAULT 1,
    weekly_digest_unsubscribed_at    INTEGER,
    session_reports_unsubscribed_at  INTEGER,
    created_at                       INTEGER NOT NULL,
    updated_at                       INTEGER NOT NULL
);

CREATE TABLE email_send_logs (
    id               TEXT PRIMARY KEY,
    idempotency_key  TEXT NOT NULL UNIQUE,
    email            TEXT NOT NULL,
    email_type       TEXT NOT NULL,
    session_id       TEXT,
    week_start       TEXT,
    status           TEXT NOT NULL CHECK (status IN ('pending', 'sending', 'sent', 'failed', 'suppressed', 'throttled')),
    reason           TEXT,
    attempts         INTEGER NOT NULL DEFAULT 0,
    last_error       TEXT,
    message_id       TEXT,
    next_attempt_at  INTEGER,
    lease_until      INTEGER,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    sent_at          INTEGER
);
CREATE INDEX email_send_logs_due ON email_send_logs (status, next_attempt_at);
CREATE INDEX email_send_logs_email ON email_send_logs (email, created_at);

CREATE TABLE email_throttles (
    id          TEXT PRIMARY KEY,
    email       TEXT NOT NULL,
    email_type  TEXT NOT NULL,
    sent_at     INTEGER NOT NULL
);
CREATE INDEX email_throttles_recipient ON email_throttles (email, email_type, sent_at);

CREATE TABLE job_runs (
    id             TEXT PRIMARY KEY,
    job            TEXT NOT NULL,
    scheduled_for  INTEGER NOT NULL,
    status         TEXT NOT NULL CHECK (status IN ('running', 'succeeded', 'failed')),
    started_at     INTEGER NOT NULL,
    finished_at    INTEGER,
    lease_until    INTEGER,
    owner          TEXT,
    error          TEXT,
    stats          TEXT,
    UNIQUE (job, scheduled_for)
);

CREATE TABLE rate_limit_policies (
    group_name      TEXT NOT NULL,
    tier            TEXT NOT NULL,
    max_requests    INTEGER NOT NULL CHECK (max_requests > 0),
    window_seconds  INTEGER NOT NULL CHECK (window_seconds > 0),
    updated_at      INTEGER NOT NULL,
    PRIMARY KEY (group_name, tier)
);

CREATE TABLE audit_log (
    id         TEXT PRIMARY KEY,
    at         INTEGER NOT NULL,
    actor      TEXT NOT NULL,
    action     TEXT NOT NULL,
    target     TEXT,
    old_value  TEXT,
    new_value  TEXT
);
CREATE INDEX audit_log_at ON audit_log (at);

CREATE TABLE leases (
    name        TEXT PRIMARY KEY,
    holder      TEXT NOT NULL,
    expires_at  INTEGER NOT NULL
);
