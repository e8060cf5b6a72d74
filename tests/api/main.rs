//! API tests: ONE binary against the real server on a random port (embedded mode,
//! a fresh SQLite database per test), plus tests that run the `shoal` binary itself.

mod analytics;
mod auth;
mod errors;
mod helpers;
mod invitations;
mod messages;
mod migration;
mod operations;
mod process;
mod tasks;
mod workspaces;
