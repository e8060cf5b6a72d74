//! `Presence` contract: in-process and Redis.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use shoal::presence::Presence;
use shoal::presence::memory::MemoryPresence;
use shoal::presence::redis::RedisPresence;

use crate::support::{Guard, Memory, Pair, RedisKind, eventually};

trait Fixture {
    async fn pair() -> Option<Pair<dyn Presence>>;
}

impl Fixture for Memory {
    async fn pair() -> Option<Pair<dyn Presence>> {
        let one: Arc<dyn Presence> = Arc::new(MemoryPresence::new());
        Some(Pair {
            a: one.clone(),
            b: one,
            _guard: Guard::default(),
        })
    }
}

impl<R: RedisKind> Fixture for R {
    async fn pair() -> Option<Pair<dyn Presence>> {
        let (a, b, guard) = R::clients().await?;
        Some(Pair {
            a: Arc::new(RedisPresence::new(a)),
            b: Arc::new(RedisPresence::new(b)),
            _guard: guard,
        })
    }
}

const HOUR: Duration = Duration::from_secs(3600);

contract_suite!(
    backends: [memory => crate::support::Memory, redis => crate::support::Redis, redis_cluster => crate::support::RedisCluster],
    cases: [
        join_is_listed_on_every_instance,
        join_again_refreshes_info_and_ttl,
        join_many_joins_and_refreshes_every_entry,
        leave_removes_and_is_idempotent,
        entries_expire_without_refresh,
        rooms_are_independent,
        check_is_ok,
    ]
);

async fn sorted(p: &Arc<dyn Presence>, room: &str) -> Vec<(String, Bytes)> {
    let mut list = p.list(room).await.expect("list");
    list.sort();
    list
}

fn entry(conn: &str, info: &'static str) -> (String, Bytes) {
    (conn.to_owned(), Bytes::from_static(info.as_bytes()))
}

async fn join_is_listed_on_every_instance<F: Fixture>() {
    let Some(p) = F::pair().await else { return };
    p.a.join("room", "c1", Bytes::from_static(b"alice"), HOUR)
        .await
        .expect("join c1");
    p.b.join("room", "c2", Bytes::from_static(b"bob"), HOUR)
        .await
        .expect("join c2");
    let expected = vec![entry("c1", "alice"), entry("c2", "bob")];
    assert_eq!(sorted(&p.a, "room").await, expected);
    assert_eq!(sorted(&p.b, "room").await, expected);
}

async fn join_again_refreshes_info_and_ttl<F: Fixture>() {
    let Some(p) = F::pair().await else { return };
    p.a.join(
        "room",
        "c1",
        Bytes::from_static(b"v1"),
        Duration::from_millis(300),
    )
    .await
    .expect("join");
    p.b.join("room", "c1", Bytes::from_static(b"v2"), HOUR)
        .await
        .expect("refresh");
    assert_eq!(sorted(&p.a, "room").await, vec![entry("c1", "v2")]);
    // Past the first TTL the entry lives on under the refreshed one.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(sorted(&p.b, "room").await, vec![entry("c1", "v2")]);
}

async fn join_many_joins_and_refreshes_every_entry<F: Fixture>() {
    let Some(p) = F::pair().await else { return };
    let short = Duration::from_millis(300);
    p.a.join("room", "c1", Bytes::from_static(b"v1"), short)
        .await
        .expect("join c1");
    p.a.join("room", "gone", Bytes::from_static(b"g"), short)
        .await
        .expect("join gone");
    p.a.join_many("room", &[], HOUR).await.expect("nothing");
    // More entries than one Redis script call carries.
    let many: Vec<(String, Bytes)> = (0..1_200)
        .map(|i| (format!("m{i:04}"), Bytes::from(format!("u{i}"))))
        .chain([entry("c1", "v2")])
        .collect();
    p.b.join_many("room", &many, HOUR).await.expect("join_many");
    let mut expected = many.clone();
    expected.push(entry("gone", "g"));
    expected.sort();
    assert_eq!(sorted(&p.a, "room").await, expected);
    // `c1` was refreshed (new info, new TTL); `gone` was not, and expires.
    let (a, live) = (p.a.clone(), many.len());
    eventually("the entry not refreshed to expire", || {
        let a = a.clone();
        async move { a.list("room").await.expect("list").len() == live }
    })
    .await;
    let mut refreshed = many;
    refreshed.sort();
    assert_eq!(sorted(&p.b, "room").await, refreshed);
}

async fn leave_removes_and_is_idempotent<F: Fixture>() {
    let Some(p) = F::pair().await else { return };
    p.a.join("room", "c1", Bytes::from_static(b"a"), HOUR)
        .await
        .expect("join c1");
    p.a.join("room", "c2", Bytes::from_static(b"b"), HOUR)
        .await
        .expect("join c2");
    p.b.leave("room", "c1").await.expect("leave");
    assert_eq!(sorted(&p.a, "room").await, vec![entry("c2", "b")]);
    p.b.leave("room", "c1").await.expect("leave again");
    p.a.leave("room", "nobody").await.expect("leave unknown");
    p.a.leave("empty-room", "nobody")
        .await
        .expect("leave unknown room");
    assert_eq!(sorted(&p.b, "room").await, vec![entry("c2", "b")]);
}

async fn entries_expire_without_refresh<F: Fixture>() {
    let Some(p) = F::pair().await else { return };
    p.a.join(
        "room",
        "short",
        Bytes::from_static(b"s"),
        Duration::from_millis(300),
    )
    .await
    .expect("join short");
    p.a.join("room", "long", Bytes::from_static(b"l"), HOUR)
        .await
        .expect("join long");
    let b = p.b.clone();
    eventually("the short entry to expire", || {
        let b = b.clone();
        async move { b.list("room").await.expect("list").len() == 1 }
    })
    .await;
    assert_eq!(sorted(&p.a, "room").await, vec![entry("long", "l")]);
}

async fn rooms_are_independent<F: Fixture>() {
    let Some(p) = F::pair().await else { return };
    p.a.join("r1", "c1", Bytes::from_static(b"x"), HOUR)
        .await
        .expect("join");
    assert!(p.b.list("r2").await.expect("list r2").is_empty());
    p.a.leave("r2", "c1").await.expect("leave elsewhere");
    assert_eq!(sorted(&p.b, "r1").await, vec![entry("c1", "x")]);
}

async fn check_is_ok<F: Fixture>() {
    let Some(p) = F::pair().await else { return };
    p.a.check().await.expect("check");
}
