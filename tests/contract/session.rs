//! `SessionStore` contract: SQL (temporary SQLite) and Redis.

use std::sync::Arc;
use std::time::Duration;

use shoal::pubsub::redis::RedisPubSub;
use shoal::session::SessionStore;
use shoal::session::redis::RedisSessionStore;
use shoal::session::sql::SqlSessionStore;

use crate::support::{Pair, RedisKind, Sql, eventually, redis_clients, sqlite_pair};

trait Fixture {
    async fn pair() -> Option<Pair<dyn SessionStore>>;
}

// The SQL store serves one instance (embedded mode) and caches reads in-process, so
// like the memory backends of the other suites both "instances" are one object. What
// it promises beyond that — durability across a restart — has its own test below.
impl Fixture for Sql {
    async fn pair() -> Option<Pair<dyn SessionStore>> {
        let (a, _b, guard) = sqlite_pair().await;
        let store: Arc<dyn SessionStore> = Arc::new(SqlSessionStore::new(a));
        Some(Pair {
            a: store.clone(),
            b: store,
            _guard: guard,
        })
    }
}

impl<R: RedisKind> Fixture for R {
    async fn pair() -> Option<Pair<dyn SessionStore>> {
        let (a, b, guard) = R::clients().await?;
        Some(Pair {
            a: Arc::new(store_on(a).await),
            b: Arc::new(store_on(b).await),
            _guard: guard,
        })
    }
}

/// One instance's store: its own subscription connection, as in `Backends`.
async fn store_on(client: shoal::redis_client::RedisClient) -> RedisSessionStore {
    let pubsub = RedisPubSub::connect(&client).await.expect("pubsub");
    RedisSessionStore::start(client, pubsub)
        .await
        .expect("session store")
}

const HOUR: Duration = Duration::from_secs(3600);

contract_suite!(
    backends: [sql => crate::support::Sql, redis => crate::support::Redis, redis_cluster => crate::support::RedisCluster],
    cases: [
        put_then_get_on_every_instance,
        unknown_key_is_none,
        put_replaces_value_and_restarts_expiry,
        expires_after_ttl,
        delete_is_global_and_idempotent,
        a_change_reaches_an_instance_that_already_read_the_session,
        keys_are_independent,
        check_is_ok,
    ]
);

async fn put_then_get_on_every_instance<F: Fixture>() {
    let Some(p) = F::pair().await else { return };
    let value: Vec<u8> = (0..=255u8).collect();
    p.a.put("k1", &value, HOUR).await.expect("put");
    assert_eq!(p.a.get("k1").await.expect("get on A"), Some(value.clone()));
    assert_eq!(p.b.get("k1").await.expect("get on B"), Some(value));
}

async fn unknown_key_is_none<F: Fixture>() {
    let Some(p) = F::pair().await else { return };
    assert_eq!(p.a.get("nobody").await.expect("get"), None);
}

async fn put_replaces_value_and_restarts_expiry<F: Fixture>() {
    let Some(p) = F::pair().await else { return };
    p.a.put("k", b"old", Duration::from_millis(300))
        .await
        .expect("put old");
    p.b.put("k", b"new", HOUR).await.expect("put new");
    assert_eq!(p.a.get("k").await.expect("get"), Some(b"new".to_vec()));
    // Past the first TTL the record lives on under the second one.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        p.a.get("k").await.expect("get later"),
        Some(b"new".to_vec())
    );
}

async fn expires_after_ttl<F: Fixture>() {
    let Some(p) = F::pair().await else { return };
    p.a.put("k", b"v", Duration::from_millis(300))
        .await
        .expect("put");
    p.a.put("other", b"v", HOUR).await.expect("put other");
    let b = p.b.clone();
    eventually("the session to expire on B", || {
        let b = b.clone();
        async move { b.get("k").await.expect("get").is_none() }
    })
    .await;
    assert_eq!(p.a.get("k").await.expect("get on A"), None);
    assert_eq!(p.b.get("other").await.expect("other"), Some(b"v".to_vec()));
}

async fn delete_is_global_and_idempotent<F: Fixture>() {
    let Some(p) = F::pair().await else { return };
    p.a.put("k", b"v", HOUR).await.expect("put");
    assert!(p.b.get("k").await.expect("get").is_some());
    p.b.delete("k").await.expect("delete");
    assert_eq!(p.a.get("k").await.expect("get on A"), None);
    assert_eq!(p.b.get("k").await.expect("get on B"), None);
    p.a.delete("k").await.expect("delete again");
    p.a.delete("never-existed").await.expect("delete unknown");
}

/// An instance that has read a session (and may keep it near) sees a replacement and
/// a deletion made on another instance as soon as that call returned: logging out on
/// one instance logs out on all.
async fn a_change_reaches_an_instance_that_already_read_the_session<F: Fixture>() {
    let Some(p) = F::pair().await else { return };
    p.a.put("k", b"first", HOUR).await.expect("put");
    for _ in 0..3 {
        assert_eq!(
            p.a.get("k").await.expect("get on A"),
            Some(b"first".to_vec())
        );
    }
    p.b.put("k", b"second", HOUR).await.expect("replace on B");
    assert_eq!(
        p.a.get("k").await.expect("get on A"),
        Some(b"second".to_vec())
    );
    p.b.delete("k").await.expect("delete on B");
    assert_eq!(p.a.get("k").await.expect("get on A after delete"), None);
}

async fn keys_are_independent<F: Fixture>() {
    let Some(p) = F::pair().await else { return };
    p.a.put("k1", b"one", HOUR).await.expect("put k1");
    p.a.put("k2", b"two", HOUR).await.expect("put k2");
    p.a.delete("k1").await.expect("delete k1");
    assert_eq!(p.b.get("k2").await.expect("get k2"), Some(b"two".to_vec()));
}

async fn check_is_ok<F: Fixture>() {
    let Some(p) = F::pair().await else { return };
    p.a.check().await.expect("check");
}

/// Redis only: the store keeps exactly the bytes it was given (sealing happens above
/// it) under the prefixed key.
#[tokio::test]
async fn redis_stores_the_bytes_under_the_prefixed_key() {
    let Some((client, _, _guard)) = redis_clients().await else {
        return;
    };
    let store = store_on(client.clone()).await;
    let value = b"\x00sealed\xffbytes".to_vec();
    store.put("abc", &value, HOUR).await.expect("put");
    let raw: Option<Vec<u8>> = client
        .query(::redis::cmd("GET").arg(format!("{}:session:abc", client.prefix())))
        .await
        .expect("raw get");
    assert_eq!(raw, Some(value));
}

/// Embedded mode keeps sessions in the database: a new store over the same database
/// (the process after a restart) sees what the old one wrote and deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_sessions_survive_a_restart() {
    let (a, b, _guard) = sqlite_pair().await;
    let before = SqlSessionStore::new(a);
    before.put("kept", b"v1", HOUR).await.expect("put kept");
    before.put("gone", b"v2", HOUR).await.expect("put gone");
    assert_eq!(before.get("gone").await.expect("get"), Some(b"v2".to_vec()));
    before.delete("gone").await.expect("delete");

    let after = SqlSessionStore::new(b);
    assert_eq!(
        after.get("kept").await.expect("get kept"),
        Some(b"v1".to_vec())
    );
    assert_eq!(after.get("gone").await.expect("get gone"), None);
}
