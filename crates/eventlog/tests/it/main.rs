//! Integration tests of the event log against the real PostgreSQL (a fresh database per test).

mod append;
mod bulk;
mod concurrency;
mod dossiers;
mod follow;
mod group;
mod idempotency;
mod immutability;
mod load;
mod recover;
mod support;
mod validation;
