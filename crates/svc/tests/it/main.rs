//! The app runner, its metrics and its health, on real sockets (no database needed).

mod deploy;
mod runner;
