//! `SessionStore` contract: SQL (temporary SQLite), Redis, and the distributed
//! store (PostgreSQL as the truth, Redis as the copy).

use std::sync::Arc;
use std::time::Duration;

use shoal::pubsub::redis::RedisPubSub;
use shoal::session::SessionStore;
use shoal::session::durable::DurableSessionStore;
use shoal::session::redis::RedisSessionStore;
use shoal::session::sql::SqlSessionStore;

use crate::support::{
    Guard, OwnRedis, Pair, RedisKind, Sql, eventually, postgres_pair, redis_clients, sqlite_pair,
};

/// The distributed store: one PostgreSQL database and one Redis prefix, two instances.
pub(crate) struct Durable;

impl Fixture for Durable {
    async fn pair() -> Option<Pair<dyn SessionStore>> {
        let (db_a, db_b, db) = postgres_pair().await?;
        let (a, b, guard) = redis_clients().await?;
        Some(Pair {
            a: Arc::new(DurableSessionStore::new(db_a, store_on(a).await)),
            b: Arc::new(DurableSessionStore::new(db_b, store_on(b).await)),
            _guard: Guard {
                _db: Some(db),
                ..guard
            },
        })
    }
}

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
    backends: [sql => crate::support::Sql, redis => crate::support::Redis, redis_cluster => crate::support::RedisCluster, durable => crate::session::Durable],
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

/// The distributed store on a Redis this test owns: the two instances, the Redis, and
/// a raw client on the same prefix.
async fn durable_on_own_redis() -> Option<(
    DurableSessionStore,
    DurableSessionStore,
    OwnRedis,
    shoal::redis_client::RedisClient,
    shoal_testkit::TestDb,
)> {
    let (db_a, db_b, db) = postgres_pair().await?;
    let redis = OwnRedis::start().await?;
    let target = shoal::config::RedisTarget::Url(redis.url().into());
    let prefix = crate::support::random_prefix();
    let connect = || shoal::redis_client::RedisClient::connect(&target, &prefix, None);
    let (a, b, raw) = (
        connect().await.expect("client A"),
        connect().await.expect("client B"),
        connect().await.expect("raw client"),
    );
    Some((
        DurableSessionStore::new(db_a, store_on(a).await),
        DurableSessionStore::new(db_b, store_on(b).await),
        redis,
        raw,
        db,
    ))
}

/// Redis's own copy of a session; `Err` while the raw client reconnects.
async fn raw_session(
    raw: &shoal::redis_client::RedisClient,
    key: &str,
) -> Result<Option<Vec<u8>>, shoal::backend_error::BackendError> {
    raw.query(::redis::cmd("GET").arg(format!("{}:session:{key}", raw.prefix())))
        .await
}

/// Redis restarted with nothing (no persistence, or a replica promoted before it
/// synced): every session is still there, on every instance, and new ones work
/// during the outage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_sessions_survive_redis_coming_back_empty() {
    let Some((a, b, mut redis, raw, _db)) = durable_on_own_redis().await else {
        return;
    };
    a.put("kept", b"v1", HOUR).await.expect("put");
    assert_eq!(b.get("kept").await.expect("get on B"), Some(b"v1".to_vec()));

    redis.kill();
    assert_eq!(
        b.get("kept").await.expect("get on B while Redis is down"),
        Some(b"v1".to_vec())
    );
    a.put("new", b"v2", HOUR)
        .await
        .expect("a login while Redis is down");
    assert_eq!(
        b.get("new").await.expect("get new on B"),
        Some(b"v2".to_vec())
    );

    redis.restart().await.expect("restart redis-server, empty");
    for (key, value) in [("kept", b"v1"), ("new", b"v2")] {
        assert_eq!(b.get(key).await.expect("get on B"), Some(value.to_vec()));
        assert_eq!(a.get(key).await.expect("get on A"), Some(value.to_vec()));
    }
    // And Redis holds them again once the instances trust it: read on, and the
    // reads put them back.
    eventually("the sessions to be back in Redis", || async {
        assert_eq!(b.get("kept").await.expect("get"), Some(b"v1".to_vec()));
        matches!(raw_session(&raw, "kept").await, Ok(Some(_)))
            && matches!(raw_session(&raw, "new").await, Ok(Some(_)))
    })
    .await;
}

/// A logout while Redis is unreachable (frozen, as behind a partition: it keeps its
/// data) holds on every instance at once, and still holds when Redis answers again
/// with the old copy: the instances remove it before they trust Redis again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_a_logout_while_redis_is_unreachable_holds_everywhere() {
    let Some((a, b, redis, raw, _db)) = durable_on_own_redis().await else {
        return;
    };
    a.put("k", b"v", HOUR).await.expect("put");
    // Both instances hold it near.
    assert!(a.get("k").await.expect("get on A").is_some());
    assert!(b.get("k").await.expect("get on B").is_some());

    redis.freeze();
    a.delete("k")
        .await
        .expect("logout while Redis is unreachable");
    assert_eq!(b.get("k").await.expect("get on B after the logout"), None);
    assert_eq!(a.get("k").await.expect("get on A after the logout"), None);

    redis.thaw();
    assert_eq!(b.get("k").await.expect("get on B once Redis is back"), None);
    eventually("the old copy to be removed from Redis", || async {
        // Reads keep refusing it meanwhile.
        assert_eq!(b.get("k").await.expect("get on B"), None);
        matches!(raw_session(&raw, "k").await, Ok(None))
    })
    .await;
    assert_eq!(a.get("k").await.expect("get on A"), None);
}
