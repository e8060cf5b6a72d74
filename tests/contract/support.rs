//! The backend fixtures every contract suite shares: two "instances" of a backend
//! (in-process, SQL on a temporary SQLite file, Redis, Redis Cluster) on one state.
//! Services, owned Redis servers and bounded waits come from the test kit.

use std::sync::Arc;

use secrecy::SecretString;
use shoal::config::{Config, RedisTarget};
use shoal::db::Db;
use shoal::redis_client::RedisClient;
pub(crate) use shoal_testkit::{OwnRedis, eventually, within};
use shoal_testkit::{PrefixCleanup, missing_service, redis_url};

/// The in-process backends.
pub(crate) struct Memory;
/// The SQL backends on a fresh temporary SQLite file.
pub(crate) struct Sql;
/// The Redis backends on a random key prefix.
pub(crate) struct Redis;
/// The Redis backends on a three-master Redis Cluster (`REDIS_CLUSTER_NODES`), on a
/// random key prefix.
pub(crate) struct RedisCluster;

/// A Redis deployment the suites run against.
pub(crate) trait RedisKind {
    /// Two independent clients (two "instances") on one fresh random prefix, or `None`
    /// (after saying so) when this deployment cannot be reached.
    async fn clients() -> Option<(RedisClient, RedisClient, Guard)>;
}

impl RedisKind for Redis {
    async fn clients() -> Option<(RedisClient, RedisClient, Guard)> {
        redis_clients().await
    }
}

impl RedisKind for RedisCluster {
    async fn clients() -> Option<(RedisClient, RedisClient, Guard)> {
        let nodes =
            match tokio::task::spawn_blocking(shoal_testkit::redis_cluster::redis_cluster_nodes)
                .await
                .expect("start the test cluster")
            {
                Ok(nodes) => nodes,
                Err(e) => {
                    missing_service(&format!("cannot run a Redis Cluster here ({e})"));
                    return None;
                }
            };
        let target = RedisTarget::Cluster {
            nodes: nodes.into_iter().map(SecretString::from).collect(),
        };
        let prefix = random_prefix();
        let a = RedisClient::connect(&target, &prefix, None)
            .await
            .expect("connect client A to the cluster");
        let b = RedisClient::connect(&target, &prefix, None)
            .await
            .expect("connect client B to the cluster");
        // The cluster lives only as long as this test process.
        Some((a, b, Guard::default()))
    }
}

/// Two instances of one backend sharing one state, plus whatever must outlive them.
pub(crate) struct Pair<T: ?Sized> {
    pub(crate) a: Arc<T>,
    pub(crate) b: Arc<T>,
    pub(crate) _guard: Guard,
}

/// Keeps temporary resources alive; removes a test's Redis keys on drop.
#[derive(Default)]
pub(crate) struct Guard {
    pub(crate) _dir: Option<tempfile::TempDir>,
    pub(crate) _keys: Option<PrefixCleanup>,
    pub(crate) _db: Option<shoal_testkit::TestDb>,
}

/// The test Redis, or `None` (after saying so) when it is unreachable.
pub(crate) async fn redis_target() -> Option<RedisTarget> {
    let url = redis_url();
    let target = RedisTarget::Url(SecretString::from(url.clone()));
    match RedisClient::connect(&target, "shoal-test-probe", None).await {
        Ok(_) => Some(target),
        Err(e) => {
            missing_service(&format!("Redis is not reachable at {url} ({e})"));
            None
        }
    }
}

/// Two independent clients (two "instances") on one fresh random prefix.
pub(crate) async fn redis_clients() -> Option<(RedisClient, RedisClient, Guard)> {
    let target = redis_target().await?;
    let prefix = random_prefix();
    let a = RedisClient::connect(&target, &prefix, None)
        .await
        .expect("connect client A");
    let b = RedisClient::connect(&target, &prefix, None)
        .await
        .expect("connect client B");
    let guard = Guard {
        _keys: Some(PrefixCleanup {
            redis_url: redis_url(),
            prefix,
        }),
        ..Guard::default()
    };
    Some((a, b, guard))
}

pub(crate) fn random_prefix() -> String {
    format!("shoal-test-{}", uuid::Uuid::now_v7().simple())
}

/// Two pools on one migrated temporary SQLite file.
pub(crate) async fn sqlite_pair() -> (Db, Db, Guard) {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("contract.db").display());
    let config = Config::from_pairs([("DATABASE_URL", url.as_str())]).expect("test config");
    let a = Db::connect(&config).await.expect("open sqlite A");
    a.migrate().await.expect("migrate sqlite");
    let b = Db::connect(&config).await.expect("open sqlite B");
    let guard = Guard {
        _dir: Some(dir),
        ..Guard::default()
    };
    (a, b, guard)
}

/// Two pools on one migrated fresh PostgreSQL database, or `None` (after saying so)
/// when PostgreSQL is unreachable; the guard drops the database.
pub(crate) async fn postgres_pair() -> Option<(Db, Db, shoal_testkit::TestDb)> {
    let admin = shoal_testkit::Services::postgres().await?;
    let db = shoal_testkit::TestDb::create(&admin).await;
    let config = Config::from_pairs([("DATABASE_URL", db.url.as_str()), ("DB_POOL_MAX", "2")])
        .expect("test config");
    let a = Db::connect(&config).await.expect("open postgres A");
    a.migrate().await.expect("migrate postgres");
    let b = Db::connect(&config).await.expect("open postgres B");
    Some((a, b, db))
}
