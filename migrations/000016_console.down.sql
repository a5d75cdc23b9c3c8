ALTER FUNCTION outbox_payload(bytea) PARALLEL SAFE;
DROP INDEX IF EXISTS river_job_dead_letter_failed_at_idx;
