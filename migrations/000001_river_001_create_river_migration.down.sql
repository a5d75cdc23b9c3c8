-- River migration 001 (create river migration), generated from github.com/riverqueue/river/rivermigrate.
-- Do not edit. Regenerate with: go test ./migrations -run TestRiverMigrationsMatchRiver -update

DROP TABLE river_migration;
