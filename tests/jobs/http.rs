//! Exports end to end over HTTP, on both engines.

use futures::StreamExt;
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};
use shoal::events::{Envelope, ServerEvent, channel_of};

use crate::engines;
use shoal_testkit::plain_client;

use crate::harness::{Engine, TestApp, TestDatabase, eventually, spawn_app};

engines!(
    an_export_runs_in_the_background_and_quotes_its_csv,
    only_members_may_start_or_read_an_export,
    the_result_is_409_until_the_job_succeeded,
    queue_stats_are_for_operators_and_in_metrics,
    a_large_export_is_written_and_read_back_in_pieces,
    one_user_has_a_bounded_number_of_exports_waiting,
);

fn client() -> Client {
    plain_client()
}

/// Registers and logs in a fresh user: (user id, access token).
async fn user(app: &TestApp) -> (String, String) {
    let base = app.url("");
    let user = shoal_testkit::user(&client(), &base).await;
    (user.id, user.token)
}

async fn post(app: &TestApp, token: &str, path: &str, body: Value) -> (StatusCode, Value) {
    let r = client()
        .post(app.url(path))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn get(app: &TestApp, token: &str, path: &str) -> (StatusCode, Value) {
    let r = client()
        .get(app.url(path))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn workspace(app: &TestApp, token: &str) -> String {
    let (status, ws) = post(
        app,
        token,
        "/api/workspaces",
        json!({ "name": "Export me" }),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    ws["id"].as_str().unwrap().to_owned()
}

async fn an_export_runs_in_the_background_and_quotes_its_csv(engine: Engine) {
    let Some(tdb) = TestDatabase::create(engine).await else {
        return;
    };
    let app = spawn_app(&tdb, &[]).await;
    let (me, token) = user(&app).await;
    let wid = workspace(&app, &token).await;
    let tricky = [
        ("Comma, in title", Some("plain")),
        ("Quote \"this\"", Some("He said \"hi\", then left")),
        ("Line\nbreak", Some("a\r\nb\nc")),
        ("Semi;colon\ttab", None),
    ];
    for (title, description) in tricky {
        let (status, _) = post(
            &app,
            &token,
            &format!("/api/workspaces/{wid}/tasks"),
            json!({ "title": title, "description": description }),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED);
    }
    let mut events = app
        .state
        .pubsub
        .subscribe(&channel_of(&format!("user:{me}")))
        .await
        .unwrap();

    let (status, accepted) = post(
        &app,
        &token,
        &format!("/api/workspaces/{wid}/exports"),
        json!({}),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let job_id = accepted["job_id"].as_str().unwrap().to_owned();

    let job = eventually("the export to succeed", || async {
        let (status, job) = get(&app, &token, &format!("/api/jobs/{job_id}")).await;
        assert_eq!(status, StatusCode::OK);
        assert_ne!(job["status"], "dead", "{job}");
        (job["status"] == "succeeded").then_some(job)
    })
    .await;
    assert_eq!(job["id"], job_id.as_str());
    assert_eq!(job["type"], "export.workspace_csv");
    assert_eq!(job["attempts"], 1);
    assert_eq!(job["max_attempts"], 6);
    assert_eq!(job["error"], Value::Null);
    assert!(job["created_at"].is_string() && job["finished_at"].is_string());

    let r = client()
        .get(app.url(&format!("/api/jobs/{job_id}/result")))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    let body = r.text().await.unwrap();
    let mut reader = csv::Reader::from_reader(body.as_bytes());
    let header = reader.headers().unwrap().clone();
    assert_eq!(&header[1], "title");
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), tricky.len());
    for (row, (title, description)) in rows.iter().zip(tricky) {
        assert_eq!(&row[1], title);
        assert_eq!(&row[2], description.unwrap_or(""));
        assert_eq!(&row[3], "todo");
    }
    assert!(body.contains("\"Comma, in title\""));
    assert!(body.contains("\"Quote \"\"this\"\"\""));

    // The requester hears about it in its own room.
    let room = format!("user:{me}");
    let heard = tokio::time::timeout(crate::harness::PATIENCE, async {
        while let Some(delivery) = events.next().await {
            let shoal::pubsub::Delivery::Message(bytes) = delivery else {
                continue;
            };
            let Ok(envelope) = serde_json::from_slice::<Envelope>(&bytes) else {
                continue;
            };
            if let ServerEvent::JobCompleted(done) = envelope.event
                && envelope.room == room
            {
                return Some(done);
            }
        }
        None
    })
    .await
    .expect("job:completed within the patience bound")
    .expect("the subscription stays open");
    assert_eq!(heard.id.to_string(), job_id);
    assert_eq!(heard.status, "succeeded");
    app.stop().await;
}

async fn only_members_may_start_or_read_an_export(engine: Engine) {
    let Some(tdb) = TestDatabase::create(engine).await else {
        return;
    };
    let app = spawn_app(&tdb, &[]).await;
    let (_, owner) = user(&app).await;
    let (_, stranger) = user(&app).await;
    let wid = workspace(&app, &owner).await;
    let (status, _) = post(
        &app,
        &stranger,
        &format!("/api/workspaces/{wid}/exports"),
        json!({}),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, accepted) = post(
        &app,
        &owner,
        &format!("/api/workspaces/{wid}/exports"),
        json!({}),
    )
    .await;
    let job_id = accepted["job_id"].as_str().unwrap().to_owned();
    eventually("the export to succeed", || async {
        let (_, job) = get(&app, &owner, &format!("/api/jobs/{job_id}")).await;
        (job["status"] == "succeeded").then_some(())
    })
    .await;
    for path in [
        format!("/api/jobs/{job_id}"),
        format!("/api/jobs/{job_id}/result"),
    ] {
        let (status, body) = get(&app, &stranger, &path).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {body}");
        assert_eq!(body["error"]["code"], "not_found");
    }
    let r = client()
        .get(app.url(&format!("/api/jobs/{job_id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    app.stop().await;
}

async fn the_result_is_409_until_the_job_succeeded(engine: Engine) {
    let Some(tdb) = TestDatabase::create(engine).await else {
        return;
    };
    // An API-only instance (`shoal serve --no-workers`): nothing runs the job.
    let app = spawn_app(&tdb, &[("QUEUE_WORKERS", "false")]).await;
    let (_, token) = user(&app).await;
    let wid = workspace(&app, &token).await;
    let path = format!("/api/workspaces/{wid}/exports");
    let r = client()
        .post(app.url(&path))
        .bearer_auth(&token)
        .header("Idempotency-Key", "k1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let first: Value = r.json().await.unwrap();
    let again: Value = client()
        .post(app.url(&path))
        .bearer_auth(&token)
        .header("Idempotency-Key", "k1")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        first["job_id"], again["job_id"],
        "same Idempotency-Key, same job"
    );
    let job_id = first["job_id"].as_str().unwrap();
    let (status, job) = get(&app, &token, &format!("/api/jobs/{job_id}")).await;
    assert_eq!(
        (status, job["status"].as_str()),
        (StatusCode::OK, Some("queued"))
    );
    let (status, body) = get(&app, &token, &format!("/api/jobs/{job_id}/result")).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(body["error"]["code"], "job_not_finished");
    app.stop().await;
}

async fn queue_stats_are_for_operators_and_in_metrics(engine: Engine) {
    let Some(tdb) = TestDatabase::create(engine).await else {
        return;
    };
    let token = "operator-token-0123456789";
    let app = spawn_app(&tdb, &[("QUEUE_WORKERS", "false"), ("ADMIN_TOKEN", token)]).await;
    let (_, user_token) = user(&app).await;
    let wid = workspace(&app, &user_token).await;
    post(
        &app,
        &user_token,
        &format!("/api/workspaces/{wid}/exports"),
        json!({}),
    )
    .await;

    let stats = app.url("/api/admin/queue/stats");
    let r = client()
        .get(&stats)
        .bearer_auth(&user_token)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::FORBIDDEN,
        "a logged-in user is not an operator"
    );
    let r = client()
        .get(&stats)
        .header("X-Admin-Token", "wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = client()
        .get(&stats)
        .header("X-Admin-Token", token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["by_state"]["queued"], 1);
    assert_eq!(body["by_state"]["dead"], 0);
    assert_eq!(body["by_type"][0]["type"], "export.workspace_csv");

    let metrics = client()
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .contains("shoal_queue_jobs_by_type{state=\"queued\",type=\"export.workspace_csv\"}"),
        "{metrics}"
    );
    let health: Value = client()
        .get(app.url("/health"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["checks"]["queue"]["status"], "ok");
    app.stop().await;

    let closed = spawn_app(&tdb, &[("QUEUE_WORKERS", "false")]).await;
    let r = client()
        .get(closed.url("/api/admin/queue/stats"))
        .header("X-Admin-Token", token)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::NOT_FOUND,
        "no ADMIN_TOKEN, no admin routes"
    );
    closed.stop().await;
}

// A workspace larger than one page of tasks and one stored piece of CSV comes back
// whole, in order, each task once.
async fn a_large_export_is_written_and_read_back_in_pieces(engine: Engine) {
    let Some(tdb) = TestDatabase::create(engine).await else {
        return;
    };
    let app = spawn_app(&tdb, &[]).await;
    let (me, token) = user(&app).await;
    let wid = workspace(&app, &token).await;
    // 1,100 tasks (three pages of 500) of ~700 bytes: ~800 KB of CSV, four pieces.
    // Written straight to the database in one transaction (the API would take a
    // minute of the test's time to say nothing new).
    let description = "lorem ipsum, \"dolor\" sit amet\n".repeat(20);
    let workspace_id: uuid::Uuid = wid.parse().expect("a workspace id");
    let creator: uuid::Uuid = me.parse().expect("a user id");
    let mut ids = Vec::new();
    let mut tx = app.state.db.begin().await.expect("begin");
    for i in 0..1_100 {
        let fields = shoal::db::tasks::TaskFields {
            title: format!("task {i}"),
            description: Some(description.clone()),
            status: shoal::db::tasks::Status::Todo,
            assignee_id: None,
        };
        let task = shoal::db::tasks::insert(&mut tx, workspace_id, creator, &fields)
            .await
            .expect("insert a task");
        ids.push(task.id.to_string());
    }
    tx.commit().await.expect("commit");
    let (status, accepted) = post(
        &app,
        &token,
        &format!("/api/workspaces/{wid}/exports"),
        json!({}),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let job_id = accepted["job_id"].as_str().unwrap().to_owned();
    eventually("the export to succeed", || async {
        let (_, job) = get(&app, &token, &format!("/api/jobs/{job_id}")).await;
        assert_ne!(job["status"], "dead", "{job}");
        (job["status"] == "succeeded").then_some(())
    })
    .await;
    let stored =
        shoal::db::exports::get_result(app.state.db.pool(), job_id.parse().expect("a job id"))
            .await
            .expect("read the result")
            .expect("a result");
    let pieces = stored.chunks;
    assert!(pieces > 1, "the CSV was stored in pieces ({pieces})");

    let body = client()
        .get(app.url(&format!("/api/jobs/{job_id}/result")))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let mut reader = csv::Reader::from_reader(body.as_bytes());
    let exported: Vec<String> = reader
        .records()
        .map(|r| r.expect("a well-formed record")[0].to_owned())
        .collect();
    assert_eq!(exported, ids, "every task once, in creation order");
    app.stop().await;
}

// Exports cost work and storage: one user has at most EXPORTS_MAX_PENDING_PER_USER
// queued or running (429 `too_many_exports` with Retry-After past it, parallel
// requests included); a repeat with the same Idempotency-Key is not a new export,
// and other users are not affected.
async fn one_user_has_a_bounded_number_of_exports_waiting(engine: Engine) {
    let Some(tdb) = TestDatabase::create(engine).await else {
        return;
    };
    // Nothing runs the jobs, so they stay queued.
    let app = spawn_app(
        &tdb,
        &[
            ("QUEUE_WORKERS", "false"),
            ("EXPORTS_MAX_PENDING_PER_USER", "2"),
        ],
    )
    .await;
    let (_, token) = user(&app).await;
    let wid = workspace(&app, &token).await;
    let path = format!("/api/workspaces/{wid}/exports");
    let start = |key: Option<&'static str>| {
        let mut request = client().post(app.url(&path)).bearer_auth(&token);
        if let Some(k) = key {
            request = request.header("Idempotency-Key", k);
        }
        request.send()
    };
    assert_eq!(
        start(Some("a")).await.unwrap().status(),
        StatusCode::ACCEPTED
    );
    assert_eq!(start(None).await.unwrap().status(), StatusCode::ACCEPTED);
    let refused = start(None).await.unwrap();
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(refused.headers().contains_key("retry-after"));
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "too_many_exports", "{body}");
    assert_eq!(
        start(Some("a")).await.unwrap().status(),
        StatusCode::ACCEPTED,
        "a repeated request is the same export"
    );

    // Parallel requests of another user cannot all pass the count.
    let (_, other) = user(&app).await;
    let theirs = workspace(&app, &other).await;
    let requests = (0..6).map(|_| {
        client()
            .post(app.url(&format!("/api/workspaces/{theirs}/exports")))
            .bearer_auth(&other)
            .send()
    });
    let statuses: Vec<StatusCode> = futures::future::join_all(requests)
        .await
        .into_iter()
        .map(|r| r.unwrap().status())
        .collect();
    let accepted = statuses
        .iter()
        .filter(|s| **s == StatusCode::ACCEPTED)
        .count();
    assert_eq!(accepted, 2, "{statuses:?}");
    assert!(
        statuses
            .iter()
            .all(|s| *s == StatusCode::ACCEPTED || *s == StatusCode::TOO_MANY_REQUESTS),
        "{statuses:?}"
    );
    app.stop().await;
}
