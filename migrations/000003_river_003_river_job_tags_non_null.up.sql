-- River migration 003 (river job tags non null), generated from github.com/riverqueue/river/rivermigrate.
-- Do not edit. Regenerate with: go test ./migrations -run TestRiverMigrationsMatchRiver -update

ALTER TABLE river_job ALTER COLUMN tags SET DEFAULT '{}';
UPDATE river_job SET tags = '{}' WHERE tags IS NULL;
ALTER TABLE river_job ALTER COLUMN tags SET NOT NULL;

INSERT INTO river_migration (version) VALUES (3);
