//! Chat messages on PostgreSQL: one workspace's messages take their `seq` under the
//! workspace row's lock, so they commit one after another; the messages that wait
//! for a commit on an instance are written together (src/db/message_writer.rs),
//! and `seq` stays gap-free and unique across instances.

use std::collections::{BTreeMap, BTreeSet};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::{Cluster, Login, Services, Spec, call, eventually, metrics, with_cookie};
use shoal_testkit::prometheus::metric_value;

async fn post_message(
    cluster: &Cluster,
    node: usize,
    login: &Login,
    wid: &str,
    body: Value,
) -> (StatusCode, Value) {
    call(
        with_cookie(
            cluster.post(node, &format!("/api/workspaces/{wid}/messages")),
            login,
        )
        .json(&body),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_waiting_for_a_commit_are_written_together_with_gapless_seqs() {
    let Some(services) = Services::discover().await else {
        return;
    };
    let cluster = Cluster::start(&services, Spec::new(2)).await;
    let (_, login) = cluster.user(0, 0).await;
    let (status, body) = call(
        with_cookie(cluster.post(0, "/api/workspaces"), &login).json(&json!({"name": "Chat"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let wid = body["id"].as_str().expect("a workspace id").to_owned();

    // Hold the workspace row (as a slow commit of another instance would): the first
    // message's commit waits for it, and the next ones queue behind that commit.
    let mut blocker = cluster.db().connect().await;
    sqlx::query("BEGIN")
        .execute(&mut blocker)
        .await
        .expect("BEGIN");
    sqlx::query("SELECT 1 FROM workspaces WHERE id = $1 FOR UPDATE")
        .bind(&wid)
        .execute(&mut blocker)
        .await
        .expect("lock the workspace row");
    let sends: Vec<_> =
        (0..10)
            .map(|i| {
                let cluster = &cluster;
                let (login, wid) = (&login, &wid);
                async move {
                    post_message(cluster, 0, login, wid, json!({"body": format!("m{i}")})).await
                }
            })
            .collect();
    let sends = futures::future::join_all(sends);
    let release = async {
        eventually("all 10 messages waiting on instance 1", || async {
            let text = metrics(&cluster, 0).await;
            (metric_value(&text, "shoal_chat_messages_waiting", &[]) == 10.0).then_some(())
        })
        .await;
        sqlx::query("COMMIT")
            .execute(&mut blocker)
            .await
            .expect("release the row");
    };
    let (responses, ()) = tokio::join!(sends, release);

    let mut seqs = BTreeSet::new();
    for (status, message) in &responses {
        assert_eq!(*status, StatusCode::CREATED, "{message}");
        seqs.insert(message["seq"].as_i64().expect("seq"));
    }
    assert_eq!(seqs, (1..=10).collect(), "seq 1..=10, once each");
    let text = metrics(&cluster, 0).await;
    let commits = metric_value(&text, "shoal_chat_messages_per_commit_count", &[]);
    let written = metric_value(&text, "shoal_chat_messages_per_commit_sum", &[]);
    assert_eq!(written, 10.0, "every message committed once");
    assert!(
        commits <= 2.0,
        "the 9+ messages that queued behind the blocked commit went in one: {commits} commits"
    );
    assert_eq!(metric_value(&text, "shoal_chat_messages_waiting", &[]), 0.0);

    // Both instances at once, with retries of one client_id among them: every new
    // message gets the next seq, each retry the first message back.
    let sends: Vec<_> = (0..24)
        .map(|i| {
            let cluster = &cluster;
            let (login, wid) = (&login, &wid);
            let body = if i % 4 == 0 {
                json!({"body": "retried", "client_id": "same-send"})
            } else {
                json!({"body": format!("n{i}"), "client_id": format!("c{i}")})
            };
            async move { post_message(cluster, i % 2, login, wid, body).await }
        })
        .collect();
    let responses = futures::future::join_all(sends).await;
    let mut by_seq = BTreeMap::new();
    let mut retried = BTreeSet::new();
    let mut created = 0;
    for (status, message) in &responses {
        match *status {
            StatusCode::CREATED => created += 1,
            StatusCode::OK => {}
            other => panic!("unexpected {other}: {message}"),
        }
        let seq = message["seq"].as_i64().expect("seq");
        if message["client_id"] == "same-send" {
            retried.insert(message["id"].as_str().expect("id").to_owned());
        }
        by_seq.insert(seq, message["id"].as_str().expect("id").to_owned());
    }
    assert_eq!(created, 19, "18 distinct messages and one of the 6 retries");
    assert_eq!(retried.len(), 1, "every retry got the same message");
    assert_eq!(
        by_seq.keys().copied().collect::<Vec<_>>(),
        (11..=29).collect::<Vec<i64>>(),
        "seq continues without a gap or a repeat"
    );
    let stored: Vec<i64> =
        sqlx::query_scalar("SELECT seq FROM messages WHERE workspace_id = $1 ORDER BY seq")
            .bind(&wid)
            .fetch_all(&mut cluster.db().connect().await)
            .await
            .expect("read the messages");
    assert_eq!(stored, (1..=29).collect::<Vec<i64>>());
}
