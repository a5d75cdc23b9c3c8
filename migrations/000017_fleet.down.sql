DROP FUNCTION IF EXISTS outbox_circuit_failure(text, integer, bigint, text);
DROP TABLE IF EXISTS route_circuits;
DROP FUNCTION IF EXISTS outbox_fleet_lease(text, text, integer, integer, integer, double precision, interval);
DROP TABLE IF EXISTS fleet_leases;
