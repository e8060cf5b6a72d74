//! The queue's contract through the library, on both engines.

use serde_json::json;
use shoal::clock;
use shoal::db::jobs as job_rows;
use shoal::jobs::{self, Enqueue, Status};

use crate::engines;
use crate::harness::{Engine, TestDatabase, enqueue, job, spawn_app, until_state};

engines!(
    rolled_back_enqueue_never_runs,
    idempotency_key_yields_one_job,
    claims_follow_priority_then_run_at,
    retries_back_off_then_die_with_the_last_error,
    a_retried_job_can_still_succeed,
    unknown_types_and_bad_payloads_die_at_once,
    an_expired_lease_is_taken_back_and_run_again,
    shutdown_releases_jobs_that_do_not_finish,
    shutdown_lets_running_jobs_finish_in_time,
    a_cron_tick_is_enqueued_once_across_instances,
    dead_jobs_can_be_listed_and_retried,
    the_clean_up_deletes_analytics_events_by_age,
);

fn lines(path: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

async fn rolled_back_enqueue_never_runs(engine: Engine) {
    let Some(tdb) = TestDatabase::create(engine).await else {
        return;
    };
    let app = spawn_app(&tdb, &[]).await;
    let (db, config) = (&app.state.db, &app.state.config);
    let effects = tdb.path("effects");
    let payload = json!({ "append_to": effects }).to_string();

    let mut tx = db.begin().await.unwrap();
    let rolled_back = jobs::enqueue_raw(
        &mut tx,
        config,
        "test.script",
        payload.clone(),
        Enqueue::default(),
    )
    .await
    .unwrap();
    tx.rollback().await.unwrap();
    let mut tx = db.begin().await.unwrap();
    let committed = jobs::enqueue_raw(&mut tx, config, "test.script", payload, Enqueue::default())
        .await
        .unwrap();
    tx.commit().await.unwrap();
    jobs::wake(&app.state).await;

    until_state(db, committed.id, "succeeded").await;
    assert!(
        job_rows::get(db.pool(), rolled_back.id)
            .await
            .unwrap()
            .is_none()
    );
    let ran = lines(&effects);
    assert_eq!(ran.len(), 1, "{ran:?}");
    assert!(ran[0].starts_with(&committed.id.to_string()));
    app.stop().await;
}

async fn idempotency_key_yields_one_job(engine: Engine) {
    let Some(tdb) = TestDatabase::create(engine).await else {
        return;
    };
    let (db, config) = tdb.db().await;
    let key = Enqueue {
        idempotency_key: Some("report:2026-11-23".into()),
        ..Enqueue::default()
    };
    let mut tx = db.begin().await.unwrap();
    let first = jobs::enqueue_raw(&mut tx, &config, "noop", "{}".into(), key.clone())
        .await
        .unwrap();
    // Twice in the same transaction, then again in another one.
    let again = jobs::enqueue_raw(&mut tx, &config, "noop", "{}".into(), key.clone())
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let mut tx = db.begin().await.unwrap();
    let later = jobs::enqueue_raw(&mut tx, &config, "noop", "{}".into(), key)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert!(first.created);
    assert!(!again.created && !later.created);
    assert_eq!((again.id, later.id), (first.id, first.id));
    assert_eq!(
        job_rows::count_in_state(db.pool(), "queued").await.unwrap(),
        1
    );
}

async fn claims_follow_priority_then_run_at(engine: Engine) {
    let Some(tdb) = TestDatabase::create(engine).await else {
        return;
    };
    let (db, config) = tdb.db().await;
    let low = enqueue(&db, &config, "noop", json!({}), Enqueue::default()).await;
    let high = enqueue(
        &db,
        &config,
        "noop",
        json!({}),
        Enqueue {
            priority: 10,
            ..Enqueue::default()
        },
    )
    .await;
    let later = Enqueue {
        priority: 100,
        run_at: Some(clock::now_micros() + 3_600_000_000),
        ..Enqueue::default()
    };
    let scheduled = enqueue(&db, &config, "noop", json!({}), later).await;
    let lease = clock::now_micros() + 60_000_000;
    let ids = |c: Vec<job_rows::Claimed>| c.into_iter().map(|c| c.id).collect::<Vec<_>>();
    assert_eq!(
        ids(job_rows::claim(&db, "t", 1, lease).await.unwrap()),
        vec![high]
    );
    assert_eq!(
        ids(job_rows::claim(&db, "t", 1, lease).await.unwrap()),
        vec![low]
    );
    assert!(
        job_rows::claim(&db, "t", 10, lease)
            .await
            .unwrap()
            .is_empty()
    );
    let held = job(&db, high).await;
    assert_eq!((held.state.as_str(), held.attempts), ("running", 1));
    assert_eq!(job(&db, scheduled).await.state, "queued");
}

async fn retries_back_off_then_die_with_the_last_error(engine: Engine) {
    let Some(tdb) = TestDatabase::create(engine).await else {
        return;
    };
    // QUEUE_BACKOFF_BASE=0 (harness): retries are due at once, no real sleeping.
    let app = spawn_app(&tdb, &[("QUEUE_MAX_RETRIES", "2")]).await;
    let db = &app.state.db;
    let id = enqueue(
        db,
        &app.state.config,
        "test.script",
        json!({ "fail_times": 100 }),
        Enqueue::default(),
    )
    .await;
    let dead = until_state(db, id, "dead").await;
    assert_eq!((dead.attempts, dead.max_attempts), (3, 3));
    assert_eq!(
        dead.last_error.as_deref(),
        Some("scripted failure of attempt 3")
    );
    assert_eq!(Status::of(&dead.state, dead.attempts), Status::Dead);
    assert!(dead.finished_at.is_some());
    app.stop().await;
}

async fn a_retried_job_can_still_succeed(engine: Engine) {
    let Some(tdb) = TestDatabase::create(engine).await else {
        return;
    };
    let app = spawn_app(&tdb, &[]).await;
    let db = &app.state.db;
    let id = enqueue(
        db,
        &app.state.config,
        "test.script",
        json!({ "fail_times": 2 }),
        Enqueue::default(),
    )
    .await;
    let done = until_state(db, id, "succeeded").await;
    assert_eq!(done.attempts, 3);
    assert_eq!(done.last_error, None);
    app.stop().await;
}

async fn unknown_types_and_bad_payloads_die_at_once(engine: Engine) {
    let Some(tdb) = TestDatabase::create(engine).await else {
        return;
    };
    let app = spawn_app(&tdb, &[]).await;
    let (db, config) = (&app.state.db, &app.state.config);
    let mut tx = db.begin().await.unwrap();
    let unknown = jobs::enqueue_raw(
        &mut tx,
        config,
        "no.such.type",
        "{}".into(),
        Enqueue::default(),
    )
    .await
    .unwrap();
    let garbled = jobs::enqueue_raw(
        &mut tx,
        config,
        "test.script",
        "[1, 2".into(),
        Enqueue::default(),
    )
    .await
    .unwrap();
    let mistyped = jobs::enqueue_raw(
        &mut tx,
        config,
        "test.script",
        r#"{"fail_times": "x"}"#.into(),
        Enqueue::default(),
    )
    .await
    .unwrap();
    let fatal = jobs::enqueue_raw(
        &mut tx,
        config,
        "test.script",
        r#"{"fatal": true}"#.into(),
        Enqueue::default(),
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    jobs::wake(&app.state).await;
    for (id, expected) in [
        (unknown.id, "unknown job type \"no.such.type\""),
        (garbled.id, "undecodable payload for job type test.script"),
        (mistyped.id, "undecodable payload for job type test.script"),
        (fatal.id, "scripted fatal failure"),
    ] {
        let dead = until_state(db, id, "dead").await;
        assert_eq!(dead.attempts, 1, "{id} died at its first attempt");
        let error = dead.last_error.unwrap_or_default();
        assert!(
            error.contains(expected),
            "{error:?} should say {expected:?}"
        );
    }
    app.stop().await;
}

async fn an_expired_lease_is_taken_back_and_run_again(engine: Engine) {
    let Some(tdb) = TestDatabase::create(engine).await else {
        return;
    };
    let (db, config) = tdb.db().await;
    let effects = tdb.path("effects");
    let id = enqueue(
        &db,
        &config,
        "test.script",
        json!({ "append_to": effects }),
        Enqueue::default(),
    )
    .await;
    // A worker that claimed it and vanished: its lease is already over.
    let claimed = job_rows::claim(&db, "vanished-worker", 1, clock::now_micros() - 1)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    let app = spawn_app(&tdb, &[("QUEUE_LEASE", "1")]).await;
    let done = until_state(&db, id, "succeeded").await;
    assert_eq!(done.attempts, 2);
    assert_eq!(lines(&effects).len(), 1);
    app.stop().await;
}

async fn shutdown_releases_jobs_that_do_not_finish(engine: Engine) {
    let Some(tdb) = TestDatabase::create(engine).await else {
        return;
    };
    let (db, config) = tdb.db().await;
    let app = spawn_app(&tdb, &[("SHUTDOWN_TIMEOUT", "1")]).await;
    let id = enqueue(
        &db,
        &config,
        "test.script",
        json!({ "sleep_first_ms": 600_000 }),
        Enqueue::default(),
    )
    .await;
    jobs::wake(&app.state).await;
    until_state(&db, id, "running").await;
    app.stop().await;
    let released = job(&db, id).await;
    assert_eq!(released.state, "queued", "released, not left to its lease");
    assert_eq!(
        released.attempts, 0,
        "an interrupted attempt does not count"
    );
}

async fn shutdown_lets_running_jobs_finish_in_time(engine: Engine) {
    let Some(tdb) = TestDatabase::create(engine).await else {
        return;
    };
    let (db, config) = tdb.db().await;
    let app = spawn_app(&tdb, &[("SHUTDOWN_TIMEOUT", "30")]).await;
    let effects = tdb.path("effects");
    let payload = json!({ "sleep_first_ms": 500, "append_to": effects });
    let id = enqueue(&db, &config, "test.script", payload, Enqueue::default()).await;
    jobs::wake(&app.state).await;
    until_state(&db, id, "running").await;
    app.stop().await;
    let done = job(&db, id).await;
    assert_eq!((done.state.as_str(), done.attempts), ("succeeded", 1));
    assert_eq!(lines(&effects).len(), 1);
}

async fn a_cron_tick_is_enqueued_once_across_instances(engine: Engine) {
    let Some(tdb) = TestDatabase::create(engine).await else {
        return;
    };
    let a = spawn_app(&tdb, &[("QUEUE_WORKERS", "false")]).await;
    let b = spawn_app(&tdb, &[("QUEUE_WORKERS", "false")]).await;
    let now = jobs::scheduler::now();
    let (x, y) = tokio::join!(
        jobs::scheduler::enqueue_due(&a.state, now),
        jobs::scheduler::enqueue_due(&b.state, now)
    );
    assert_eq!(x.unwrap() + y.unwrap(), jobs::scheduler::SCHEDULES.len());
    assert_eq!(
        jobs::scheduler::enqueue_due(&a.state, now).await.unwrap(),
        0
    );
    let queued = job_rows::list(a.state.db.pool(), "queued", 100)
        .await
        .unwrap();
    assert_eq!(queued.len(), jobs::scheduler::SCHEDULES.len());
    assert_eq!(queued[0].kind, "cleanup.nightly");
    a.stop().await;
    b.stop().await;
}

async fn dead_jobs_can_be_listed_and_retried(engine: Engine) {
    let Some(tdb) = TestDatabase::create(engine).await else {
        return;
    };
    let (db, config) = tdb.db().await;
    let id = enqueue(&db, &config, "noop", json!({}), Enqueue::default()).await;
    assert!(
        jobs::admin::retry(&db, id).await.is_err(),
        "only dead jobs are retried"
    );
    let claimed = job_rows::claim(&db, "w", 1, clock::now_micros() + 60_000_000)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    assert!(job_rows::fail(&db, id, "w", "gave up", None).await.unwrap());
    let listed = jobs::admin::list(&db, "dead", 10).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert!(listed[0].contains(&id.to_string()) && listed[0].contains("gave up"));
    jobs::admin::retry(&db, id).await.unwrap();
    let again = job(&db, id).await;
    assert_eq!((again.state.as_str(), again.attempts), ("queued", 0));
}

// The nightly clean-up keeps analytics events for ANALYTICS_RETENTION and finished
// jobs for JOB_RETENTION: what is older is deleted, what is younger stays.
async fn the_clean_up_deletes_analytics_events_by_age(engine: Engine) {
    let Some(tdb) = TestDatabase::create(engine).await else {
        return;
    };
    let app = spawn_app(&tdb, &[]).await;
    let db = &app.state.db;
    let user = uuid::Uuid::now_v7();
    shoal::db::analytics::insert_event(db.writer(), user, "old", &json!({}))
        .await
        .expect("insert");
    let count = || async {
        let row = shoal::db::query("SELECT COUNT(*) AS n FROM analytics_events")
            .fetch_one(db.pool())
            .await
            .expect("count");
        sqlx::Row::try_get::<i64, _>(&row, "n").expect("n")
    };
    assert_eq!(count().await, 1);
    let an_hour = 3_600_000_000;
    let now = clock::now_micros();
    let [.., events] = job_rows::purge_expired(db, now, now - an_hour)
        .await
        .expect("purge");
    assert_eq!((events, count().await), (0, 1), "a younger event stays");
    let [.., events] = job_rows::purge_expired(db, now, now + an_hour)
        .await
        .expect("purge");
    assert_eq!((events, count().await), (1, 0), "an older event goes");
    app.stop().await;
}
