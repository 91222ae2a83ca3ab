//! The replay service through gRPC against a real PostgreSQL: one binary, modules per topic.
mod access;
mod follow;
mod stream;
mod support;
mod timeline;
