//! The statistics: flows and stocks per counting rule, figures and identities, report forms,
//! and a model test against a naive recomputation from the raw events.

mod contribution;
mod figures;
mod flows;
mod model;
mod reports;
mod scorecard;
mod stocks;
mod structure;
mod support;
