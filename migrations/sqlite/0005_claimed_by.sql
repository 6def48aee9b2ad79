-- The replica that claimed a row being sent (HERALD_INSTANCE). A replica restarted under
-- the same name puts its own rows back in the queue at once instead of waiting out their
-- leases; another replica's rows still wait for theirs.
ALTER TABLE email_send_logs ADD COLUMN claimed_by TEXT;
