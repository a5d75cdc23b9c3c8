-- River migration 008 (job id autoincrement), generated from github.com/riverqueue/river/rivermigrate.
-- Do not edit. Regenerate with: go test ./migrations -run TestRiverMigrationsMatchRiver -update

DELETE FROM river_migration WHERE version = 8;

-- No-op. Postgres sequences already prevent automatically generated job IDs
-- from being reused.
SELECT 1;
