//! `OptOutStore` contract: SQL (temporary SQLite) and Redis.

use std::sync::Arc;

use shoal::analytics::OptOutStore;
use shoal::analytics::redis::RedisOptOutStore;
use shoal::analytics::sql::SqlOptOutStore;
use uuid::Uuid;

use crate::support::{Pair, RedisKind, Sql, sqlite_pair};

trait Fixture {
    async fn pair() -> Option<Pair<dyn OptOutStore>>;
}

impl Fixture for Sql {
    async fn pair() -> Option<Pair<dyn OptOutStore>> {
        let (a, b, guard) = sqlite_pair().await;
        Some(Pair {
            a: Arc::new(SqlOptOutStore::new(a)),
            b: Arc::new(SqlOptOutStore::new(b)),
            _guard: guard,
        })
    }
}

impl<R: RedisKind> Fixture for R {
    async fn pair() -> Option<Pair<dyn OptOutStore>> {
        let (a, b, guard) = R::clients().await?;
        Some(Pair {
            a: Arc::new(RedisOptOutStore::new(a)),
            b: Arc::new(RedisOptOutStore::new(b)),
            _guard: guard,
        })
    }
}

contract_suite!(
    backends: [sql => crate::support::Sql, redis => crate::support::Redis, redis_cluster => crate::support::RedisCluster],
    cases: [
        unknown_users_are_not_opted_out,
        opt_out_is_seen_on_every_instance_until_revoked,
        set_is_idempotent,
        users_are_independent,
        check_is_ok,
    ]
);

async fn unknown_users_are_not_opted_out<F: Fixture>() {
    let Some(p) = F::pair().await else { return };
    assert!(!p.a.is_opted_out(Uuid::now_v7()).await.expect("query"));
}

async fn opt_out_is_seen_on_every_instance_until_revoked<F: Fixture>() {
    let Some(p) = F::pair().await else { return };
    let user = Uuid::now_v7();
    p.a.set(user, true).await.expect("opt out on A");
    assert!(p.b.is_opted_out(user).await.expect("query B"));
    assert!(p.a.is_opted_out(user).await.expect("query A"));
    p.b.set(user, false).await.expect("opt in on B");
    assert!(!p.a.is_opted_out(user).await.expect("query A after opt-in"));
}

async fn set_is_idempotent<F: Fixture>() {
    let Some(p) = F::pair().await else { return };
    let user = Uuid::now_v7();
    p.a.set(user, true).await.expect("opt out");
    p.b.set(user, true).await.expect("opt out again");
    assert!(p.a.is_opted_out(user).await.expect("query"));
    p.a.set(user, false).await.expect("opt in");
    p.b.set(user, false).await.expect("opt in again");
    assert!(!p.b.is_opted_out(user).await.expect("query"));
}

async fn users_are_independent<F: Fixture>() {
    let Some(p) = F::pair().await else { return };
    let (one, two) = (Uuid::now_v7(), Uuid::now_v7());
    p.a.set(one, true).await.expect("opt out one");
    assert!(!p.b.is_opted_out(two).await.expect("query two"));
}

async fn check_is_ok<F: Fixture>() {
    let Some(p) = F::pair().await else { return };
    p.a.check().await.expect("check");
}
