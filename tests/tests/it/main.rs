//! End-to-end tests: one binary, modules per topic.
mod auditor;
mod intake_api;
mod intake_import;
mod limits;
mod model;
mod payment;
mod processing;
mod projection;
mod publication;
mod results;
