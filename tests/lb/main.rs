//! Shoal behind a real load balancer (issue 6, DESIGN §7): nginx in front of real
//! `shoal` processes started by `scripts/local-cluster.sh`, a rolling restart and a
//! `kill -9` under traffic, the `--workers` supervisor, the cluster dashboard in
//! headless Chromium, and checks of the deployment files in `deploy/`.
//!
//! Needs PostgreSQL, Redis, nginx (and Chromium for the dashboard test): without them
//! a test says so loudly and skips, except under `CI=true`, where it fails.

mod dashboard;
mod deploy;
mod harness;
mod nginx;
mod supervisor;

// Services, test databases and Redis prefixes shared by the multi-process suites.
#[path = "../common/mod.rs"]
mod common;
// The realtime suite's harness: users, workspaces, REST helpers.
#[path = "../realtime/harness.rs"]
#[allow(dead_code, unreachable_pub)]
mod rt;
