-- River migration 002 (initial schema), generated from github.com/riverqueue/river/rivermigrate.
-- Do not edit. Regenerate with: go test ./migrations -run TestRiverMigrationsMatchRiver -update

DELETE FROM river_migration WHERE version = 2;

DROP TABLE river_job;
DROP FUNCTION river_job_notify;
DROP TYPE river_job_state;

DROP TABLE river_leader;
