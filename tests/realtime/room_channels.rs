//! Per-room channels (docs/realtime.md, "Room channels"): an instance receives and
//! decodes only the events of rooms it has sockets in, subscribes when a room's first
//! socket arrives without losing what is published meanwhile, and lets go of the
//! channel after the last socket left.

use serde_json::json;
use tokio_util::sync::CancellationToken;

use shoal_testkit::{
    Auth, Cluster, Services, Sio, User, eventually, metric_value, metrics_text, post_message, user,
    workspace,
};

/// `shoal_realtime_events_decoded_total` of instance `i`.
async fn decoded(app: &Cluster, i: usize) -> f64 {
    let text = metrics_text(&app.http, &app.base(i)).await;
    metric_value(&text, "shoal_realtime_events_decoded_total", &[])
}

/// How many instances Redis counts as subscribed to the channel of `room`.
async fn subscribers(
    app: &Cluster,
    redis: &mut redis::aio::MultiplexedConnection,
    room: &str,
) -> i64 {
    let channel = format!(
        "{{{}:pubsub}}:rt:{room}",
        app.env_value("REDIS_KEY_PREFIX").expect("prefix")
    );
    let (_, n): (String, i64) = redis::cmd("PUBSUB")
        .arg("NUMSUB")
        .arg(&channel)
        .query_async(redis)
        .await
        .expect("PUBSUB NUMSUB");
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_instance_without_a_socket_in_a_busy_room_decodes_none_of_its_events() {
    let Some(services) = Services::discover().await else {
        return;
    };
    let app = Cluster::distributed(&services, None, 3, &[("REALTIME_CHANNEL_LINGER", "1")]).await;
    let (b0, b1, b2) = (app.base(0), app.base(1), app.base(2));
    let (ada, bob, cy) = (
        user(&app.http, &b0).await,
        user(&app.http, &b0).await,
        user(&app.http, &b0).await,
    );
    let busy = workspace(&app.http, &b0, &ada, &[&bob, &cy]).await;
    let quiet = workspace(&app.http, &b0, &cy, &[]).await;
    let mut redis = shoal_testkit::redis_connection(&services.redis_url)
        .await
        .expect("connect to Redis");

    // The busy room's sockets are on instances 0 and 1; instance 2 serves a socket of
    // the quiet room only (whose user is a member of the busy one too).
    let mut a = Sio::connect(&b0, Auth::Token(&ada.token)).await;
    let mut b = Sio::connect(&b1, Auth::Token(&bob.token)).await;
    let mut c = Sio::connect(&b2, Auth::Token(&cy.token)).await;
    a.join(&busy, None).await;
    b.join(&busy, None).await;
    c.join(&quiet, None).await;
    let busy_room = format!("workspace:{busy}");
    assert_eq!(subscribers(&app, &mut redis, &busy_room).await, 2);

    let before = [
        decoded(&app, 0).await,
        decoded(&app, 1).await,
        decoded(&app, 2).await,
    ];
    // (Over HTTP: one socket may send 20 events a second.)
    for i in 1..=40 {
        post_message(&app.http, &b0, &ada, &busy, &format!("busy {i}")).await;
    }
    // Published by instance 2 (an HTTP request there), delivered elsewhere.
    post_message(&app.http, &b2, &cy, &busy, "from instance 2").await;
    b.call("typing", json!({ "workspace_id": busy })).await;
    b.message_with_seq(&busy, 41).await;
    eventually(
        "instances 0 and 1 to decode the room's 42 events",
        || async {
            decoded(&app, 0).await - before[0] >= 42.0 && decoded(&app, 1).await - before[1] >= 42.0
        },
    )
    .await;
    let after = [
        decoded(&app, 0).await,
        decoded(&app, 1).await,
        decoded(&app, 2).await,
    ];
    assert_eq!(
        after[2], before[2],
        "instance 2 has no socket in the busy room and decodes none of its events"
    );

    // The quiet room's events reach instance 2 as before.
    post_message(&app.http, &b0, &cy, &quiet, "quiet").await;
    assert_eq!(c.next_message(&quiet).await["body"], "quiet");
    assert!(decoded(&app, 2).await > after[2]);

    // Bob leaves: after the linger, instance 1 lets go of the channel and decodes
    // nothing more of the room.
    b.call("workspace:leave", json!({ "workspace_id": busy }))
        .await;
    eventually("instance 1 to unsubscribe from the busy room", || async {
        let mut redis = redis.clone();
        subscribers(&app, &mut redis, &busy_room).await == 1
    })
    .await;
    let left = decoded(&app, 1).await;
    for i in 1..=10 {
        post_message(&app.http, &b0, &ada, &busy, &format!("later {i}")).await;
    }
    a.message_with_seq(&busy, 51).await;
    assert_eq!(
        decoded(&app, 1).await,
        left,
        "nothing after the channel went"
    );
    b.drain();
    assert!(
        b.seen_seqs(&busy).iter().all(|s| *s <= 41),
        "nothing of the room reaches the socket that left"
    );
    a.close().await;
    b.close().await;
    c.close().await;
}

/// Posts messages to `wid` through `base` until `stop`; the number posted.
async fn keep_posting(
    http: reqwest::Client,
    base: String,
    poster: User,
    wid: String,
    stop: CancellationToken,
) -> i64 {
    let mut n = 0;
    while !stop.is_cancelled() {
        n += 1;
        post_message(&http, &base, &poster, &wid, &format!("m{n}")).await;
    }
    n
}

/// A socket joins a busy room on an instance that is not subscribed to it yet, again
/// and again, while messages keep coming from another instance: whatever was
/// published while the subscription was being set up, it gets every message once, in
/// order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_first_socket_joining_a_busy_room_gets_every_message_once_in_order() {
    let Some(services) = Services::discover().await else {
        return;
    };
    let app = Cluster::distributed(&services, None, 2, &[("REALTIME_CHANNEL_LINGER", "1")]).await;
    let (b0, b1) = (app.base(0), app.base(1));
    let (ada, bob) = (user(&app.http, &b0).await, user(&app.http, &b0).await);
    let wid = workspace(&app.http, &b0, &ada, &[&bob]).await;
    let room = format!("workspace:{wid}");
    let redis = shoal_testkit::redis_connection(&services.redis_url)
        .await
        .expect("connect to Redis");
    // Ada's socket on instance 0 keeps that instance subscribed: messages are
    // published (and delivered there) the whole time.
    let a = Sio::connect(&b0, Auth::Token(&ada.token)).await;
    a.join(&wid, None).await;

    let stop = CancellationToken::new();
    let poster = tokio::spawn(keep_posting(
        app.http.clone(),
        b0.clone(),
        ada.clone(),
        wid.clone(),
        stop.clone(),
    ));
    let mut last_seen = 0;
    for round in 0..5 {
        // Instance 1 holds no socket of the room: not subscribed.
        eventually("instance 1 not subscribed to the room", || async {
            let mut redis = redis.clone();
            subscribers(&app, &mut redis, &room).await == 1
        })
        .await;
        let mut b = Sio::connect(&b1, Auth::Token(&bob.token)).await;
        let ack = b.join(&wid, Some(last_seen)).await;
        let joined_at = ack["last_seq"].as_i64().expect("last_seq");
        // Some messages after the join, then all of them must have come.
        let target = joined_at + 20;
        b.message_with_seq(&wid, target).await;
        let seqs = b.seen_seqs(&wid);
        let expected: Vec<i64> = (last_seen + 1..=*seqs.last().expect("some")).collect();
        assert_eq!(
            seqs, expected,
            "round {round}: every message once, in order"
        );
        last_seen = *seqs.last().expect("some");
        b.close().await;
    }
    stop.cancel();
    poster.await.expect("poster");
    a.close().await;
}
