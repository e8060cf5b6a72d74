//! The TypeScript client library (clients/js) across a Redis outage: two instances on
//! a Redis this test owns; clients/js/test-outage/ chats from one instance to the
//! other and asks (a line `@shoal kill-redis` / `@shoal restart-redis` on its stdout,
//! answered `done` on its stdin) for the outage in the middle.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::harness::{Cluster, OwnRedis, Services, Spec};
use shoal_testkit::missing_service;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_js_client_gets_every_message_once_across_a_redis_outage() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("clients/js");
    if !dir.join("dist/index.js").exists() {
        missing_service(
            "the built client library (run `npm ci && npm run build` in clients/js; .ci/run does it)",
        );
        return;
    }
    let Some(services) = Services::discover().await else {
        return;
    };
    let Some(mut redis) = OwnRedis::start().await else {
        return;
    };
    let cluster = Cluster::start(&services, Spec::new(2).redis(redis.url())).await;
    let instances: Vec<_> = (0..2).map(|i| cluster.base(i)).collect();
    let mut node = tokio::process::Command::new("node")
        .args(["--test-reporter=spec", "test-outage/redis-outage.test.mjs"])
        .current_dir(&dir)
        .env("SHOAL_INSTANCES", serde_json::json!(instances).to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("run node (is it installed?)");
    let mut answers = node.stdin.take().expect("node's stdin");
    let mut lines = BufReader::new(node.stdout.take().expect("node's stdout")).lines();
    let run = async {
        while let Some(line) = lines.next_line().await.expect("node's output") {
            match line.as_str() {
                "@shoal kill-redis" => redis.kill(),
                "@shoal restart-redis" => redis.restart().await.expect("restart redis-server"),
                _ => {
                    // node's report, as it comes (a hang still shows how far it got).
                    eprintln!("{line}");
                    continue;
                }
            }
            answers.write_all(b"done\n").await.expect("answer node");
        }
        node.wait().await.expect("node's exit")
    };
    let status = tokio::time::timeout(Duration::from_secs(300), run)
        .await
        .expect("the outage test finished within 5 minutes");
    assert!(status.success(), "the client library's outage test failed");
}
