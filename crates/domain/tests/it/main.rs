//! The dossier's rules, given / when / then: one integration-test binary, one module per area.

mod apology;
mod intake;
mod lifecycle;
mod offline;
mod payment;
mod procedure;
mod processing;
mod props;
mod refusals;
mod results;
mod support;
mod wire;
