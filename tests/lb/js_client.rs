//! The TypeScript client library (clients/js) against real instances behind nginx:
//! its own tests (`node --test`, clients/js/test/) get the address of nginx and of
//! each instance with its pid, and kill the instance holding a receiver's socket in
//! the middle of a conversation. Access tokens last 3 s, so every test also runs
//! through the library renewing them.

use std::path::Path;

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
    lc.run_node_tests("test/", &[]).await;
}
