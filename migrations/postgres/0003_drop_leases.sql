-- Job runs hold their leases in job_runs (lease_until, owner, renewed while a run works);
-- outbox rows in email_send_logs (lease_until). Nothing used this table.
DROP TABLE IF EXISTS leases;
