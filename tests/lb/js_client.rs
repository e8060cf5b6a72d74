//! The TypeScript client library (clients/js) against real instances behind nginx:
//! its own tests (`node --test`, clients/js/test/) get the address of nginx and of
//! each instance with its pid, and kill the instance holding a receiver's socket in
//! the middle of a conversation. Access tokens last 3 s, so every test also runs
//! through the library renewing them.

use std::path::Path;
use std::process::Stdio;

use serde_json::json;

use crate::harness::{LocalCluster, missing_service};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_js_client_resumes_across_a_killed_instance_without_gap_or_duplicate() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("clients/js");
    if !dir.join("dist/index.js").exists() || !dir.join("node_modules").exists() {
        missing_service(
            "the built client library (run `npm ci && npm run build` in clients/js; .ci/run does it)",
        );
        return;
    }
    let Some(lc) = LocalCluster::up(3, &[("JWT_ACCESS_TTL", "3")]).await else {
        return;
    };
    let instances: Vec<_> = (0..3)
        .map(|i| {
            json!({
                "base": format!("http://127.0.0.1:{}", lc.ports[i]),
                "pid": lc.pid(i).as_raw(),
            })
        })
        .collect();
    let out = tokio::process::Command::new("node")
        .args(["--test", "--test-reporter=spec", "test/"])
        .current_dir(&dir)
        .env("SHOAL_URL", lc.base())
        .env("SHOAL_INSTANCES", json!(instances).to_string())
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
    assert!(out.status.success(), "the client library's tests failed");
}
