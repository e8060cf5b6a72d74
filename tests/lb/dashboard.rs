//! The cluster dashboard, loaded through nginx in headless Chromium: the page lists
//! every running instance and raises no error.

use std::process::{Command, Stdio};

use crate::harness::{LocalCluster, eventually, missing_service};

const CHROMIUM: &str = "/usr/bin/chromium";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_lists_the_live_instances_in_headless_chromium_without_errors() {
    if !std::path::Path::new(CHROMIUM).exists() {
        missing_service("Chromium is not installed (apt-get install chromium; .ci/run does it)");
        return;
    }
    let Some(lc) = LocalCluster::up(2, &[]).await else {
        return;
    };
    // Operator endpoints are served by nginx's operator server only.
    let base = lc.operator_base();
    // Both instances are in the registry (their first heartbeat is at start-up).
    eventually("both instances are registered", || async {
        let body = lc
            .http
            .get(format!("{base}/health/cluster"))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        (0..2)
            .all(|i| body.contains(&lc.instance_id(i)))
            .then_some(())
    })
    .await;
    let r = lc
        .http
        .get(format!("{base}/dashboard"))
        .send()
        .await
        .expect("GET /dashboard");
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .expect("type")
            .starts_with("text/html")
    );
    let html = r.text().await.expect("page");
    assert!(
        !html.contains("http://") && !html.contains("https://") && !html.contains("src="),
        "the page loads nothing from elsewhere"
    );

    let profile = tempfile::tempdir().expect("profile dir");
    let url = format!("{base}/dashboard");
    let out = tokio::task::spawn_blocking(move || {
        Command::new(CHROMIUM)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                "--enable-logging=stderr",
                "--v=0",
                &format!("--user-data-dir={}", profile.path().display()),
                "--dump-dom",
                "--virtual-time-budget=5000",
                &url,
            ])
            .stdin(Stdio::null())
            .output()
    })
    .await
    .expect("join")
    .expect("run chromium");
    let dom = String::from_utf8_lossy(&out.stdout);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "chromium failed: {}\n{log}",
        out.status
    );
    assert!(
        dom.contains(r#"data-loaded="true""#),
        "the page rendered its data:\n{dom}\n{log}"
    );
    assert!(dom.contains(r#"data-errors="""#), "no page errors:\n{dom}");
    for i in 0..2 {
        let id = lc.instance_id(i);
        assert!(
            dom.contains(&format!(r#"data-instance="{id}""#)),
            "{id} is listed:\n{dom}"
        );
    }
    for check in ["database", "redis", "queue"] {
        assert!(
            dom.contains(&format!(r#"data-check="{check}""#)),
            "{check} health shown"
        );
    }
    let console_errors: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("CONSOLE") && (l.contains("ERROR") || l.contains("Uncaught")))
        .collect();
    assert!(
        console_errors.is_empty(),
        "console errors: {console_errors:?}"
    );
}
