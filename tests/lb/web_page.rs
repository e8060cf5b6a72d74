//! The workspace page served at `/` (src/http/web.rs, built from clients/js/web) in
//! headless Chromium, driven by Playwright (clients/js/test-browser/): two users on
//! two instances behind nginx chat and move a task while one instance is killed.

use std::path::Path;

use crate::harness::{LocalCluster, missing_service};

const CHROMIUM: &str = "/usr/bin/chromium";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_users_chat_and_move_a_task_in_chromium_through_an_instance_kill() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("clients/js");
    if !Path::new(CHROMIUM).exists() {
        missing_service("Chromium is not installed (apt-get install chromium; .ci/run does it)");
        return;
    }
    if !dir.join("node_modules/playwright-core").exists() {
        missing_service("playwright-core (run `npm ci` in clients/js; .ci/run does it)");
        return;
    }
    let Some(lc) = LocalCluster::up(2, &[]).await else {
        return;
    };
    lc.run_node_tests("test-browser/", &[("CHROMIUM", CHROMIUM)])
        .await;
}
