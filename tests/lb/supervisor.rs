//! `shoal serve --workers 2`: two worker processes on one port under a supervisor
//! that restarts one that dies and drains all on SIGTERM.

use std::collections::BTreeSet;
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use reqwest::StatusCode;

use crate::harness::{
    PATIENCE, PrefixCleanup, Services, TestDb, base_env, command, eventually, free_port, token,
};

/// The supervisor's children, from procfs.
fn children(pid: u32) -> BTreeSet<i32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_worker_is_restarted_while_the_port_keeps_answering() {
    let Some(services) = Services::discover().await else {
        return;
    };
    let db = TestDb::create(&services.admin_url).await;
    let keys = PrefixCleanup {
        redis_url: services.redis_url.clone(),
        prefix: format!("lb{}", token()),
    };
    let port = free_port();
    let mut env = base_env(&db.url, &services.redis_url, &keys.prefix);
    env.push(("PORT".into(), port.to_string()));
    env.push(("CLUSTER_RESTART_DELAY".into(), "100".into()));
    let dir = tempfile::tempdir().expect("temp dir");
    env.push(("DATA_DIR".into(), dir.path().display().to_string()));
    let log = std::fs::File::create(dir.path().join("supervisor.log")).expect("log");
    let mut supervisor = tokio::process::Command::from(command(env!("CARGO_BIN_EXE_shoal"), &env))
        .args(["serve", "--workers", "2"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .expect("spawn shoal serve --workers 2");
    let sup_pid = supervisor.id().expect("pid");
    let log_text =
        || std::fs::read_to_string(dir.path().join("supervisor.log")).unwrap_or_default();

    // A fresh connection per request, so that the kernel picks a worker each time.
    let http = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let url = format!("http://127.0.0.1:{port}/health/ready");
    let workers = eventually("both workers are up and ready", || {
        let (http, url) = (&http, &url);
        async move {
            let kids = children(sup_pid);
            let ok = http.get(url).send().await.ok()?.status() == StatusCode::OK;
            (ok && kids.len() == 2).then_some(kids)
        }
    })
    .await;
    // Both serve the port (SO_REUSEPORT): their instance ids both show up.
    let ids = eventually("both workers answer on the one port", || {
        let http = &http;
        async move {
            let mut ids = BTreeSet::new();
            for _ in 0..40 {
                let r = http
                    .get(format!("http://127.0.0.1:{port}/health/live"))
                    .send()
                    .await
                    .ok()?;
                ids.insert(r.headers()["x-instance-id"].to_str().ok()?.to_owned());
            }
            (ids.len() == 2).then_some(ids)
        }
    })
    .await;

    let victim = *workers.iter().next().expect("a worker");
    kill(Pid::from_raw(victim), Signal::SIGKILL).expect("SIGKILL a worker");
    // The port keeps answering: every request after the kill is served (by the
    // survivor, then by both again).
    eventually(
        "the killed worker is gone from the supervisor's children",
        || async { (!children(sup_pid).contains(&victim)).then_some(()) },
    )
    .await;
    for _ in 0..20 {
        let r = http
            .get(&url)
            .send()
            .await
            .expect("the port answers after a worker died");
        assert_eq!(r.status(), StatusCode::OK);
    }
    let replaced = eventually("the supervisor restarts the worker", || {
        let (http, url) = (&http, &url);
        let workers = &workers;
        async move {
            let kids = children(sup_pid);
            let ok = http.get(url).send().await.ok()?.status() == StatusCode::OK;
            (ok && kids.len() == 2 && kids != *workers).then_some(kids)
        }
    })
    .await;
    assert!(!replaced.contains(&victim));
    // The new worker serves too: two instance ids again, one of them new.
    eventually("the restarted worker answers on the port", || {
        let (http, ids) = (&http, &ids);
        async move {
            let mut now = BTreeSet::new();
            for _ in 0..40 {
                let r = http
                    .get(format!("http://127.0.0.1:{port}/health/live"))
                    .send()
                    .await
                    .ok()?;
                now.insert(r.headers()["x-instance-id"].to_str().ok()?.to_owned());
            }
            (now.len() == 2 && now != *ids).then_some(())
        }
    })
    .await;
    assert!(
        log_text().contains("restarting"),
        "the restart is logged:\n{}",
        log_text()
    );

    // SIGTERM to the supervisor drains every worker; it exits 0.
    kill(
        Pid::from_raw(i32::try_from(sup_pid).expect("pid")),
        Signal::SIGTERM,
    )
    .expect("SIGTERM");
    let status = tokio::time::timeout(PATIENCE, supervisor.wait())
        .await
        .expect("the supervisor exits")
        .expect("wait");
    assert!(
        status.success(),
        "exit status {status}; log:\n{}",
        log_text()
    );
    for pid in replaced {
        assert!(
            kill(Pid::from_raw(pid), None).is_err(),
            "worker {pid} outlived its supervisor"
        );
    }
}
