//! Shoal's test kit: what every test suite (`tests/api`, `cluster`, `contract`,
//! `jobs`, `lb`, `realtime`) uses to find or start services, run `shoal` processes,
//! and act as a user over REST and Socket.IO. One copy of each helper, and one
//! patience ([`PATIENCE`]) for everything a test awaits.
//!
//! # Layout
//!
//! - [`wait`]: [`PATIENCE`], [`eventually`], [`within`]: bounded waits, never
//!   timing assertions.
//! - [`services`]: the shared PostgreSQL and Redis (a loud skip locally, a failure
//!   under `CI=true`), a database and a Redis prefix of its own per test.
//! - [`redis_server`]: a `redis-server` or `redis-sentinel` a test owns and kills;
//!   [`redis_cluster`]: a three-master Redis Cluster per test binary;
//!   [`redis_keys`]: removing a test's keys.
//! - [`in_process`]: the application in this process, on its own runtime.
//! - [`process`]: a `shoal` child process; [`cluster`]: the instances of one test,
//!   embedded or distributed.
//! - [`rest`]: accounts, logins, workspaces and messages over the HTTP API.
//! - [`socketio`]: a real Socket.IO v4 client whose events tests await.
//! - [`tls`]: a CA and a server certificate made for one test.
//! - [`own_postgres`]: a PostgreSQL server a test starts with settings of its own;
//!   [`pgbouncer`]: a PgBouncer in transaction pooling mode in front of one.
//! - [`prometheus`]: reading samples out of `/metrics`.

pub mod cluster;
pub mod in_process;
pub mod own_postgres;
pub mod pgbouncer;
pub mod process;
pub mod prometheus;
pub mod redis_cluster;
pub mod redis_keys;
pub mod redis_server;
pub mod rest;
pub mod services;
pub mod socketio;
pub mod tls;
pub mod wait;

pub use cluster::{Cluster, Spec, apply, base_env};
pub use in_process::InProcessApp;
pub use own_postgres::OwnPostgres;
pub use pgbouncer::PgBouncer;
pub use process::{Node, command, shoal_bin};
pub use prometheus::{metric_value, metrics_text};
pub use redis_server::OwnRedis;
pub use rest::{
    Account, COOKIE_NAME, Login, PASSWORD, SECRETS, User, api, call, cookie_client, login,
    plain_client, post_message, register, rest_seqs, send, user, with_bearer, with_cookie,
    workspace,
};
pub use services::{
    PrefixCleanup, Services, TestDb, admin_sql, free_port, in_ci, missing_service,
    redis_connection, redis_url, set_database_reachable, token,
};
pub use socketio::{Auth, Received, Sio};
pub use tls::TestCerts;
pub use wait::{PATIENCE, POLL, eventually, within};
