//! A Sentinel failover under load: one master, one replica and three Sentinels
//! (quorum 2), real `redis-server` / `redis-sentinel` processes; the master is killed
//! while a client sends chat messages. Shoal follows the promoted replica by itself:
//! requests and chat go on, every acknowledged message reaches the client on the other
//! instance exactly once and in order, nobody is logged out. The time from the kill
//! until both instances write to Redis again is printed (`-- --nocapture`), not
//! asserted.

use std::time::{Duration, Instant};

use reqwest::StatusCode;

use crate::harness::{
    Cluster, OwnRedis, Services, Spec, call, eventually, me_on, redis_connection,
};
use shoal_testkit::{Auth, Sio, user, workspace};

/// `INFO`-style `field:value` of `section` on the server at `url`.
async fn info_field(url: &str, section: &str, field: &str) -> Option<String> {
    let mut conn = redis_connection(url).await.ok()?;
    let text: String = redis::cmd("INFO")
        .arg(section)
        .query_async(&mut conn)
        .await
        .ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .map(|v| v.trim().to_owned())
}

/// How many replicas and other Sentinels the Sentinel at `url` knows for `mymaster`.
async fn sentinel_view(url: &str) -> Option<(usize, usize)> {
    let mut conn = redis_connection(url).await.ok()?;
    let replicas: Vec<redis::Value> = redis::cmd("SENTINEL")
        .arg("REPLICAS")
        .arg("mymaster")
        .query_async(&mut conn)
        .await
        .ok()?;
    let sentinels: Vec<redis::Value> = redis::cmd("SENTINEL")
        .arg("SENTINELS")
        .arg("mymaster")
        .query_async(&mut conn)
        .await
        .ok()?;
    Some((replicas.len(), sentinels.len()))
}

/// Whether instance `i` reports Redis up (ready, nothing degraded).
async fn redis_up_on(cluster: &Cluster, i: usize) -> bool {
    let Ok(r) = cluster.get(i, "/health/ready").send().await else {
        return false;
    };
    let ok = r.status() == StatusCode::OK;
    let body: serde_json::Value = r.json().await.unwrap_or_default();
    ok && body["degraded"].as_array().is_some_and(Vec::is_empty)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_master_under_chat_load_loses_nothing_and_logs_nobody_out() {
    let Some(services) = Services::discover().await else {
        return;
    };
    let Some(mut master) = OwnRedis::start().await else {
        return;
    };
    let Some(replica) = OwnRedis::start_replica(master.port).await else {
        return;
    };
    let mut sentinels = Vec::new();
    for _ in 0..3 {
        let Some(s) =
            OwnRedis::start_sentinel_of(master.port, 2, Duration::from_millis(1000)).await
        else {
            return;
        };
        sentinels.push(s);
    }
    let replica_url = replica.url();
    eventually("the replica to be in sync", || async {
        info_field(&replica_url, "replication", "master_link_status")
            .await
            .as_deref()
            == Some("up")
    })
    .await;
    for s in &sentinels {
        let url = s.url();
        eventually(
            "each Sentinel to know the replica and the two others",
            || async { sentinel_view(&url).await == Some((1, 2)) },
        )
        .await;
    }

    let spec = Spec::new(2).sentinels(sentinels.iter().map(OwnRedis::url).collect(), "mymaster");
    let cluster = Cluster::start(&services, spec).await;
    let (_, login) = cluster.user(0, 0).await;
    let (b0, b1) = (cluster.base(0), cluster.base(1));
    let (ada, bob) = (
        user(&cluster.http, &b0).await,
        user(&cluster.http, &b1).await,
    );
    let wid = workspace(&cluster.http, &b0, &ada, &[&bob]).await;
    let a = Sio::connect(&b0, Auth::Token(&ada.token)).await;
    let mut b = Sio::connect(&b1, Auth::Token(&bob.token)).await;
    a.join(&wid, None).await;
    b.join(&wid, None).await;
    let mut acked = vec![
        a.send(&wid, "before", "m0").await["seq"]
            .as_i64()
            .expect("seq"),
    ];
    assert_eq!(b.next_message(&wid).await["seq"], acked[0]);

    let killed = Instant::now();
    master.kill();
    // Chat goes on through the failover: every send is acknowledged (committed).
    let mut n = 1;
    while !(redis_up_on(&cluster, 0).await && redis_up_on(&cluster, 1).await) {
        let seq = a.send(&wid, "during the failover", &format!("m{n}")).await;
        acked.push(seq["seq"].as_i64().expect("seq"));
        n += 1;
        // A steady chat rate under the per-socket budget (20 events/s): sends no
        // longer wait for Redis once the instance stops asking it.
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            killed.elapsed() < Duration::from_secs(60),
            "no failover within 60 s"
        );
    }
    let back = killed.elapsed();
    eprintln!(
        "failover: both instances write to Redis again {back:?} after the master was killed ({} messages sent meanwhile)",
        n - 1
    );
    let promoted = info_field(&replica_url, "replication", "role").await;
    assert_eq!(
        promoted.as_deref(),
        Some("master"),
        "the replica was promoted"
    );

    for i in 0..3 {
        let seq = a.send(&wid, "after", &format!("after-{i}")).await;
        acked.push(seq["seq"].as_i64().expect("seq"));
    }
    let last = *acked.last().expect("acked");
    b.message_with_seq(&wid, last).await;
    assert_eq!(
        b.seen_seqs(&wid),
        acked,
        "every acked message once, in order, on the other instance"
    );

    // Nobody was logged out, cookie or token, whatever the new master holds.
    me_on(&cluster, &login, 0..2).await;
    let (status, body) = call(cluster.get(1, "/health/cluster")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}
