//! Shoal: a real-time team workspace backend that runs as one binary on embedded
//! defaults (SQLite, everything in-process) or as many identical instances sharing
//! PostgreSQL and Redis.
//!
//! # Layout
//!
//! - [`config`]: the one typed configuration, from env and `shoal.toml`.
//! - Capabilities, each a trait in `mod.rs` with an in-process and a Redis backend:
//!   [`session`], [`cache`], [`rate_limit`], [`pubsub`], [`presence`], [`registry`],
//!   [`analytics`]; they share [`backend_error::BackendError`].
//! - [`realtime`]: Socket.IO on the HTTP port; cross-instance delivery through
//!   [`pubsub`], resume by message `seq`.
//! - [`store`]: the SQL repository layer (SQLite and PostgreSQL through sqlx `Any`).
//! - [`clock`]: time as stored and as shown.
//! - [`jobs`]: the durable job queue in the database, its workers and handlers.
//! - [`supervisor`]: `serve --workers N`, N processes on one port (SO_REUSEPORT via
//!   [`listener`]).

pub mod analytics;
pub mod app;
pub mod auth;
pub mod backend_error;
pub mod backends;
pub mod cache;
pub mod clock;
pub mod config;
pub mod http;
pub mod instance;
pub mod jobs;
pub mod listener;
pub mod presence;
pub mod pubsub;
pub mod rate_limit;
pub mod realtime;
pub mod redis_client;
pub mod registry;
pub mod secrets;
pub mod session;
pub mod shutdown;
pub mod state;
pub mod store;
pub mod supervisor;
pub mod telemetry;
pub mod user_directory;
