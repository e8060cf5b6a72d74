//! Several instances on one PostgreSQL and one Redis: clients on different
//! instances see each other, survive a Redis restart, an instance's death and a
//! rolling restart.

use reqwest::{Method, StatusCode};
use serde_json::json;

use shoal_testkit::{
    Account, Auth, Cluster, Received, Services, Sio, api, call, eventually, login, rest_seqs, user,
    workspace,
};
use shoal_testkit::{OwnRedis, set_database_reachable};

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

// A socket is authenticated once, at its handshake; ending its login must still reach
// it, on every instance: a logout (or a refresh token used twice) closes that login's
// sockets after telling them why, and the user's other login keeps its own.
#[tokio::test]
async fn ending_a_login_closes_its_sockets_on_every_instance() {
    let Some(services) = Services::discover().await else {
        return;
    };
    let app = Cluster::distributed(&services, None, 2, &[]).await;
    let (b0, b1) = (app.base(0), app.base(1));
    let ada = user(&app.http, &b0).await;
    let bob = user(&app.http, &b1).await;
    let wid = workspace(&app.http, &b0, &ada, &[&bob]).await;
    let account = Account {
        id: ada.id.clone(),
        email: ada.email.clone(),
    };
    let phone = login(&app.http, &b1, &account).await;
    let leaked = login(&app.http, &b0, &account).await;

    // Ada's first login on both instances (token and cookie), her phone's login, and
    // a login whose refresh token is about to leak.
    let mut by_token = Sio::connect(&b0, Auth::Token(&ada.token)).await;
    let mut by_cookie = Sio::connect(&b1, Auth::Cookie(&ada.cookie)).await;
    let mut on_phone = Sio::connect(&b1, Auth::Token(&phone.access_token)).await;
    let mut stolen = Sio::connect(&b1, Auth::Token(&leaked.access_token)).await;
    for s in [&by_token, &by_cookie, &on_phone, &stolen] {
        s.join(&wid, None).await;
    }

    let r = app
        .http
        .post(format!("{b0}/api/auth/logout"))
        .bearer_auth(&ada.token)
        .send()
        .await
        .expect("logout");
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    for s in [&mut by_token, &mut by_cookie] {
        let ended = s.next_event("session:ended").await;
        assert_eq!(ended["reason"], "logout", "{ended}");
        s.dropped().await;
    }

    // The refresh token used twice: the second use revokes that login.
    for expected in [StatusCode::OK, StatusCode::UNAUTHORIZED] {
        let r = app
            .http
            .post(format!("{b0}/api/auth/refresh"))
            .json(&json!({ "refresh_token": leaked.refresh_token }))
            .send()
            .await
            .expect("refresh");
        assert_eq!(r.status(), expected);
    }
    let ended = stolen.next_event("session:ended").await;
    assert_eq!(ended["reason"], "refresh_token_reused", "{ended}");
    stolen.dropped().await;

    // The phone's login was not ended: it stays connected and keeps receiving.
    let sent = Sio::connect(&b0, Auth::Token(&bob.token)).await;
    sent.join(&wid, None).await;
    let ack = sent.send(&wid, "still there?", "p1").await;
    assert_eq!(on_phone.next_message(&wid).await["id"], ack["id"]);
    assert_eq!(on_phone.count_of("session:ended"), 0);
}

// Removal from a workspace reaches live sockets on every instance: everyone in the
// room gets `member:removed`, the removed member's sockets leave the room (nothing of
// the workspace reaches them afterwards) and its HTTP access ends; a member can leave,
// the only owner cannot.
#[tokio::test]
async fn a_removed_member_receives_nothing_of_the_workspace_afterwards() {
    let Some(services) = Services::discover().await else {
        return;
    };
    let app = Cluster::distributed(&services, None, 2, &[]).await;
    let (b0, b1) = (app.base(0), app.base(1));
    let (ada, bob, cat) = (
        user(&app.http, &b0).await,
        user(&app.http, &b1).await,
        user(&app.http, &b1).await,
    );
    let wid = workspace(&app.http, &b0, &ada, &[&bob, &cat]).await;
    let a = Sio::connect(&b0, Auth::Token(&ada.token)).await;
    let mut b = Sio::connect(&b1, Auth::Token(&bob.token)).await;
    let mut c = Sio::connect(&b1, Auth::Token(&cat.token)).await;
    for s in [&a, &b, &c] {
        s.join(&wid, None).await;
    }
    let remove = |who: &str, by: &shoal_testkit::User| {
        app.http
            .delete(format!("{b0}/api/workspaces/{wid}/members/{who}"))
            .bearer_auth(&by.token)
    };
    // Only the owner removes others.
    let (status, body) = call(remove(&ada.id, &bob)).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");

    let (status, body) = call(remove(&bob.id, &ada)).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    for s in [&mut b, &mut c] {
        let removed = s.next_event("member:removed").await;
        assert_eq!(removed["user_id"], bob.id.as_str(), "{removed}");
    }
    // Cat, on Bob's instance, is the barrier: once she has the next message, Bob would
    // have had it too.
    let sent = a.send(&wid, "after the removal", "r1").await;
    assert_eq!(c.next_message(&wid).await["id"], sent["id"]);
    assert!(
        b.seen_seqs(&wid).is_empty(),
        "a removed member got a message"
    );
    let (status, _) = api(
        &app.http,
        Method::GET,
        format!("{b1}/api/workspaces/{wid}/tasks"),
        &bob,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(b.try_join(&wid, None).await.expect("an ack")["ok"], false);

    // Cat leaves by herself; the only owner cannot; a second removal finds nobody.
    let (status, body) = call(remove(&cat.id, &cat)).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let (status, body) = call(remove(&ada.id, &ada)).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "last_owner", "{body}");
    let (status, _) = call(remove(&cat.id, &ada)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Both changes are in the activity log.
    let (status, log) = api(
        &app.http,
        Method::GET,
        format!("{b0}/api/workspaces/{wid}/activity"),
        &ada,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{log}");
    let kinds: Vec<&str> = log["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|e| e["kind"].as_str())
        .collect();
    assert!(
        kinds.contains(&"member.removed") && kinds.contains(&"member.left"),
        "{kinds:?}"
    );
}

#[tokio::test]
async fn a_user_is_announced_online_with_its_first_tab_and_offline_with_its_last() {
    let Some(services) = Services::discover().await else {
        return;
    };
    let app = Cluster::distributed(&services, None, 2, &[]).await;
    let (b0, b1) = (app.base(0), app.base(1));
    let (ada, bob) = (user(&app.http, &b0).await, user(&app.http, &b0).await);
    let wid = workspace(&app.http, &b0, &ada, &[&bob]).await;
    let mut a = Sio::connect(&b0, Auth::Token(&ada.token)).await;
    a.join(&wid, None).await;
    let bob_id = bob.id.clone();
    let about_bob =
        move |r: &Received| r.event == "presence:update" && r.data["user_id"] == bob_id.as_str();

    // Bob's first tab, on the other instance: he comes online.
    let tab1 = Sio::connect(&b1, Auth::Token(&bob.token)).await;
    tab1.join(&wid, None).await;
    assert_eq!(a.next_where(&about_bob).await.data["online"], true);
    // A second tab on Ada's instance, then the first one leaving: still online, and
    // nobody is told anything. The acks come after the presence changes, and a
    // message sent after them reaches Ada after anything they published.
    let tab2 = Sio::connect(&b0, Auth::Token(&bob.token)).await;
    tab2.join(&wid, None).await;
    tab1.call("workspace:leave", json!({ "workspace_id": wid }))
        .await;
    tab2.send(&wid, "barrier", "b1").await;
    a.next_message(&wid).await;
    let told: Vec<_> = a.seen.iter().filter(|r| about_bob(r)).collect();
    assert_eq!(told.len(), 1, "{told:?}");
    let listed = a
        .call("presence:list", json!({ "workspace_id": wid }))
        .await;
    assert_eq!(
        listed["users"].as_array().map(Vec::len),
        Some(2),
        "{listed}"
    );

    // His last tab goes: offline.
    tab2.close().await;
    assert_eq!(a.next_where(&about_bob).await.data["online"], false);
    let listed = a
        .call("presence:list", json!({ "workspace_id": wid }))
        .await;
    assert_eq!(listed["users"], json!([{ "user_id": ada.id }]));
    tab1.close().await;
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
    // Its presence entry expires (no refresh any more), while Ada's, older than one
    // TTL by then, lives on: her instance refreshes it.
    let online = eventually("the dead instance's presence entry expires", || {
        let a = &a;
        let wid = wid.clone();
        async move {
            let listed = a
                .call("presence:list", json!({ "workspace_id": wid }))
                .await;
            (listed["users"].as_array().map(Vec::len) == Some(1)).then_some(listed)
        }
    })
    .await;
    assert_eq!(online["users"][0]["user_id"], ada.id.as_str(), "{online}");

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
async fn delivery_resumes_after_a_redis_restart_and_readiness_reports_the_outage_as_degraded() {
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
    let mut a = Sio::connect(&b0, Auth::Token(&ada.token)).await;
    let mut b = Sio::connect(&b1, Auth::Token(&bob.token)).await;
    // Bob also has a tab on Ada's instance.
    let mut c = Sio::connect(&b0, Auth::Token(&bob.token)).await;
    a.join(&wid, None).await;
    b.join(&wid, None).await;
    c.join(&wid, None).await;
    a.send(&wid, "before", "1").await;
    assert_eq!(b.next_message(&wid).await["seq"], 1);

    redis.kill();
    // Ready, degraded: a Redis outage does not take the instances out of service.
    for i in 0..2 {
        eventually("readiness reports Redis down, still 200", || async {
            let r = app.get(i, "/health/ready").send().await.ok()?;
            let status = r.status();
            let body: serde_json::Value = r.json().await.ok()?;
            (status == StatusCode::OK && body["degraded"] == json!(["redis_down"])).then_some(())
        })
        .await;
    }
    // A message sent during the outage is committed and acked, and the sockets on
    // the sender's instance get it live, Redis or not...
    let during = a.send(&wid, "during", "2").await;
    assert_eq!(during["seq"], 2);
    assert_eq!(c.message_with_seq(&wid, 2).await["id"], during["id"]);
    assert_eq!(a.message_with_seq(&wid, 2).await["id"], during["id"]);
    // A long outage of a busy room: more messages than one replay read (as if sent on
    // an instance without these sockets; nothing publishes them).
    let db = sqlx::PgPool::connect(&app.env_value("DATABASE_URL").expect("db url"))
        .await
        .expect("connect to the test database");
    let missed = i64::from(shoal::realtime::resume::REPLAY_LIMIT) + 100;
    commit_unpublished(&db, &wid, &ada.id, missed).await;
    let (first_after, last_missed) = (3 + missed, 2 + missed);

    redis
        .restart()
        .await
        .expect("restart the owned redis-server");
    for i in 0..2 {
        eventually("readiness reports Redis up again", || async {
            let r = app.get(i, "/health/ready").send().await.ok()?;
            let body: serde_json::Value = r.json().await.ok()?;
            (body["status"] == "ready" && body["degraded"] == json!([])).then_some(())
        })
        .await;
    }
    // ...and the other instance's sockets get it and everything else missed after the
    // reconnect (gap repair from the database, in reads of the replay limit, no
    // reconnect of the client, no `resync`), then live cross-instance delivery goes
    // on, in both directions.
    assert_eq!(
        b.message_with_seq(&wid, last_missed).await["seq"],
        last_missed
    );
    a.send(&wid, "after", "x1").await;
    assert_eq!(b.next_message(&wid).await["seq"], first_after);
    b.send(&wid, "after too", "x2").await;
    let last = first_after + 1;
    assert_eq!(a.message_with_seq(&wid, last).await["seq"], last);
    // Its own message comes back to the sender too (after the ack, not before).
    b.message_with_seq(&wid, last).await;
    c.message_with_seq(&wid, last).await;
    // Every socket: every message once, in order.
    let all: Vec<i64> = (1..=last).collect();
    assert_eq!(b.seen_seqs(&wid), all);
    assert_eq!(c.seen_seqs(&wid), all);
    assert_eq!(a.seen_seqs(&wid), all);
    for sio in [&mut a, &mut b, &mut c] {
        assert_eq!(sio.count_of("resync"), 0, "no resync was needed");
    }
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

/// What an instance hears from the broker is not always the order of the commits: a
/// publish can be lost (a crash between commit and publish), two instances can publish
/// in the other order, a retry publishes twice. Every socket in the room still gets
/// each message once, in `seq` order: the room parks what comes after a hole, fills
/// the hole from the database (or from the late message), and drops what it sent.
#[tokio::test]
async fn holes_reordering_and_duplicates_in_the_live_stream_reach_sockets_in_seq_order() {
    let Some(services) = Services::discover().await else {
        return;
    };
    let app = Cluster::distributed(&services, None, 1, &[]).await;
    let b0 = app.base(0);
    let (ada, bob) = (user(&app.http, &b0).await, user(&app.http, &b0).await);
    let wid = workspace(&app.http, &b0, &ada, &[&bob]).await;
    let a = Sio::connect(&b0, Auth::Token(&ada.token)).await;
    let mut b = Sio::connect(&b0, Auth::Token(&bob.token)).await;
    a.join(&wid, None).await;
    b.join(&wid, None).await;
    assert_eq!(a.send(&wid, "one", "s1").await["seq"], 1);
    b.message_with_seq(&wid, 1).await;

    let db = sqlx::PgPool::connect(&app.env_value("DATABASE_URL").expect("db url"))
        .await
        .expect("connect to the test database");
    let mut redis = shoal_testkit::redis_connection(&services.redis_url)
        .await
        .expect("connect to Redis");
    let channel = format!(
        "{{{}:pubsub}}:rt:workspace:{wid}",
        app.env_value("REDIS_KEY_PREFIX").expect("prefix")
    );
    let publish = async |redis: &mut redis::aio::MultiplexedConnection, m: &serde_json::Value| {
        let envelope = json!({
            "room": format!("workspace:{wid}"),
            "event": { "event": "message:new", "data": m },
        });
        let _: i64 = redis::cmd("PUBLISH")
            .arg(&channel)
            .arg(envelope.to_string())
            .query_async(redis)
            .await
            .expect("PUBLISH");
    };
    // A hole: seq 2..=4 committed, only 4 published; 2 and 3 come from the database.
    let first = commit_unpublished(&db, &wid, &ada.id, 3).await;
    publish(&mut redis, &first[2]).await;
    b.message_with_seq(&wid, 4).await;
    // Reordered and repeated: 6, 5, 7, 6 again, 4 again (the late 5 fills the hole).
    let second = commit_unpublished(&db, &wid, &ada.id, 3).await;
    for m in [&second[1], &second[0], &second[2], &second[1], &first[2]] {
        publish(&mut redis, m).await;
    }
    b.message_with_seq(&wid, 7).await;
    // A live message after all that is the next one, and nothing came twice.
    assert_eq!(a.send(&wid, "eight", "s8").await["seq"], 8);
    b.message_with_seq(&wid, 8).await;
    assert_eq!(b.seen_seqs(&wid), (1..=8).collect::<Vec<i64>>());
    b.close().await;
    a.close().await;
}

/// Commits `n` messages by `user` after the workspace's last one, as the server would,
/// without publishing them; returns them as the API shows them, in `seq` order.
async fn commit_unpublished(
    db: &sqlx::PgPool,
    wid: &str,
    user: &str,
    n: i64,
) -> Vec<serde_json::Value> {
    let mut tx = db.begin().await.expect("begin");
    let last: i64 = sqlx::query_scalar(
        "UPDATE workspaces SET last_message_seq = last_message_seq + $2 WHERE id = $1 \
         RETURNING last_message_seq",
    )
    .bind(wid)
    .bind(n)
    .fetch_one(&mut *tx)
    .await
    .expect("allocate seqs");
    let mut out = Vec::new();
    for seq in last - n + 1..=last {
        let id = uuid::Uuid::now_v7().to_string();
        let body = format!("unpublished {seq}");
        let micros = 1_700_000_000_000_000_i64 + seq;
        sqlx::query(
            "INSERT INTO messages (id, workspace_id, user_id, body, client_id, seq, created_at) \
             VALUES ($1, $2, $3, $4, NULL, $5, $6)",
        )
        .bind(&id)
        .bind(wid)
        .bind(user)
        .bind(&body)
        .bind(seq)
        .bind(micros)
        .execute(&mut *tx)
        .await
        .expect("insert a message");
        out.push(json!({
            "id": id, "workspace_id": wid, "user_id": user, "body": body,
            "client_id": null, "seq": seq, "created_at": shoal::clock::rfc3339(micros),
        }));
    }
    tx.commit().await.expect("commit");
    out
}

/// `message:send` while the database is away: every send gets an error ack (no hang,
/// and nothing reaches the room), also when several wait for the same commit; once
/// the database is back the next message takes the next `seq` (the refused sends
/// spent none).
#[tokio::test]
async fn sends_while_the_database_is_down_are_refused_and_spend_no_seq() {
    let Some(services) = Services::discover().await else {
        return;
    };
    let app = Cluster::distributed(&services, None, 1, &[]).await;
    let b0 = app.base(0);
    let (ada, bob) = (user(&app.http, &b0).await, user(&app.http, &b0).await);
    let wid = workspace(&app.http, &b0, &ada, &[&bob]).await;
    let a = Sio::connect(&b0, Auth::Token(&ada.token)).await;
    let mut b = Sio::connect(&b0, Auth::Token(&bob.token)).await;
    a.join(&wid, None).await;
    b.join(&wid, None).await;
    assert_eq!(a.send(&wid, "before", "s1").await["seq"], 1);
    b.message_with_seq(&wid, 1).await;

    let url = app.env_value("DATABASE_URL").expect("db url");
    let db = url.rsplit('/').next().expect("a database name").to_owned();
    // Five sockets of Ada's, one send each: the test client (rust_socketio 0.6) can
    // lose track of acks when several of one socket come back at once (it removes
    // them from its list by stale index and panics).
    let mut senders = Vec::new();
    for _ in 0..5 {
        let s = Sio::connect(&b0, Auth::Token(&ada.token)).await;
        s.join(&wid, None).await;
        senders.push(s);
    }
    set_database_reachable(&services.admin_url, &db, false).await;
    let sends = senders.iter().enumerate().map(|(i, s)| {
        s.call(
            "message:send",
            json!({ "workspace_id": wid, "body": format!("during {i}"), "client_id": format!("d{i}") }),
        )
    });
    let acks = futures::future::join_all(sends).await;
    set_database_reachable(&services.admin_url, &db, true).await;
    for ack in &acks {
        assert_eq!(ack["ok"], false, "{ack}");
        assert_eq!(ack["error"]["code"], "service_unavailable", "{ack}");
    }

    eventually("the instance to be ready again", || async {
        (app.ready_status(0).await == Some(StatusCode::OK)).then_some(())
    })
    .await;
    assert_eq!(a.send(&wid, "after", "s2").await["seq"], 2);
    b.message_with_seq(&wid, 2).await;
    assert_eq!(b.seen_seqs(&wid), [1, 2]);
    assert_eq!(rest_seqs(&app.http, &b0, &bob, &wid).await, [1, 2]);
    b.close().await;
    a.close().await;
    for s in senders {
        s.close().await;
    }
}
