//! Cluster tests (docs/distributed.md): several real `shoal` processes on one
//! PostgreSQL database and one Redis, used as one service.
//!
//! # Layout
//! - [`harness`]: the suite's own checks (a login on every instance, logout
//!   everywhere, a shared budget) over the test kit (`testkit/`), which starts the
//!   instances, services and owned Redis servers.
//! - [`sessions`]: one login used on every instance; logout everywhere; sessions
//!   encrypted at rest with `SESSION_TTL` as their Redis expiry.
//! - [`cache`]: a profile change on one instance is seen at once on the others.
//! - [`chat_commits`]: messages waiting for a commit go in one; `seq` gap-free across
//!   instances.
//! - [`rate_limit`]: one budget spent across all instances.
//! - [`analytics`]: the opt-out is shared.
//! - [`registry`]: `/health/cluster` lists every live instance and forgets dead ones.
//! - [`migrations`]: 20 instances migrate one empty database once; start-up retries.
//! - [`jobs`]: an export asked for on one instance, read from another.
//! - [`hot_path`]: the Redis round-trip and database budget of `GET /api/me`.
//! - [`failover`]: a Sentinel failover under chat load: nothing lost, nobody logged out.
//! - [`outages`]: Redis and PostgreSQL going away and coming back.
//! - [`tls`]: Redis over `rediss://` (one server, Sentinel, Cluster), PostgreSQL with
//!   `sslmode=require` and `verify-full`, with a CA the test makes.
//! - [`pgbouncer`]: twenty instances through a real PgBouncer (transaction pooling)
//!   on a nearly full PostgreSQL; `shoal migrate` as the way to migrate behind it.
//! - [`on_redis_cluster`]: the same promises with a Redis Cluster instead of one Redis.

mod analytics;
mod cache;
mod chat_commits;
mod failover;
mod harness;
mod hot_path;
mod jobs;
mod js_client_outage;
mod migrations;
mod on_redis_cluster;
mod outages;
mod pgbouncer;
mod rate_limit;
mod registry;
mod sessions;
mod tls;
