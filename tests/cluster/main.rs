//! Cluster tests (DESIGN §8, issue 3): several real `shoal` processes on one
//! PostgreSQL database and one Redis, used as one service.
//!
//! # Layout
//! - [`harness`]: service discovery (loud skip locally, failure under `CI=true`), a
//!   database and a Redis key prefix per test, `shoal` child processes that are
//!   SIGKILLed on drop, a `redis-server` the test owns, and user helpers.
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
//! - [`outages`]: Redis and PostgreSQL going away and coming back.
//! - [`on_redis_cluster`]: the same promises with a Redis Cluster instead of one Redis.

mod analytics;
mod cache;
mod chat_commits;
#[path = "../common/mod.rs"]
mod common;
mod harness;
mod hot_path;
mod jobs;
mod migrations;
mod on_redis_cluster;
mod outages;
mod rate_limit;
#[path = "../common/redis_cluster.rs"]
mod redis_cluster;
mod registry;
mod sessions;
