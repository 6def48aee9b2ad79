-- Addresses herald no longer mails, whatever their preferences say: a hard bounce (the
-- mailbox does not exist) or a complaint (marked as spam). Checked where preferences are,
-- at decision time and at send time; lifted only by an operator (audited).
CREATE TABLE email_suppressions (
    email       TEXT PRIMARY KEY,
    reason      TEXT NOT NULL CHECK (reason IN ('bounced', 'complained')),
    source      TEXT NOT NULL,
    detail      TEXT,
    created_at  INTEGER NOT NULL
);

-- Bounces, complaints and deferrals as they were reported, one row per event: repeated
-- deliveries of one event change nothing, and soft bounces are counted per recipient.
CREATE TABLE email_events (
    id          TEXT PRIMARY KEY,
    email       TEXT NOT NULL,
    kind        TEXT NOT NULL,
    source      TEXT NOT NULL,
    detail      TEXT,
    at          INTEGER NOT NULL
);
CREATE INDEX email_events_recipient ON email_events (email, kind, at);
