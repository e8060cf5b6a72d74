//! Shoal: a real-time team workspace backend that runs as one binary on embedded
//! defaults (SQLite, everything in-process) or as many identical instances sharing
//! PostgreSQL and Redis.
//!
//! # Layout
//!
//! Read from the entry point down; dependencies point the same way (transports →
//! use-cases → capabilities and the database → foundation), and
//! `tests/architecture.rs` keeps them so. docs/architecture.md draws the picture.
//!
//! **Entry.** `main.rs` parses the CLI and hands over to:
//! - [`app`]: start-up in order (config → database → Redis → capabilities → listener →
//!   ready) and shutdown in reverse; builds the one [`state::AppState`].
//! - [`supervisor`]: `serve --workers N`, N processes on one port.
//!
//! **Transports**, each mapping the use-cases' typed errors to its own answers:
//! - [`http`]: the REST API, one router per resource, health, metrics, dashboard.
//! - [`realtime`]: Socket.IO on the same port: handshake, client events with acks,
//!   the hub that delivers events to this instance's sockets, resume by `seq`.
//!
//! **Use-cases**, whichever transport asked:
//! - [`usecase`]: identity (who is calling), membership, posting a chat message.
//! - [`jobs`]: the durable job queue in the database, its workers and handlers.
//!
//! **Context** shared by the layers above:
//! - [`state`]: `AppState`, everything a handler may need, built once.
//! - [`events`]: server → client events and the one function that publishes them.
//! - [`backends`]: the one place that picks in-process or Redis backends.
//!
//! **Capabilities**, each a trait in `mod.rs` with an in-process and a Redis backend
//! beside it: [`session`], [`cache`], [`rate_limit`], [`pubsub`], [`presence`],
//! [`registry`], [`analytics`]. Built on them: [`auth`] (passwords, tokens, sealed
//! sessions), [`user_directory`] (cached user look-ups), [`request_window`] (this
//! instance's request rate and p99).
//!
//! **Database**: [`db`], the SQL layer (SQLite and PostgreSQL through sqlx `Any`),
//! including the group commit of chat messages.
//!
//! **Clients and foundation**: [`redis_client`] (the one Redis client: standalone,
//! Sentinel, Cluster), [`backend_error`] (the capabilities' one error type),
//! [`config`] (typed configuration in sections), [`clock`], [`instance`] (identity),
//! [`listener`] (the TCP listener), [`secrets`] (embedded mode's generated secrets),
//! [`shutdown`] (signals), [`telemetry`] (logs).

pub mod analytics;
pub mod app;
pub mod auth;
pub mod backend_error;
pub mod backends;
pub mod cache;
pub mod clock;
pub mod config;
pub mod db;
pub mod events;
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
pub mod request_window;
pub mod secrets;
pub mod session;
pub mod shutdown;
pub mod state;
pub mod supervisor;
pub mod telemetry;
pub mod usecase;
pub mod user_directory;
