//! Several instances on one PostgreSQL and one Redis: clients on different
//! instances see each other, survive a Redis restart, an instance's death and a
//! rolling restart.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::common::OwnRedis;
use crate::harness::{Auth, Cluster, Services, Sio, api, eventually, rest_seqs, user, workspace};

#[tokio::test]
async fn clients_on_different_instances_see_messages_tasks_typing_and_presence() {
    let Some(services) = Services::discover().await else {
        return;
    };
    let app = Cluster::distributed(&services, None, 2, &[]).await;
    let (b0, b1) = (app.base(0), app.base(1));
    let (ada, bob) = (user(&app.http, &b0).await, user(&app.http, &b1).await);
    let wid = workspace(&app.http, &b0, &ada, &[&bob]).await;
    let mut a = Sio::connect(&b0, Auth::Token(&ada.token)).await;
    let mut b = Sio::connect(&b1, Auth::Cookie(&bob.cookie)).await;
    a.join(&wid, None).await;
    b.join(&wid, None).await;

    // message:new across instances; the ack means committed (REST on the other one).
    let ack = a.send(&wid, "from instance 0", "m1").await;
    assert_eq!(
        rest_seqs(&app.http, &b1, &bob, &wid).await,
        vec![ack["seq"].as_i64().expect("seq")]
    );
    let got = b.next_message(&wid).await;
    assert_eq!(got["id"], ack["id"]);
    let ack = b.send(&wid, "from instance 1", "m2").await;
    assert_eq!(a.message_with_seq(&wid, 2).await["id"], ack["id"]);

    // Task events from HTTP on the other instance, and the assignee's notification.
    let (status, task) = api(
        &app.http,
        Method::POST,
        format!("{b1}/api/workspaces/{wid}/tasks"),
        &bob,
        Some(json!({ "title": "review", "assignee_id": ada.id })),
    )
    .await;
    assert!(status.is_success(), "{task}");
    assert_eq!(a.next_event("task:created").await["id"], task["id"]);
    let note = a.next_event("notification").await;
    assert_eq!(note["task_id"], task["id"]);
    let tid = task["id"].as_str().expect("id");
    api(
        &app.http,
        Method::PATCH,
        format!("{b1}/api/workspaces/{wid}/tasks/{tid}"),
        &bob,
        Some(json!({ "version": 1, "title": "review twice" })),
    )
    .await;
    assert_eq!(a.next_event("task:updated").await["title"], "review twice");
    api(
        &app.http,
        Method::DELETE,
        format!("{b1}/api/workspaces/{wid}/tasks/{tid}"),
        &bob,
        None,
    )
    .await;
    assert_eq!(a.next_event("task:deleted").await["id"], task["id"]);

    // Typing across instances.
    b.call("typing", json!({ "workspace_id": wid })).await;
    assert_eq!(a.next_event("typing").await["user_id"], bob.id.as_str());

    // Presence spans instances.
    let listed = a
        .call("presence:list", json!({ "workspace_id": wid }))
        .await;
    let users = listed["users"].as_array().expect("users").len();
    assert_eq!(users, 2, "{listed}");
    b.close().await;
    let update = a
        .next_where(|r| {
            r.event == "presence:update"
                && r.data["user_id"] == bob.id.as_str()
                && r.data["online"] == false
        })
        .await;
    assert_eq!(update.data["workspace_id"], wid.as_str());
}

#[tokio::test]
async fn after_its_instance_dies_a_client_resumes_on_the_other_and_presence_expires() {
    let Some(services) = Services::discover().await else {
        return;
    };
    let mut app = Cluster::distributed(&services, None, 2, &[("REALTIME_PRESENCE_TTL", "3")]).await;
    let (b0, b1) = (app.base(0), app.base(1));
    let (ada, bob) = (user(&app.http, &b0).await, user(&app.http, &b0).await);
    let wid = workspace(&app.http, &b0, &ada, &[&bob]).await;
    let a = Sio::connect(&b0, Auth::Token(&ada.token)).await;
    a.join(&wid, None).await;
    let mut b = Sio::connect(&b1, Auth::Token(&bob.token)).await;
    b.join(&wid, None).await;
    a.send(&wid, "before", "1").await;
    let last_seen = b.next_message(&wid).await["seq"].as_i64().expect("seq");

    // Bob's instance dies without a goodbye.
    app.nodes[1].kill();
    b.dropped().await;
    for i in 2..=5 {
        a.send(&wid, &format!("while away {i}"), &i.to_string())
            .await;
    }
    // Its presence entry expires (no refresh any more).
    eventually("the dead instance's presence entry expires", || {
        let a = &a;
        let wid = wid.clone();
        async move {
            let listed = a
                .call("presence:list", json!({ "workspace_id": wid }))
                .await;
            (listed["users"].as_array().map(Vec::len) == Some(1)).then_some(())
        }
    })
    .await;

    // Bob reconnects to the surviving instance and resumes.
    let mut b = Sio::connect(&b0, Auth::Token(&bob.token)).await;
    let ack = b.join(&wid, Some(last_seen)).await;
    assert_eq!(ack["recovered"], true, "{ack}");
    assert_eq!(b.seen_seqs(&wid), vec![2, 3, 4, 5]);
    a.send(&wid, "back", "6").await;
    b.next_message(&wid).await;
    assert_eq!(b.seen_seqs(&wid), vec![2, 3, 4, 5, 6]);
    let _ = b1;
}

#[tokio::test]
async fn delivery_resumes_after_a_redis_restart_and_readiness_reports_the_outage() {
    let Some(services) = Services::discover().await else {
        return;
    };
    let Some(mut redis) = OwnRedis::start().await else {
        return;
    };
    let app = Cluster::distributed(&services, Some(redis.url()), 2, &[]).await;
    let (b0, b1) = (app.base(0), app.base(1));
    let (ada, bob) = (user(&app.http, &b0).await, user(&app.http, &b1).await);
    let wid = workspace(&app.http, &b0, &ada, &[&bob]).await;
    let a = Sio::connect(&b0, Auth::Token(&ada.token)).await;
    let mut b = Sio::connect(&b1, Auth::Token(&bob.token)).await;
    a.join(&wid, None).await;
    b.join(&wid, None).await;
    a.send(&wid, "before", "1").await;
    assert_eq!(b.next_message(&wid).await["seq"], 1);

    redis.kill();
    for i in 0..2 {
        eventually("readiness turns 503 while Redis is down", || async {
            (app.ready_status(i).await == Some(StatusCode::SERVICE_UNAVAILABLE)).then_some(())
        })
        .await;
    }
    // A message sent during the outage is committed and acked...
    let during = a.send(&wid, "during", "2").await;
    assert_eq!(during["seq"], 2);

    redis
        .restart()
        .await
        .expect("restart the owned redis-server");
    for i in 0..2 {
        eventually("readiness is 200 again", || async {
            (app.ready_status(i).await == Some(StatusCode::OK)).then_some(())
        })
        .await;
    }
    // ...and delivered after the reconnect (gap repair from the database), then live
    // cross-instance delivery goes on, in both directions.
    assert_eq!(b.next_message(&wid).await["seq"], 2);
    a.send(&wid, "after", "3").await;
    assert_eq!(b.next_message(&wid).await["seq"], 3);
    b.send(&wid, "after too", "4").await;
    let mut a = a;
    assert_eq!(a.message_with_seq(&wid, 4).await["seq"], 4);
    // Its own message comes back to the sender too (after the ack, not before).
    b.message_with_seq(&wid, 4).await;
    assert_eq!(b.seen_seqs(&wid), vec![1, 2, 3, 4]);
}

#[tokio::test]
async fn no_acked_message_is_lost_across_a_rolling_restart() {
    let Some(services) = Services::discover().await else {
        return;
    };
    let mut app = Cluster::distributed(&services, None, 2, &[]).await;
    let (b0, b1) = (app.base(0), app.base(1));
    let (ada, bob) = (user(&app.http, &b0).await, user(&app.http, &b0).await);
    let wid = workspace(&app.http, &b0, &ada, &[&bob]).await;
    let mut sender = Sio::connect(&b0, Auth::Token(&ada.token)).await;
    sender.join(&wid, None).await;
    let mut receiver = Sio::connect(&b1, Auth::Token(&bob.token)).await;
    receiver.join(&wid, None).await;
    let mut acked: Vec<i64> = Vec::new();
    let mut received: Vec<i64> = Vec::new();

    send_batch(&sender, &wid, 0, &mut acked).await;

    // Instance 0 is restarted: its sockets are told to go, it exits 0.
    app.nodes[0].terminate();
    sender.dropped().await;
    let status = app.nodes[0].wait_exit().await;
    assert!(status.success(), "instance 0 exit status {status}");
    sender = Sio::connect(&b1, Auth::Token(&ada.token)).await;
    sender.join(&wid, None).await;
    send_batch(&sender, &wid, 5, &mut acked).await;
    let n2 = app.start_node().await;
    let b2 = app.base(n2);

    // Instance 1 is restarted: both clients move to the new instance and resume.
    app.nodes[1].terminate();
    receiver.dropped().await;
    sender.dropped().await;
    assert!(app.nodes[1].wait_exit().await.success());
    received.extend(receiver.seen_seqs(&wid));
    let since = received.last().copied().unwrap_or(0);
    let mut receiver = Sio::connect(&b2, Auth::Token(&bob.token)).await;
    let ack = receiver.join(&wid, Some(since)).await;
    assert_eq!(ack["recovered"], true, "{ack}");
    sender = Sio::connect(&b2, Auth::Token(&ada.token)).await;
    sender.join(&wid, None).await;
    send_batch(&sender, &wid, 10, &mut acked).await;
    let last = *acked.last().expect("acked");
    receiver
        .next_where(|r| r.event == "message:new" && r.data["seq"] == last)
        .await;
    received.extend(receiver.seen_seqs(&wid));

    assert_eq!(acked, (1..=15).collect::<Vec<i64>>());
    assert_eq!(
        received, acked,
        "every acked message exactly once, in order"
    );
    assert_eq!(rest_seqs(&app.http, &b2, &ada, &wid).await, acked);
    let _ = (b0, b1, &mut sender);
}

/// Sends five messages (client ids `c{from}`…) and records their acked `seq`s.
async fn send_batch(sender: &Sio, wid: &str, from: usize, acked: &mut Vec<i64>) {
    for i in from..from + 5 {
        let ack = sender.send(wid, &format!("m{i}"), &format!("c{i}")).await;
        acked.push(ack["seq"].as_i64().expect("seq"));
    }
}
