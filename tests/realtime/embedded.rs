//! One embedded instance: the same code path as distributed mode, over the
//! in-process pub/sub.

use reqwest::Method;
use serde_json::{Value, json};

use shoal_testkit::{
    Auth, Cluster, Sio, api, call, eventually, login, post_message, register, rest_seqs, user,
    workspace,
};
use shoal_testkit::{metric_value, metrics_text};

#[tokio::test]
async fn a_bad_handshake_gets_connect_error_with_a_reason() {
    let app = Cluster::embedded(&[]).await;
    let base = app.base(0);
    assert_eq!(Sio::refusal(&base, Auth::Nothing).await, "unauthorized");
    assert_eq!(
        Sio::refusal(&base, Auth::Token("not-a-jwt")).await,
        "invalid_token"
    );
    assert_eq!(
        Sio::refusal(&base, Auth::Cookie("forged-cookie")).await,
        "session_expired"
    );

    // Both credentials work...
    let ada = user(&app.http, &base).await;
    Sio::connect(&base, Auth::Token(&ada.token))
        .await
        .close()
        .await;
    Sio::connect(&base, Auth::Cookie(&ada.cookie))
        .await
        .close()
        .await;
    // A page's handshake carries its Origin: the cookie works from Shoal's own origin,
    // not from another site's page (nothing in CORS_ORIGINS here).
    Sio::connect(&base, Auth::CookieFrom(&ada.cookie, &base))
        .await
        .close()
        .await;
    assert_eq!(
        Sio::refusal(&base, Auth::CookieFrom(&ada.cookie, "https://evil.example")).await,
        "origin_not_allowed"
    );

    // ...until the session ends: the access token is then refused with the reason.
    let r = app
        .http
        .post(format!("{base}/api/auth/logout"))
        .bearer_auth(&ada.token)
        .send()
        .await
        .expect("logout");
    assert!(r.status().is_success());
    assert_eq!(
        Sio::refusal(&base, Auth::Token(&ada.token)).await,
        "session_expired"
    );
}

/// The `exp` claim (seconds since the epoch) of a JWT, read without checking it.
fn jwt_exp(token: &str) -> i64 {
    use base64::Engine;
    let payload = token.split('.').nth(1).expect("a JWT has three parts");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("base64url payload");
    let claims: Value = serde_json::from_slice(&bytes).expect("JSON claims");
    claims["exp"].as_i64().expect("exp")
}

// An open socket does not outlive its credentials: when the access token it
// authenticated with expires, it gets `session:ended {reason: "token_expired"}` and is
// closed — unless the client sends a fresh token of the same login with `auth:renew`
// (someone else's token is refused).
#[tokio::test]
async fn a_socket_ends_with_its_access_token_unless_renewed_with_one_of_the_same_login() {
    let app = Cluster::embedded(&[("JWT_ACCESS_TTL", "2")]).await;
    let base = app.base(0);
    let account = register(&app.http, &base, "Ada").await;
    let ada = login(&app.http, &base, &account).await;
    let bob = user(&app.http, &base).await;
    let mut chat = Sio::connect(&base, Auth::Token(&ada.access_token)).await;

    let refused = chat.call("auth:renew", json!({ "token": bob.token })).await;
    assert_eq!(refused["error"]["code"], "invalid_token", "{refused}");
    let refused = chat.call("auth:renew", json!({ "token": "garbage" })).await;
    assert_eq!(refused["error"]["code"], "invalid_token", "{refused}");

    let (status, pair) = call(
        app.http
            .post(format!("{base}/api/auth/refresh"))
            .json(&json!({ "refresh_token": ada.refresh_token })),
    )
    .await;
    assert_eq!(status, 200, "{pair}");
    let fresh = pair["access_token"].as_str().expect("access token");
    let renewed = chat.call("auth:renew", json!({ "token": fresh })).await;
    assert_eq!(renewed["ok"], true, "{renewed}");
    let until = time::OffsetDateTime::parse(
        renewed["expires_at"].as_str().expect("expires_at"),
        &time::format_description::well_known::Rfc3339,
    )
    .expect("an RFC 3339 time")
    .unix_timestamp();
    assert_eq!(until, jwt_exp(fresh), "the lease is the fresh token's");

    let ended = chat.next_event("session:ended").await;
    assert_eq!(ended["reason"], "token_expired", "{ended}");
    chat.dropped().await;
    let text = metrics_text(&app.http, &base).await;
    assert_eq!(
        metric_value(
            &text,
            "shoal_realtime_leases_ended_total",
            &["reason=\"token_expired\""]
        ),
        1.0
    );
}

// A socket authenticated by its session cookie ends with the session.
#[tokio::test]
async fn a_cookie_socket_ends_when_its_session_expires() {
    let app = Cluster::embedded(&[("SESSION_TTL", "2")]).await;
    let base = app.base(0);
    let ada = user(&app.http, &base).await;
    let mut chat = Sio::connect(&base, Auth::Cookie(&ada.cookie)).await;
    let ended = chat.next_event("session:ended").await;
    assert_eq!(ended["reason"], "session_expired", "{ended}");
    chat.dropped().await;
    assert_eq!(
        Sio::refusal(&base, Auth::Cookie(&ada.cookie)).await,
        "session_expired"
    );
}

// One account cannot make an instance hold unbounded connections: past
// REALTIME_MAX_SOCKETS_PER_USER its handshakes are refused with a reason (which also
// stops the stock client's retries), others are not affected, and a closed
// connection frees its place.
#[tokio::test]
async fn one_user_holds_at_most_the_cap_of_connections_on_an_instance() {
    let app = Cluster::embedded(&[("REALTIME_MAX_SOCKETS_PER_USER", "2")]).await;
    let base = app.base(0);
    let (ada, bob) = (user(&app.http, &base).await, user(&app.http, &base).await);
    let first = Sio::connect(&base, Auth::Token(&ada.token)).await;
    let _second = Sio::connect(&base, Auth::Cookie(&ada.cookie)).await;
    for auth in [Auth::Token(&ada.token), Auth::Cookie(&ada.cookie)] {
        assert_eq!(Sio::refusal(&base, auth).await, "too_many_connections");
    }
    Sio::connect(&base, Auth::Token(&bob.token))
        .await
        .close()
        .await;

    first.close().await;
    eventually("a closed connection to free its place", || async {
        Sio::try_connect(&base, Auth::Token(&ada.token)).await
    })
    .await;
    let text = metrics_text(&app.http, &base).await;
    let refused = metric_value(
        &text,
        "shoal_realtime_connections_refused_total",
        &["reason=\"too_many_connections\""],
    );
    assert_eq!(refused, 2.0, "each refusal is counted");
}

// One address (a machine, or an office behind one NAT) cannot make an instance hold
// unbounded connections either, whatever accounts it uses: past
// REALTIME_MAX_SOCKETS_PER_IP the handshake is refused; and opening transports spends
// the address's budget of anonymous requests (429 with Retry-After past it).
#[tokio::test]
async fn one_address_holds_at_most_its_cap_and_handshakes_spend_its_budget() {
    let app = Cluster::embedded(&[
        ("REALTIME_MAX_SOCKETS_PER_IP", "2"),
        ("RATE_LIMIT_IP_PER_MIN", "6"),
    ])
    .await;
    let base = app.base(0);
    let (ada, bob, eve) = (
        user(&app.http, &base).await,
        user(&app.http, &base).await,
        user(&app.http, &base).await,
    );
    let first = Sio::connect(&base, Auth::Token(&ada.token)).await;
    let _second = Sio::connect(&base, Auth::Token(&bob.token)).await;
    assert_eq!(
        Sio::refusal(&base, Auth::Token(&eve.token)).await,
        "too_many_connections"
    );
    first.close().await;
    eventually(
        "a closed connection to free its address's place",
        || async { Sio::try_connect(&base, Auth::Token(&eve.token)).await },
    )
    .await;

    // Raw Engine.IO handshakes until the budget (6 a minute, shared with the
    // handshakes above) runs out.
    let mut refused = None;
    for _ in 0..6 {
        let r = app
            .http
            .get(format!("{base}/socket.io/?EIO=4&transport=polling"))
            .send()
            .await
            .expect("handshake");
        if r.status() == reqwest::StatusCode::TOO_MANY_REQUESTS {
            refused = Some(r);
            break;
        }
        assert!(r.status().is_success(), "{}", r.status());
    }
    let refused = refused.expect("the handshake budget ran out");
    assert!(refused.headers().contains_key("retry-after"));
}

// A chat message (and a join) costs the sender's request budget whichever way it is
// sent: HTTP requests and events over any number of sockets spend one budget together.
#[tokio::test]
async fn chat_over_sockets_and_requests_over_http_spend_one_user_budget() {
    let app = Cluster::embedded(&[("RATE_LIMIT_USER_PER_MIN", "8")]).await;
    let base = app.base(0);
    let ada = user(&app.http, &base).await;
    let wid = workspace(&app.http, &base, &ada, &[]).await; // 1 request
    let (a, b) = (
        Sio::connect(&base, Auth::Token(&ada.token)).await,
        Sio::connect(&base, Auth::Token(&ada.token)).await,
    );
    a.join(&wid, None).await; // 2
    b.join(&wid, None).await; // 3
    post_message(&app.http, &base, &ada, &wid, "over HTTP").await; // 4
    for (i, sio) in [&a, &b, &a, &b].into_iter().enumerate() {
        sio.send(&wid, "over a socket", &format!("s{i}")).await; // 5..=8
    }
    let refused = b
        .call(
            "message:send",
            json!({ "workspace_id": wid, "body": "one too many", "client_id": "s9" }),
        )
        .await;
    assert_eq!(refused["ok"], false, "{refused}");
    assert_eq!(refused["error"]["code"], "rate_limited", "{refused}");
    let (status, _) = api(&app.http, Method::GET, format!("{base}/api/me"), &ada, None).await;
    assert_eq!(
        status,
        reqwest::StatusCode::TOO_MANY_REQUESTS,
        "the same budget over HTTP"
    );
}

// Shoal's events are JSON only; a packet announcing binary attachments closes that
// connection before anything is buffered, and nobody else notices.
#[tokio::test]
async fn a_binary_attachment_closes_the_connection_and_others_are_served() {
    let app = Cluster::embedded(&[]).await;
    let base = app.base(0);
    let (ada, bob) = (user(&app.http, &base).await, user(&app.http, &base).await);
    let wid = workspace(&app.http, &base, &ada, &[&bob]).await;
    let mut b = Sio::connect(&base, Auth::Token(&bob.token)).await;
    b.join(&wid, None).await;

    let mut a = Sio::connect(&base, Auth::Token(&ada.token)).await;
    a.join(&wid, None).await;
    a.emit_binary("message:send", vec![0u8; 16]).await;
    a.dropped().await;

    let a = Sio::connect(&base, Auth::Token(&ada.token)).await;
    a.join(&wid, None).await;
    let ack = a.send(&wid, "still served", "c1").await;
    let got = b.next_message(&wid).await;
    assert_eq!(
        got["id"], ack["id"],
        "the next message is the JSON one: {got}"
    );
}

#[tokio::test]
async fn a_sent_message_is_acked_after_commit_and_reaches_the_room_once() {
    let app = Cluster::embedded(&[]).await;
    let base = app.base(0);
    let (ada, bob) = (user(&app.http, &base).await, user(&app.http, &base).await);
    let wid = workspace(&app.http, &base, &ada, &[&bob]).await;
    let a = Sio::connect(&base, Auth::Token(&ada.token)).await;
    let mut b = Sio::connect(&base, Auth::Cookie(&bob.cookie)).await;
    a.join(&wid, None).await;
    b.join(&wid, None).await;

    let ack = a.send(&wid, "hello", "c-1").await;
    let seq = ack["seq"].as_i64().expect("seq in the ack");
    assert!(ack["id"].is_string(), "{ack}");
    // Committed before the ack: REST sees it right away.
    assert_eq!(rest_seqs(&app.http, &base, &bob, &wid).await, vec![seq]);

    let got = b.next_message(&wid).await;
    assert_eq!(got["seq"], seq);
    assert_eq!(got["body"], "hello");
    assert_eq!(got["user_id"], ada.id.as_str());

    // A retry with the same client_id answers the original and posts nothing new.
    let again = a.send(&wid, "hello", "c-1").await;
    assert_eq!(again["id"], ack["id"]);
    assert_eq!(again["seq"], ack["seq"]);
    let next = a.send(&wid, "second", "c-2").await;
    let got = b.next_message(&wid).await;
    assert_eq!(
        got["seq"], next["seq"],
        "no duplicate of the retried message in between"
    );
    assert_eq!(
        rest_seqs(&app.http, &base, &bob, &wid).await,
        vec![seq, seq + 1]
    );

    // Each handled event is timed, by event name (three sends, two joins).
    let metrics = metrics_text(&app.http, &base).await;
    let count = |event: &str| {
        metric_value(
            &metrics,
            "shoal_realtime_event_duration_seconds_count",
            &[&format!("event=\"{event}\"")],
        )
    };
    assert_eq!(count("message:send"), 3.0, "{metrics}");
    assert_eq!(count("workspace:join"), 2.0, "{metrics}");
}

#[tokio::test]
async fn a_non_member_cannot_join_and_receives_nothing_of_the_workspace() {
    let app = Cluster::embedded(&[]).await;
    let base = app.base(0);
    let (ada, eve) = (user(&app.http, &base).await, user(&app.http, &base).await);
    let secret = workspace(&app.http, &base, &ada, &[]).await;
    let own = workspace(&app.http, &base, &eve, &[]).await;
    let a = Sio::connect(&base, Auth::Token(&ada.token)).await;
    let mut e = Sio::connect(&base, Auth::Token(&eve.token)).await;
    a.join(&secret, None).await;

    for (event, data) in [
        ("workspace:join", json!({ "workspace_id": secret })),
        (
            "workspace:join",
            json!({ "workspace_id": secret, "since_seq": 0 }),
        ),
        (
            "message:send",
            json!({ "workspace_id": secret, "body": "let me in", "client_id": "x" }),
        ),
        ("presence:list", json!({ "workspace_id": secret })),
        ("typing", json!({ "workspace_id": secret })),
    ] {
        let ack = e.call(event, data).await;
        assert_eq!(ack["ok"], false, "{event}: {ack}");
        assert_eq!(ack["error"]["code"], "not_found", "{event}: {ack}");
    }

    // Activity in the secret workspace: a message, a task, typing.
    a.send(&secret, "secret", "s-1").await;
    a.call("typing", json!({ "workspace_id": secret })).await;
    let (status, _) = api(
        &app.http,
        Method::POST,
        format!("{base}/api/workspaces/{secret}/tasks"),
        &ada,
        Some(json!({ "title": "secret task" })),
    )
    .await;
    assert!(status.is_success());

    // Then a barrier in eve's own workspace: events reach a socket in publish order,
    // so anything of the secret workspace would have arrived before it.
    e.join(&own, None).await;
    post_message(&app.http, &base, &eve, &own, "barrier").await;
    e.next_message(&own).await;
    let leaked: Vec<_> = e
        .seen
        .iter()
        .filter(|r| r.data.to_string().contains(&secret) || r.data.to_string().contains("secret"))
        .collect();
    assert!(leaked.is_empty(), "eve received: {leaked:?}");
    // And eve's failed send did not post anything.
    assert_eq!(rest_seqs(&app.http, &base, &ada, &secret).await, vec![1]);
}

#[tokio::test]
async fn task_changes_over_http_and_assignment_reach_sockets() {
    let app = Cluster::embedded(&[]).await;
    let base = app.base(0);
    let (ada, bob) = (user(&app.http, &base).await, user(&app.http, &base).await);
    let wid = workspace(&app.http, &base, &ada, &[&bob]).await;
    let mut b = Sio::connect(&base, Auth::Token(&bob.token)).await;
    b.join(&wid, None).await;

    let (status, task) = api(
        &app.http,
        Method::POST,
        format!("{base}/api/workspaces/{wid}/tasks"),
        &ada,
        Some(json!({ "title": "write docs", "assignee_id": bob.id })),
    )
    .await;
    assert!(status.is_success(), "{task}");
    let tid = task["id"].as_str().expect("task id").to_owned();
    let created = b.next_event("task:created").await;
    assert_eq!(created["id"], tid.as_str());
    let note = b.next_event("notification").await;
    assert_eq!(note["kind"], "task.assigned");
    assert_eq!(note["task_id"], tid.as_str());
    assert_eq!(note["actor_id"], ada.id.as_str());

    let (status, _) = api(
        &app.http,
        Method::PATCH,
        format!("{base}/api/workspaces/{wid}/tasks/{tid}"),
        &ada,
        Some(json!({ "version": 1, "status": "done" })),
    )
    .await;
    assert!(status.is_success());
    let updated = b.next_event("task:updated").await;
    assert_eq!(updated["status"], "done");
    assert_eq!(updated["version"], 2);

    let (status, _) = api(
        &app.http,
        Method::DELETE,
        format!("{base}/api/workspaces/{wid}/tasks/{tid}"),
        &ada,
        None,
    )
    .await;
    assert!(status.is_success());
    let deleted = b.next_event("task:deleted").await;
    assert_eq!(deleted["id"], tid.as_str());

    // Assigning a task to oneself notifies nobody: bob creates one for himself, then
    // a barrier message; no second notification arrived in between.
    api(
        &app.http,
        Method::POST,
        format!("{base}/api/workspaces/{wid}/tasks"),
        &bob,
        Some(json!({ "title": "mine", "assignee_id": bob.id })),
    )
    .await;
    post_message(&app.http, &base, &ada, &wid, "barrier").await;
    b.next_message(&wid).await;
    assert_eq!(
        b.seen.iter().filter(|r| r.event == "notification").count(),
        1
    );
}

#[tokio::test]
async fn typing_and_presence_reach_the_others() {
    let app = Cluster::embedded(&[]).await;
    let base = app.base(0);
    let (ada, bob) = (user(&app.http, &base).await, user(&app.http, &base).await);
    let wid = workspace(&app.http, &base, &ada, &[&bob]).await;
    let mut a = Sio::connect(&base, Auth::Token(&ada.token)).await;
    a.join(&wid, None).await;
    let listed = a
        .call("presence:list", json!({ "workspace_id": wid }))
        .await;
    assert_eq!(listed["users"], json!([{ "user_id": ada.id }]));

    let mut b = Sio::connect(&base, Auth::Token(&bob.token)).await;
    b.join(&wid, None).await;
    let update = a
        .next_where(|r| r.event == "presence:update" && r.data["user_id"] == bob.id.as_str())
        .await;
    assert_eq!(update.data["online"], true);
    let listed = b
        .call("presence:list", json!({ "workspace_id": wid }))
        .await;
    let mut users: Vec<String> = listed["users"]
        .as_array()
        .expect("users")
        .iter()
        .map(|u| u["user_id"].as_str().expect("id").to_owned())
        .collect();
    users.sort();
    let mut expected = vec![ada.id.clone(), bob.id.clone()];
    expected.sort();
    assert_eq!(users, expected);

    b.call("typing", json!({ "workspace_id": wid })).await;
    let typing = a.next_event("typing").await;
    assert_eq!(typing["user_id"], bob.id.as_str());
    // Not echoed to the typist: bob's next item after a barrier is the barrier.
    post_message(&app.http, &base, &ada, &wid, "barrier").await;
    b.next_message(&wid).await;
    assert!(
        !b.seen.iter().any(|r| r.event == "typing"),
        "typing echoed: {:?}",
        b.seen
    );

    b.call("workspace:leave", json!({ "workspace_id": wid }))
        .await;
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
async fn a_resumed_client_gets_exactly_what_it_missed_then_live_messages() {
    let app = Cluster::embedded(&[]).await;
    let base = app.base(0);
    let (ada, bob) = (user(&app.http, &base).await, user(&app.http, &base).await);
    let wid = workspace(&app.http, &base, &ada, &[&bob]).await;
    let a = Sio::connect(&base, Auth::Token(&ada.token)).await;
    a.join(&wid, None).await;

    let mut b = Sio::connect(&base, Auth::Token(&bob.token)).await;
    b.join(&wid, None).await;
    a.send(&wid, "one", "1").await;
    let last_seen = b.next_message(&wid).await["seq"].as_i64().expect("seq");
    b.close().await;

    for i in 2..=6 {
        a.send(&wid, &format!("missed {i}"), &i.to_string()).await;
    }
    let mut b = Sio::connect(&base, Auth::Token(&bob.token)).await;
    let ack = b.join(&wid, Some(last_seen)).await;
    assert_eq!(ack["recovered"], true, "{ack}");
    assert_eq!(ack["replayed"], 5, "{ack}");
    assert_eq!(ack["last_seq"], 6, "{ack}");
    // The replay arrived before the ack, in order.
    assert_eq!(b.seen_seqs(&wid), vec![2, 3, 4, 5, 6]);

    a.send(&wid, "live", "7").await;
    b.next_message(&wid).await;
    assert_eq!(
        b.seen_seqs(&wid),
        vec![2, 3, 4, 5, 6, 7],
        "no gap, no duplicate"
    );
}

#[tokio::test]
async fn missing_too_much_is_reported_as_not_recovered() {
    let app = Cluster::embedded(&[]).await;
    let base = app.base(0);
    let ada = user(&app.http, &base).await;
    let wid = workspace(&app.http, &base, &ada, &[]).await;
    let limit = shoal::realtime::resume::REPLAY_LIMIT as i64;
    for i in 0..=limit {
        post_message(&app.http, &base, &ada, &wid, &format!("m{i}")).await;
    }
    let mut a = Sio::connect(&base, Auth::Token(&ada.token)).await;
    let ack = a.join(&wid, Some(0)).await;
    assert_eq!(ack["recovered"], false, "{ack}");
    assert_eq!(ack["replayed"], 0, "{ack}");
    assert_eq!(ack["last_seq"], limit + 1, "{ack}");

    // Exactly the limit is still recovered.
    let b = Sio::connect(&base, Auth::Token(&ada.token)).await;
    let ack = b.join(&wid, Some(1)).await;
    assert_eq!(ack["recovered"], true, "{ack}");
    assert_eq!(ack["replayed"], limit, "{ack}");

    // Live delivery goes on from the head.
    post_message(&app.http, &base, &ada, &wid, "after").await;
    assert_eq!(a.next_message(&wid).await["seq"], limit + 2);
    assert_eq!(a.seen_seqs(&wid), vec![limit + 2]);
}

// A `since_seq` beyond the head (a client's bug, or an attacker's try at making the
// server wait for messages that do not exist) is answered like a cursor that cannot
// be recovered: `recovered: false` at the head, and live delivery from there. It used
// to leave the socket joining forever, its room re-reading the database.
#[tokio::test]
async fn a_since_seq_beyond_the_head_is_not_recovered_and_delivery_goes_on() {
    let app = Cluster::embedded(&[]).await;
    let base = app.base(0);
    let ada = user(&app.http, &base).await;
    let wid = workspace(&app.http, &base, &ada, &[]).await;
    post_message(&app.http, &base, &ada, &wid, "first").await;
    for since in [2, 1_000_000, i64::MAX] {
        let mut a = Sio::connect(&base, Auth::Token(&ada.token)).await;
        let ack = a.join(&wid, Some(since)).await;
        assert_eq!(ack["recovered"], false, "since_seq {since}: {ack}");
        assert_eq!(ack["replayed"], 0, "since_seq {since}: {ack}");
        let head = ack["last_seq"].as_i64().expect("last_seq");
        post_message(&app.http, &base, &ada, &wid, "next").await;
        assert_eq!(
            a.next_message(&wid).await["seq"],
            head + 1,
            "since_seq {since}: live delivery from the head"
        );
        a.close().await;
    }
    // Exactly the head is a normal, recovered resume.
    let mut a = Sio::connect(&base, Auth::Token(&ada.token)).await;
    let ack = a.join(&wid, Some(4)).await;
    assert_eq!(ack["recovered"], true, "{ack}");
    post_message(&app.http, &base, &ada, &wid, "last").await;
    assert_eq!(a.next_message(&wid).await["seq"], 5);
}

#[tokio::test]
async fn bad_input_gets_an_error_ack_and_reaches_nobody() {
    let app = Cluster::embedded(&[("REALTIME_MAX_MESSAGE_BYTES", "1024")]).await;
    let base = app.base(0);
    let (ada, bob) = (user(&app.http, &base).await, user(&app.http, &base).await);
    let wid = workspace(&app.http, &base, &ada, &[&bob]).await;
    let a = Sio::connect(&base, Auth::Token(&ada.token)).await;
    let mut b = Sio::connect(&base, Auth::Token(&bob.token)).await;
    a.join(&wid, None).await;
    b.join(&wid, None).await;

    let cases: Vec<(&str, Value, &str)> = vec![
        ("message:send", json!("just a string"), "invalid_payload"),
        (
            "message:send",
            json!({ "workspace_id": "nope", "body": "x" }),
            "invalid_payload",
        ),
        (
            "message:send",
            json!({ "workspace_id": wid }),
            "invalid_payload",
        ),
        (
            "message:send",
            json!({ "workspace_id": wid, "body": "x".repeat(1025), "client_id": "big" }),
            "payload_too_large",
        ),
        (
            "message:send",
            json!({ "workspace_id": wid, "body": "   " }),
            "validation_failed",
        ),
        (
            "message:send",
            json!({ "workspace_id": wid, "body": "x", "client_id": "" }),
            "validation_failed",
        ),
        (
            "workspace:join",
            json!({ "workspace_id": wid, "since_seq": -1 }),
            "invalid_payload",
        ),
        (
            "workspace:join",
            json!({ "workspace_id": uuid::Uuid::now_v7() }),
            "not_found",
        ),
        ("no:such:event", json!({}), "unknown_event"),
    ];
    for (event, data, code) in cases {
        let ack = a.call(event, data.clone()).await;
        assert_eq!(ack["ok"], false, "{event} {data}: {ack}");
        assert_eq!(ack["error"]["code"], code, "{event} {data}: {ack}");
    }
    // Exactly the limit is fine.
    a.send(&wid, &"y".repeat(1024), "max").await;

    // Spam: the per-socket budget (20/s) runs out; the server keeps serving.
    let mut limited = 0;
    for _ in 0..60 {
        let ack = a.call("typing", json!({ "workspace_id": wid })).await;
        if ack["error"]["code"] == "rate_limited" {
            limited += 1;
        }
    }
    assert!(limited > 0, "60 events in a row should exceed 20/s");

    // Bob received the one valid message and nothing of the refused ones.
    let got = b.next_message(&wid).await;
    assert_eq!(got["body"].as_str().map(str::len), Some(1024));
    post_message(&app.http, &base, &ada, &wid, "barrier").await;
    b.next_message(&wid).await;
    assert_eq!(b.seen_seqs(&wid), vec![1, 2]);
    assert_eq!(rest_seqs(&app.http, &base, &ada, &wid).await, vec![1, 2]);
}

#[tokio::test]
async fn sigterm_disconnects_sockets_and_the_process_exits_cleanly() {
    let mut app = Cluster::embedded(&[]).await;
    let base = app.base(0);
    let ada = user(&app.http, &base).await;
    let mut a = Sio::connect(&base, Auth::Token(&ada.token)).await;
    app.nodes[0].terminate();
    a.dropped().await;
    let status = app.nodes[0].wait_exit().await;
    assert!(status.success(), "exit status {status}");
}

// Membership changes reach sockets as they happen: the invitee's own sockets hear of
// the invitation, the workspace hears that it was accepted and of the new member,
// and of a role change.
#[tokio::test]
async fn invitations_and_role_changes_are_announced_to_the_sockets_concerned() {
    let app = Cluster::embedded(&[]).await;
    let base = app.base(0);
    let (ada, bob) = (user(&app.http, &base).await, user(&app.http, &base).await);
    let wid = workspace(&app.http, &base, &ada, &[]).await;
    let mut owner = Sio::connect(&base, Auth::Token(&ada.token)).await;
    owner.join(&wid, None).await;
    let mut invitee = Sio::connect(&base, Auth::Token(&bob.token)).await;

    let (status, invitation) = api(
        &app.http,
        Method::POST,
        format!("{base}/api/workspaces/{wid}/invitations"),
        &ada,
        Some(json!({ "email": bob.email })),
    )
    .await;
    assert_eq!(status, 201, "{invitation}");
    let received = invitee.next_event("invitation:received").await;
    assert_eq!(received["id"], invitation["id"]);
    assert_eq!(received["workspace_id"], wid.as_str());

    let id = invitation["id"].as_str().expect("id");
    let (status, _) = api(
        &app.http,
        Method::POST,
        format!("{base}/api/invitations/{id}/accept"),
        &bob,
        None,
    )
    .await;
    assert_eq!(status, 200);
    let answered = owner.next_event("invitation:answered").await;
    assert_eq!(answered["status"], "accepted");
    let added = owner.next_event("member:added").await;
    assert_eq!(
        (added["user_id"].as_str(), added["role"].as_str()),
        (Some(bob.id.as_str()), Some("member"))
    );

    let (status, _) = api(
        &app.http,
        Method::PATCH,
        format!("{base}/api/workspaces/{wid}/members/{}", bob.id),
        &ada,
        Some(json!({ "role": "admin" })),
    )
    .await;
    assert_eq!(status, 200);
    let updated = owner.next_event("member:updated").await;
    assert_eq!(updated["role"], "admin");
    assert_eq!(updated["actor_id"], ada.id.as_str());
}

// A client that ignores its refusals is not answered forever: past 100 events refused
// in a row it gets `closing {reason: "ignored_rate_limit"}` and is disconnected.
#[tokio::test]
async fn a_socket_that_ignores_its_budget_is_told_and_closed() {
    let app = Cluster::embedded(&[]).await;
    let base = app.base(0);
    let ada = user(&app.http, &base).await;
    let wid = workspace(&app.http, &base, &ada, &[]).await;
    let mut a = Sio::connect(&base, Auth::Token(&ada.token)).await;
    for _ in 0..200 {
        if a.try_call("typing", json!({ "workspace_id": wid }))
            .await
            .is_none()
        {
            break;
        }
    }
    let closing = a.next_event("closing").await;
    assert_eq!(closing["reason"], "ignored_rate_limit");
    a.dropped().await;
    // A new connection is served as usual.
    let b = Sio::connect(&base, Auth::Token(&ada.token)).await;
    b.join(&wid, None).await;
}

// A join is a request of its user's: it spends the same budget as the HTTP API
// (RATE_LIMIT_USER_PER_MIN), whatever socket it comes from.
#[tokio::test]
async fn joins_spend_the_users_request_budget() {
    let app = Cluster::embedded(&[("RATE_LIMIT_USER_PER_MIN", "4")]).await;
    let base = app.base(0);
    let ada = user(&app.http, &base).await;
    let wid = workspace(&app.http, &base, &ada, &[]).await;
    let a = Sio::connect(&base, Auth::Token(&ada.token)).await;
    let b = Sio::connect(&base, Auth::Token(&ada.token)).await;
    let mut codes = Vec::new();
    for socket in [&a, &b, &a, &b, &a] {
        let ack = socket
            .call(
                "workspace:join",
                json!({ "workspace_id": wid, "since_seq": 0 }),
            )
            .await;
        codes.push(if ack["ok"] == true {
            "ok".to_owned()
        } else {
            ack["error"]["code"].as_str().unwrap_or("?").to_owned()
        });
    }
    // Creating the workspace spent one unit of the four.
    assert_eq!(codes, ["ok", "ok", "ok", "rate_limited", "rate_limited"]);
}
