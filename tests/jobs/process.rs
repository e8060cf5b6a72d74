//! Real `shoal` processes on one database, on both engines.

use std::collections::HashSet;

use serde_json::json;
use shoal::db::jobs as job_rows;
use shoal::jobs::Enqueue;

use crate::engines;
use crate::harness::{Engine, Node, TestDatabase, enqueue, eventually, run_shoal, until_state};

engines!(
    a_sigkilled_workers_job_is_finished_once_by_another,
    a_thousand_jobs_from_three_instances_run_exactly_once,
);

async fn a_sigkilled_workers_job_is_finished_once_by_another(engine: Engine) {
    let Some(tdb) = TestDatabase::create(engine).await else {
        return;
    };
    let (db, config) = tdb.db().await;
    // A one-second lease: the dead worker's job is taken back within about a second.
    let env = tdb.env(&[("QUEUE_LEASE", "1"), ("QUEUE_CONCURRENCY", "1")]);
    let effects = tdb.path("effects");
    let id = enqueue(
        &db,
        &config,
        "test.script",
        json!({ "sleep_first_ms": 600_000, "append_to": effects }),
        Enqueue::default(),
    )
    .await;
    let mut a = run_shoal(&["worker"], &env, tdb.dir.path(), "worker-a");
    let held = until_state(&db, id, "running").await;
    assert_eq!(held.attempts, 1);
    a.kill();

    let b = run_shoal(&["worker"], &env, tdb.dir.path(), "worker-b");
    let done = until_state(&db, id, "succeeded").await;
    assert_eq!(done.attempts, 2, "{}", b.log_text());
    let ran = std::fs::read_to_string(&effects).unwrap();
    let ran: Vec<&str> = ran.lines().collect();
    assert_eq!(ran.len(), 1, "exactly one effect: {ran:?}");
    assert_eq!(ran[0], format!("{id} 2 worker-b"));
}

async fn a_thousand_jobs_from_three_instances_run_exactly_once(engine: Engine) {
    let Some(tdb) = TestDatabase::create(engine).await else {
        return;
    };
    let (db, _) = tdb.db().await;
    let env = tdb.env(&[("QUEUE_CONCURRENCY", "4")]);
    let effects = tdb.path("effects");
    let workers: Vec<Node> = (0..3)
        .map(|i| run_shoal(&["worker"], &env, tdb.dir.path(), &format!("worker-{i}")))
        .collect();
    let payload = json!({ "append_to": effects }).to_string();
    let counts = [334, 333, 333];
    let enqueuers: Vec<Node> = counts
        .iter()
        .enumerate()
        .map(|(i, n)| {
            run_shoal(
                &[
                    "jobs",
                    "enqueue",
                    "--type",
                    "test.script",
                    "--payload",
                    &payload,
                    "--count",
                    &n.to_string(),
                ],
                &env,
                tdb.dir.path(),
                &format!("enqueuer-{i}"),
            )
        })
        .collect();
    for e in enqueuers {
        e.success().await;
    }
    eventually("1,000 jobs to succeed", || async {
        // The nightly clean-up's catch-up run is in the table too: count ours.
        let depth = job_rows::depth(db.pool()).await.unwrap();
        let n = depth
            .iter()
            .find(|(state, kind, _)| state == "succeeded" && kind == "test.script")
            .map_or(0, |(_, _, n)| *n);
        (n == 1000).then_some(())
    })
    .await;
    let text = std::fs::read_to_string(&effects).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let ids: HashSet<&str> = lines.iter().map(|l| l.split(' ').next().unwrap()).collect();
    assert_eq!(lines.len(), 1000, "one run per job");
    assert_eq!(ids.len(), 1000, "no job ran twice");
    for w in &workers {
        assert!(!w.log_text().contains("panicked"), "{}", w.log_text());
    }
}
