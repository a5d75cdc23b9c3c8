-- golang-migrate creates this table itself; it is declared here only so sqlc
-- can type the readiness query against it.
CREATE TABLE schema_migrations (version bigint NOT NULL PRIMARY KEY, dirty boolean NOT NULL);
