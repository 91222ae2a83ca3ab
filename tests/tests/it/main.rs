//! End-to-end tests: one binary, modules per topic.
mod publication;
