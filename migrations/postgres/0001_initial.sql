-- herald's schema (PostgreSQL): the same tables, columns and meaning as migrations/sqlite.
-- Instants are BIGINT milliseconds since the epoch (UTC), ids text UUIDs, flags 0/1, JSON text.

CREATE TABLE sessions (
    id                 TEXT PRIMARY KEY,
    access_token_hash  TEXT NOT NULL,
    learner_name       TEXT,
    subject            TEXT,
    parent_email       TEXT,
    started_at         BIGINT NOT NULL,
    completed_at       BIGINT
);
CREATE INDEX sessions_completed_at ON sessions (completed_at);
CREATE INDEX sessions_parent_email ON sessions (parent_email, completed_at);

CREATE TABLE session_events (
    id          TEXT PRIMARY KEY,
    session_id  TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    kind        TEXT NOT NULL,
    detail      TEXT,
    correct     BIGINT,
    created_at  BIGINT NOT NULL
);
CREATE INDEX session_events_session ON session_events (session_id, created_at);

CREATE TABLE email_preferences (
    email                            TEXT PRIMARY KEY,
    weekly_digest_enabled            BIGINT NOT NULL DEFAULT 1,
    session_reports_enabled          BIGINT NOT NULL DEFAULT 1,
    weekly_digest_unsubscribed_at    BIGINT,
    session_reports_unsubscribed_at  BIGINT,
    created_at                       BIGINT NOT NULL,
    updated_at                       BIGINT NOT NULL
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
    attempts         BIGINT NOT NULL DEFAULT 0,
    last_error       TEXT,
    message_id       TEXT,
    next_attempt_at  BIGINT,
    lease_until      BIGINT,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL,
    sent_at          BIGINT
);
CREATE INDEX email_send_logs_due ON email_send_logs (status, next_attempt_at);
CREATE INDEX email_send_logs_email ON email_send_logs (email, created_at);

CREATE TABLE email_throttles (
    id          TEXT PRIMARY KEY,
    email       TEXT NOT NULL,
    email_type  TEXT NOT NULL,
    sent_at     BIGINT NOT NULL
);
CREATE INDEX email_throttles_recipient ON email_throttles (email, email_type, sent_at);

CREATE TABLE job_runs (
    id             TEXT PRIMARY KEY,
    job            TEXT NOT NULL,
    scheduled_for  BIGINT NOT NULL,
    status         TEXT NOT NULL CHECK (status IN ('running', 'succeeded', 'failed')),
    started_at     BIGINT NOT NULL,
    finished_at    BIGINT,
    lease_until    BIGINT,
    owner          TEXT,
    error          TEXT,
    stats          TEXT,
    UNIQUE (job, scheduled_for)
);

CREATE TABLE rate_limit_policies (
    group_name      TEXT NOT NULL,
    tier            TEXT NOT NULL,
    max_requests    BIGINT NOT NULL CHECK (max_requests > 0),
    window_seconds  BIGINT NOT NULL CHECK (window_seconds > 0),
    updated_at      BIGINT NOT NULL,
    PRIMARY KEY (group_name, tier)
);

CREATE TABLE audit_log (
    id         TEXT PRIMARY KEY,
    at         BIGINT NOT NULL,
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
    expires_at  BIGINT NOT NULL
);
