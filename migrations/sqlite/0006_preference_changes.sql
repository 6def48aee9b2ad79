-- What a recipient asked for beyond on and off: their time zone, and when they turned a
-- type of email back on. Every change to a recipient's preferences, with where it came from
-- (the API, an unsubscribe link, the preference page), is kept in preference_changes.
ALTER TABLE email_preferences ADD COLUMN timezone TEXT;
ALTER TABLE email_preferences ADD COLUMN weekly_digest_resubscribed_at BIGINT;
ALTER TABLE email_preferences ADD COLUMN session_reports_resubscribed_at BIGINT;

CREATE TABLE preference_changes (
    id         TEXT PRIMARY KEY,
    email      TEXT NOT NULL,
    at         BIGINT NOT NULL,
    source     TEXT NOT NULL,
    field      TEXT NOT NULL,
    old_value  TEXT,
    new_value  TEXT
);
CREATE INDEX preference_changes_email ON preference_changes (email, at);
