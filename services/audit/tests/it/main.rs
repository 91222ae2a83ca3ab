//! Integration tests of the audit service against the real PostgreSQL (a fresh database per
//! test) and NATS: checkpoints and proofs, tampering as a superuser, exports, gRPC, the binary.

mod checkpoints;
mod cli;
mod export;
mod grpc;
mod support;
mod tamper;
