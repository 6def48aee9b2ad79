-- The email pipeline: an opaque id per recipient for unsubscribe links (random, so it
-- reveals nothing and cannot be enumerated), and a count of duplicate requests per ledger row.
ALTER TABLE email_preferences ADD COLUMN recipient_key TEXT;
CREATE UNIQUE INDEX email_preferences_recipient_key ON email_preferences (recipient_key);
ALTER TABLE email_send_logs ADD COLUMN duplicates INTEGER NOT NULL DEFAULT 0;
ALTER TABLE email_send_logs ADD COLUMN last_duplicate_at INTEGER;
