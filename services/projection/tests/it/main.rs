//! Integration tests of the projection's storage against a real PostgreSQL (one fresh database
//! per test): the rollups answer like the plain sums, rebuild and verify; the queries' bounds
//! over gRPC and HTTP against the running service.

mod support;

mod asof;
mod batch;
mod crash;
mod failing;
mod limits;
mod openapi;
mod overflow;
mod rebuild;
mod rollup;
mod structure;
mod verify;
