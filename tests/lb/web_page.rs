//! The workspace page served at `/` (src/http/web.rs, built from clients/js/web) in
//! headless Chromium, driven by Playwright (clients/js/test-browser/): two users on
//! two instances behind nginx chat and move a task while one instance is killed.

use std::path::Path;
use std::process::Stdio;

use serde_json::json;

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
    let instances: Vec<_> = (0..2)
        .map(|i| {
            json!({
                "base": format!("http://127.0.0.1:{}", lc.ports[i]),
                "pid": lc.pid(i).as_raw(),
            })
        })
        .collect();
    let out = tokio::process::Command::new("node")
        .args(["--test", "--test-reporter=spec", "test-browser/"])
        .current_dir(&dir)
        .env("SHOAL_URL", lc.base())
        .env("SHOAL_INSTANCES", json!(instances).to_string())
        .env("CHROMIUM", CHROMIUM)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    // Each node test has its own timeout; this bounds the whole run.
    let out = tokio::time::timeout(std::time::Duration::from_secs(300), out)
        .await
        .expect("node --test finished within 5 minutes")
        .expect("run node --test (is node installed?)");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{report}");
    assert!(out.status.success(), "the page's browser test failed");
}
