//! Integration tests of the projection's storage against a real PostgreSQL (one fresh database
//! per test): the rollups answer like the plain sums, rebuild and verify.

mod support;

mod crash;
mod failing;
mod overflow;
mod rebuild;
mod rollup;
mod verify;
