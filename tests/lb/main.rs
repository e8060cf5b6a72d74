//! Shoal behind a real load balancer (docs/scaling.md): nginx in front of real
//! `shoal` processes started by `scripts/local-cluster.sh`, a rolling restart and a
//! `kill -9` under traffic, the `--workers` supervisor, the cluster dashboard in
//! headless Chromium, the TypeScript client library (clients/js) across a killed
//! instance, and checks of the deployment files in `deploy/`.
//!
//! Needs PostgreSQL, Redis, nginx (and Chromium for the dashboard test): without them
//! a test says so loudly and skips, except under `CI=true`, where it fails.

mod dashboard;
mod deploy;
mod edge_limits;
mod harness;
mod js_client;
mod nginx;
mod supervisor;
mod web_page;
