-- How many times an occurrence has been run: its first run, each rerun of a failed run and
-- each takeover of a run whose process stopped. Any replica reruns a failed run from it.
ALTER TABLE job_runs ADD COLUMN attempts BIGINT NOT NULL DEFAULT 1;
