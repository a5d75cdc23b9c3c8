DROP VIEW ordering_blocked_keys;
DROP TRIGGER outbox_ordering_after_delete ON river_job;
DROP TRIGGER outbox_ordering_after_update ON river_job;
DROP TRIGGER outbox_ordering_before_update ON river_job;
DROP FUNCTION outbox_ordering_after_delete();
DROP FUNCTION outbox_ordering_after_update();
DROP FUNCTION outbox_ordering_before_update();
DROP FUNCTION outbox_ordering_promote(text[], text[]);
DROP FUNCTION outbox_ordering_busy(text, text);
DROP FUNCTION outbox_ordering_held(text, text, bigint);
DROP FUNCTION outbox_ordering_jobs_exist(text, text, bigint, boolean);
DROP FUNCTION outbox_ordering_hash(text, text);
DROP INDEX river_job_ordering_idx;
DROP TABLE outbox_ordered_routes;
-- Jobs left pending by ordering would never run without the triggers.
UPDATE river_job SET state = 'available', scheduled_at = now()
WHERE kind = 'deliver' AND state = 'pending' AND args ? 'ordering_key';
ALTER TABLE events DROP COLUMN ordering_key;
