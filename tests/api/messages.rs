//! Chat over REST: per-workspace sequence numbers, idempotent retries, paging
//! backwards (docs/api.md).

use reqwest::StatusCode;
use serde_json::{Value, json};

use sqlx::Connection as _;

use crate::helpers::{PATIENCE, assert_error, assert_invalid, metric_value, spawn_app};

fn seqs(page: &Value) -> Vec<i64> {
    page["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|m| m["seq"].as_i64().expect("seq"))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn posting_messages_numbers_them_1_2_3_per_workspace() {
    let app = spawn_app().await;
    let user = app.signed_up_user().await;
    let first_ws = app.workspace_id(&user).await;
    let second_ws = app.workspace_id(&user).await;

    let mut seen = Vec::new();
    for text in ["one", "two", "three"] {
        let response = app
            .post_message(&user, &first_ws, &json!({ "body": text }))
            .await;
        assert_eq!(response.status(), StatusCode::CREATED);
        let message: Value = response.json().await.expect("message");
        assert_eq!(message["body"], text);
        assert_eq!(message["user_id"], user.id.as_str());
        assert_eq!(message["workspace_id"], first_ws.as_str());
        seen.push(message["seq"].as_i64().expect("seq"));
    }
    let other: Value = app
        .post_message(&user, &second_ws, &json!({ "body": "elsewhere" }))
        .await
        .json()
        .await
        .expect("message");

    assert_eq!(seen, [1, 2, 3]);
    assert_eq!(other["seq"], 1, "each workspace has its own sequence");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_retry_with_the_same_client_id_returns_the_first_message() {
    let app = spawn_app().await;
    let user = app.signed_up_user().await;
    let wid = app.workspace_id(&user).await;
    let body = json!({ "body": "exactly once", "client_id": "c-42" });

    let first = app.post_message(&user, &wid, &body).await;
    assert_eq!(first.status(), StatusCode::CREATED);
    let first: Value = first.json().await.expect("message");
    let retry = app.post_message(&user, &wid, &body).await;

    assert_eq!(retry.status(), StatusCode::OK);
    let retry: Value = retry.json().await.expect("message");
    assert_eq!(retry["id"], first["id"]);
    assert_eq!(retry["seq"], first["seq"]);
    assert_eq!(retry["client_id"], "c-42");
    let page: Value = app
        .get(&user, &format!("/api/workspaces/{wid}/messages"))
        .await
        .json()
        .await
        .expect("page");
    assert_eq!(seqs(&page), [1], "no duplicate was stored");
}

#[tokio::test(flavor = "multi_thread")]
async fn list_is_newest_first_and_pages_backwards_with_before() {
    let app = spawn_app().await;
    let user = app.signed_up_user().await;
    let wid = app.workspace_id(&user).await;
    for i in 1..=5 {
        let r = app
            .post_message(&user, &wid, &json!({ "body": format!("m{i}") }))
            .await;
        assert_eq!(r.status(), StatusCode::CREATED);
    }
    let path = format!("/api/workspaces/{wid}/messages");

    let mut pages = Vec::new();
    let mut before: Option<String> = None;
    loop {
        let url = match &before {
            Some(b) => format!("{path}?limit=2&before={b}"),
            None => format!("{path}?limit=2"),
        };
        let response = app.get(&user, &url).await;
        assert_eq!(response.status(), StatusCode::OK);
        let page: Value = response.json().await.expect("page");
        pages.push(seqs(&page));
        assert!(pages.len() <= 4, "paging terminates");
        match page["next_cursor"].as_str() {
            Some(c) => before = Some(c.to_owned()),
            None => break,
        }
    }

    assert_eq!(pages, vec![vec![5, 4], vec![3, 2], vec![1]]);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_empty_body_is_422() {
    let app = spawn_app().await;
    let user = app.signed_up_user().await;
    let wid = app.workspace_id(&user).await;

    for body in ["", "   "] {
        let response = app
            .post_message(&user, &wid, &json!({ "body": body }))
            .await;
        assert_invalid(response, "body").await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_body_over_16_kib_is_422_and_exactly_16_kib_is_fine() {
    let app = spawn_app().await;
    let user = app.signed_up_user().await;
    let wid = app.workspace_id(&user).await;

    let too_long = app
        .post_message(&user, &wid, &json!({ "body": "x".repeat(16_385) }))
        .await;
    assert_invalid(too_long, "body").await;

    let at_limit = app
        .post_message(&user, &wid, &json!({ "body": "x".repeat(16_384) }))
        .await;
    assert_eq!(at_limit.status(), StatusCode::CREATED);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_before_or_limit_is_422() {
    let app = spawn_app().await;
    let user = app.signed_up_user().await;
    let wid = app.workspace_id(&user).await;

    for query in ["before=0", "before=abc", "limit=0", "limit=101"] {
        let response = app
            .get(&user, &format!("/api/workspaces/{wid}/messages?{query}"))
            .await;
        assert_error(
            response,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn members_see_each_others_messages() {
    let app = spawn_app().await;
    let owner = app.signed_up_user().await;
    let bob = app.signed_up_user().await;
    let wid = app.workspace_id(&owner).await;
    app.add_member(&owner, &wid, &bob).await;
    app.post_message(&owner, &wid, &json!({ "body": "hi bob" }))
        .await;

    let reply = app.post_message(&bob, &wid, &json!({ "body": "hi" })).await;
    assert_eq!(reply.status(), StatusCode::CREATED);
    let page: Value = app
        .get(&bob, &format!("/api/workspaces/{wid}/messages"))
        .await
        .json()
        .await
        .expect("page");

    assert_eq!(seqs(&page), [2, 1]);
    assert_eq!(page["items"][1]["body"], "hi bob");
    assert_eq!(page["items"][1]["user_id"], owner.id.as_str());
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_posts_get_distinct_gapless_seqs() {
    let app = spawn_app().await;
    let user = app.signed_up_user().await;
    let wid = app.workspace_id(&user).await;

    let posts = (0..20).map(|i| {
        let (app, user, wid) = (&app, &user, &wid);
        async move {
            app.post_message(user, wid, &json!({ "body": format!("m{i}") }))
                .await
        }
    });
    let responses = futures::future::join_all(posts).await;

    let mut seqs = Vec::new();
    for response in responses {
        assert_eq!(response.status(), StatusCode::CREATED);
        let message: Value = response.json().await.expect("message");
        seqs.push(message["seq"].as_i64().expect("seq"));
    }
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=20).collect::<Vec<i64>>());
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_retries_with_one_client_id_store_one_message() {
    let app = spawn_app().await;
    let user = app.signed_up_user().await;
    let wid = app.workspace_id(&user).await;
    let body = json!({ "body": "once", "client_id": "retry-storm" });

    let posts = (0..8).map(|_| app.post_message(&user, &wid, &body));
    let responses = futures::future::join_all(posts).await;

    let mut created = 0;
    let mut ids = std::collections::HashSet::new();
    for response in responses {
        match response.status() {
            StatusCode::CREATED => created += 1,
            StatusCode::OK => {}
            other => panic!("unexpected status {other}"),
        }
        let message: Value = response.json().await.expect("message");
        ids.insert(message["id"].as_str().expect("id").to_owned());
    }
    assert_eq!(created, 1, "exactly one post created the message");
    assert_eq!(ids.len(), 1, "every retry got the same message");
    let page: Value = app
        .get(&user, &format!("/api/workspaces/{wid}/messages"))
        .await
        .json()
        .await
        .expect("page");
    assert_eq!(seqs(&page), [1]);
}

#[tokio::test(flavor = "multi_thread")]
async fn messages_queued_behind_a_busy_database_are_committed_together_without_gaps() {
    let app = spawn_app().await;
    let user = app.signed_up_user().await;
    let wid = app.workspace_id(&user).await;
    // Another writer holds SQLite's write lock: the first message's commit waits
    // for it, the others queue behind that commit and are then written as one.
    let url = format!("sqlite://{}/shoal.db", app.data_dir().display());
    let mut blocker = sqlx::SqliteConnection::connect(&url)
        .await
        .expect("open the instance's database");
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut blocker)
        .await
        .expect("take the write lock");
    let posts = (0..10).map(|i| {
        let (app, user, wid) = (&app, &user, &wid);
        async move {
            app.post_message(user, wid, &json!({ "body": format!("m{i}") }))
                .await
        }
    });
    let release = async {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while metric_value(&app.metrics().await, "shoal_chat_messages_waiting", &[]) < 10.0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "10 messages never waited"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        sqlx::query("COMMIT")
            .execute(&mut blocker)
            .await
            .expect("release the write lock");
    };
    let (responses, ()) = tokio::join!(futures::future::join_all(posts), release);

    let mut sent = std::collections::BTreeMap::new();
    for response in responses {
        assert_eq!(response.status(), StatusCode::CREATED);
        let message: Value = response.json().await.expect("message");
        sent.insert(
            message["seq"].as_i64().expect("seq"),
            message["body"].clone(),
        );
    }
    assert_eq!(
        sent.keys().copied().collect::<Vec<_>>(),
        (1..=10).collect::<Vec<i64>>()
    );
    let page: Value = app
        .get(&user, &format!("/api/workspaces/{wid}/messages"))
        .await
        .json()
        .await
        .expect("page");
    let stored: std::collections::BTreeMap<i64, Value> = page["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|m| (m["seq"].as_i64().expect("seq"), m["body"].clone()))
        .collect();
    assert_eq!(stored, sent, "what was acknowledged is what is stored");
    // Written together: one statement stamps its messages with one instant (to the
    // microsecond), which separate commits one after another cannot share.
    let mut per_instant = std::collections::HashMap::<&str, usize>::new();
    for m in page["items"].as_array().expect("items") {
        *per_instant
            .entry(m["created_at"].as_str().expect("created_at"))
            .or_default() += 1;
    }
    let together = per_instant.values().copied().max().unwrap_or(0);
    assert!(
        together >= 9,
        "the messages queued behind the lock went in one commit: {per_instant:?}"
    );
}
