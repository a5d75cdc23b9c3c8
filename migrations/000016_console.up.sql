-- The operator console lists dead letters newest failure first, in keyset
-- pages over (failed_at, job_id). River's (state, finalized_at) index cannot
-- give that order across the two dead states, so every page sorted all dead
-- letters after joining each to its event: 0.7 s for a first page of 50 at
-- 100,000 dead letters. With this index the first page reads 50 index
-- entries and 50 events (2-20 ms). It is partial, so the jobs that succeed
-- never enter it. Like 000011's indexes it is built in the migration's
-- transaction, which holds writes to river_job for the build (about 1 s per
-- 1.6 million jobs measured here): run `migrate up` at a quiet moment.
CREATE INDEX river_job_dead_letter_failed_at_idx ON river_job (finalized_at DESC, id DESC)
    WHERE kind = 'deliver' AND state IN ('discarded', 'cancelled');

-- outbox_payload catches parse errors with an EXCEPTION block, which starts
-- a subtransaction, and Postgres forbids subtransactions in parallel mode:
-- declared PARALLEL SAFE (000009), it made any parallel plan over it fail
-- with "cannot start subtransactions during a parallel operation", as a
-- payload search over 100,000 dead letters did.
ALTER FUNCTION outbox_payload(bytea) PARALLEL UNSAFE;
