//! End-to-end tests: one binary, modules per topic.
mod auditor;
mod dashboard;
mod faults;
mod intake_api;
mod intake_import;
mod limits;
mod metric_names;
mod model;
mod operations;
mod payment;
mod personal_data;
mod portal;
mod processing;
mod projection;
mod publication;
mod results;
mod warnings;
