//! The app runner, its metrics and its health, on real sockets; the services' pools against a real PostgreSQL.

mod deploy;
mod pool;
mod runner;
