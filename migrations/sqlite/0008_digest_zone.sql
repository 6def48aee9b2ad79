-- The zone whose digest run queued a weekly digest: its week's days are that zone's, also
-- when the recipient has moved to another zone before it goes out. NULL for other emails
-- (and digests queued before this column: they follow the recipient's zone).
ALTER TABLE email_send_logs ADD COLUMN zone TEXT;
