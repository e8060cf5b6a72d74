//! `Presence` contract: in-process and Redis.

use std::sync::Arc;
use std::time::Duration;

use shoal::presence::memory::MemoryPresence;
use shoal::presence::redis::RedisPresence;
use shoal::presence::{Entry, Presence};

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
        a_user_comes_online_with_its_first_connection_only,
        a_user_goes_offline_with_its_last_connection_only,
        join_again_refreshes_the_ttl,
        join_many_joins_and_refreshes_every_entry,
        leave_is_idempotent,
        entries_expire_without_refresh,
        a_user_with_only_expired_connections_comes_online_again,
        rooms_are_independent,
        concurrent_first_joins_announce_the_user_once,
        check_is_ok,
    ]
);

fn users(names: &[&str]) -> Vec<String> {
    names.iter().map(|n| (*n).to_owned()).collect()
}

fn entry(user: &str, conn: &str) -> Entry {
    Entry {
        user: user.to_owned(),
        conn: conn.to_owned(),
    }
}

async fn join_is_listed_on_every_instance<F: Fixture>() {
    let Some(p) = F::pair().await else { return };
    assert!(p.a.join("room", "bob", "c2", HOUR).await.expect("join c2"));
    assert!(p.b.join("room", "ada", "c1", HOUR).await.expect("join c1"));
    assert_eq!(
        p.a.list("room").await.expect("list"),
        users(&["ada", "bob"])
    );
    assert_eq!(
        p.b.list("room").await.expect("list"),
        users(&["ada", "bob"])
    );
}

async fn a_user_comes_online_with_its_first_connection_only<F: Fixture>() {
    let Some(p) = F::pair().await else { return };
    assert!(p.a.join("room", "ada", "tab1", HOUR).await.expect("tab 1"));
    // A second tab, on another instance, and a refresh of the first: no change.
    assert!(!p.b.join("room", "ada", "tab2", HOUR).await.expect("tab 2"));
    assert!(
        !p.a.join("room", "ada", "tab1", HOUR)
            .await
            .expect("refresh")
    );
    assert_eq!(p.b.list("room").await.expect("list"), users(&["ada"]));
}

async fn a_user_goes_offline_with_its_last_connection_only<F: Fixture>() {
    let Some(p) = F::pair().await else { return };
    p.a.join("room", "ada", "tab1", HOUR).await.expect("tab 1");
    p.b.join("room", "ada", "tab2", HOUR).await.expect("tab 2");
    p.a.join("room", "bob", "c3", HOUR).await.expect("bob");
    assert!(!p.b.leave("room", "ada", "tab1").await.expect("leave tab 1"));
    assert_eq!(
        p.a.list("room").await.expect("list"),
        users(&["ada", "bob"])
    );
    assert!(p.a.leave("room", "ada", "tab2").await.expect("leave tab 2"));
    assert_eq!(p.b.list("room").await.expect("list"), users(&["bob"]));
    // Back: online again.
    assert!(p.b.join("room", "ada", "tab3", HOUR).await.expect("tab 3"));
}

async fn join_again_refreshes_the_ttl<F: Fixture>() {
    let Some(p) = F::pair().await else { return };
    p.a.join("room", "ada", "c1", Duration::from_millis(300))
        .await
        .expect("join");
    p.b.join("room", "ada", "c1", HOUR).await.expect("refresh");
    // Past the first TTL the entry lives on under the refreshed one.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(p.a.list("room").await.expect("list"), users(&["ada"]));
    assert!(p.b.leave("room", "ada", "c1").await.expect("leave"));
}

async fn join_many_joins_and_refreshes_every_entry<F: Fixture>() {
    let Some(p) = F::pair().await else { return };
    let short = Duration::from_millis(300);
    p.a.join("room", "u0000", "c0000", short)
        .await
        .expect("join c0000");
    p.a.join("room", "gone", "g", short)
        .await
        .expect("join gone");
    p.a.join_many("room", &[], HOUR).await.expect("nothing");
    // More entries than one Redis script call carries; two connections per user.
    let many: Vec<Entry> = (0..1_200)
        .map(|i| entry(&format!("u{:04}", i / 2), &format!("c{i:04}")))
        .collect();
    p.b.join_many("room", &many, HOUR).await.expect("join_many");
    let expected: Vec<String> = (0..600).map(|i| format!("u{i:04}")).collect();
    let with_gone = {
        let mut v = expected.clone();
        v.push("gone".to_owned());
        v.sort();
        v
    };
    assert_eq!(p.a.list("room").await.expect("list"), with_gone);
    // `c0000` was refreshed; `gone` was not, and expires.
    let (a, live) = (p.a.clone(), expected.len());
    eventually("the entry not refreshed to expire", || {
        let a = a.clone();
        async move { a.list("room").await.expect("list").len() == live }
    })
    .await;
    assert_eq!(p.b.list("room").await.expect("list"), expected);
    // Joined in bulk, left one by one: the user goes offline with its last one.
    assert!(!p.a.leave("room", "u0599", "c1198").await.expect("leave"));
    assert!(p.a.leave("room", "u0599", "c1199").await.expect("leave"));
}

async fn leave_is_idempotent<F: Fixture>() {
    let Some(p) = F::pair().await else { return };
    p.a.join("room", "ada", "c1", HOUR).await.expect("join c1");
    p.a.join("room", "bob", "c2", HOUR).await.expect("join c2");
    assert!(p.b.leave("room", "ada", "c1").await.expect("leave"));
    assert!(p.b.leave("room", "ada", "c1").await.expect("leave again"));
    assert!(
        p.a.leave("room", "nobody", "c9")
            .await
            .expect("leave unknown")
    );
    assert!(
        !p.a.leave("room", "bob", "c9")
            .await
            .expect("leave an unknown connection of an online user")
    );
    assert!(
        p.a.leave("empty-room", "ada", "c1")
            .await
            .expect("leave unknown room")
    );
    assert_eq!(p.b.list("room").await.expect("list"), users(&["bob"]));
}

async fn entries_expire_without_refresh<F: Fixture>() {
    let Some(p) = F::pair().await else { return };
    let short = Duration::from_millis(300);
    p.a.join("room", "ada", "short", short)
        .await
        .expect("join short");
    p.a.join("room", "bob", "long", HOUR)
        .await
        .expect("join long");
    // Ada's other connection is short-lived too: she expires with both.
    p.b.join("room", "ada", "short2", short)
        .await
        .expect("join short2");
    let b = p.b.clone();
    eventually("the short entries to expire", || {
        let b = b.clone();
        async move { b.list("room").await.expect("list").len() == 1 }
    })
    .await;
    assert_eq!(p.a.list("room").await.expect("list"), users(&["bob"]));
}

async fn a_user_with_only_expired_connections_comes_online_again<F: Fixture>() {
    let Some(p) = F::pair().await else { return };
    // Its instance died: the entry expires without a leave.
    p.a.join("room", "ada", "dead", Duration::from_millis(200))
        .await
        .expect("join");
    let a = p.a.clone();
    eventually("the dead instance's entry to expire", || {
        let a = a.clone();
        async move { a.list("room").await.expect("list").is_empty() }
    })
    .await;
    assert!(p.b.join("room", "ada", "new", HOUR).await.expect("rejoin"));
}

async fn rooms_are_independent<F: Fixture>() {
    let Some(p) = F::pair().await else { return };
    p.a.join("r1", "ada", "c1", HOUR).await.expect("join");
    assert!(p.b.list("r2").await.expect("list r2").is_empty());
    assert!(p.b.join("r2", "ada", "c1", HOUR).await.expect("join r2"));
    assert!(p.a.leave("r2", "ada", "c1").await.expect("leave r2"));
    assert_eq!(p.b.list("r1").await.expect("list r1"), users(&["ada"]));
}

async fn concurrent_first_joins_announce_the_user_once<F: Fixture>() {
    let Some(p) = F::pair().await else { return };
    let joins = (0..20).map(|i| {
        let backend = if i % 2 == 0 { p.a.clone() } else { p.b.clone() };
        async move {
            backend
                .join("room", "ada", &format!("tab{i}"), HOUR)
                .await
                .expect("join")
        }
    });
    let online = futures::future::join_all(joins).await;
    assert_eq!(online.iter().filter(|o| **o).count(), 1, "{online:?}");
}

async fn check_is_ok<F: Fixture>() {
    let Some(p) = F::pair().await else { return };
    p.a.check().await.expect("check");
}
