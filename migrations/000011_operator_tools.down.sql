DROP TABLE IF EXISTS route_pauses;
DROP INDEX IF EXISTS river_job_dead_letter_idx;
DROP INDEX IF EXISTS river_job_deliver_event_id_idx;
DROP INDEX IF EXISTS events_route_received_at_idx;
