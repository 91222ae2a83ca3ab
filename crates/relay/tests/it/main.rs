//! Integration tests of the relay against real PostgreSQL and real NATS.
//!
//! Ordinary tests share the machine's NATS through `testkit::TestNats` (a private stream and
//! subject prefix each); tests that stop or wipe NATS run their own `testkit::NatsServer`.

mod cluster;
mod concurrent;
mod outage;
mod oversized;
mod publish;
mod recovery;
mod safety;
mod silent_db;
mod stream_setup;
mod support;
