//! `InstanceRegistry` contract: in-process and Redis.

use std::sync::Arc;
use std::time::Duration;

use shoal::registry::memory::MemoryRegistry;
use shoal::registry::redis::RedisRegistry;
use shoal::registry::{InstanceRecord, InstanceRegistry};

use crate::support::{Guard, Memory, Pair, RedisKind, eventually};

trait Fixture {
    async fn pair() -> Option<Pair<dyn InstanceRegistry>>;
}

impl Fixture for Memory {
    async fn pair() -> Option<Pair<dyn InstanceRegistry>> {
        let one: Arc<dyn InstanceRegistry> = Arc::new(MemoryRegistry::new());
        Some(Pair {
            a: one.clone(),
            b: one,
            _guard: Guard::default(),
        })
    }
}

impl<R: RedisKind> Fixture for R {
    async fn pair() -> Option<Pair<dyn InstanceRegistry>> {
        let (a, b, guard) = R::clients().await?;
        Some(Pair {
            a: Arc::new(RedisRegistry::new(a)),
            b: Arc::new(RedisRegistry::new(b)),
            _guard: guard,
        })
    }
}

const HOUR: Duration = Duration::from_secs(3600);

contract_suite!(
    backends: [memory => crate::support::Memory, redis => crate::support::Redis, redis_cluster => crate::support::RedisCluster],
    cases: [
        heartbeat_is_listed_on_every_instance,
        latest_heartbeat_wins,
        list_is_sorted_by_id,
        leave_removes_at_once,
        silent_instances_expire,
        check_is_ok,
    ]
);

fn record(id: &str, ws: u64) -> InstanceRecord {
    InstanceRecord {
        id: id.to_owned(),
        version: "0.1.0".into(),
        started_at: "2025-01-01T00:00:00Z".into(),
        last_heartbeat: "2025-01-01T00:00:05Z".into(),
        address: "127.0.0.1:8080".into(),
        http_connections: 1,
        ws_connections: ws,
        draining: false,
        request_rate: 12.5,
        p99_ms: 3.0,
    }
}

async fn heartbeat_is_listed_on_every_instance<F: Fixture>() {
    let Some(p) = F::pair().await else { return };
    p.a.heartbeat(&record("i1", 0), HOUR)
        .await
        .expect("heartbeat");
    assert_eq!(p.b.list().await.expect("list on B"), vec![record("i1", 0)]);
    assert_eq!(p.a.list().await.expect("list on A"), vec![record("i1", 0)]);
}

async fn latest_heartbeat_wins<F: Fixture>() {
    let Some(p) = F::pair().await else { return };
    p.a.heartbeat(&record("i1", 1), HOUR).await.expect("first");
    let mut draining = record("i1", 7);
    draining.draining = true;
    p.a.heartbeat(&draining, HOUR).await.expect("second");
    assert_eq!(p.b.list().await.expect("list"), vec![draining]);
}

async fn list_is_sorted_by_id<F: Fixture>() {
    let Some(p) = F::pair().await else { return };
    for id in ["c", "a", "b"] {
        p.a.heartbeat(&record(id, 0), HOUR)
            .await
            .expect("heartbeat");
    }
    let ids: Vec<String> =
        p.b.list()
            .await
            .expect("list")
            .into_iter()
            .map(|r| r.id)
            .collect();
    assert_eq!(ids, ["a", "b", "c"]);
}

async fn leave_removes_at_once<F: Fixture>() {
    let Some(p) = F::pair().await else { return };
    p.a.heartbeat(&record("i1", 0), HOUR)
        .await
        .expect("heartbeat i1");
    p.b.heartbeat(&record("i2", 0), HOUR)
        .await
        .expect("heartbeat i2");
    p.a.leave("i1").await.expect("leave");
    assert_eq!(p.b.list().await.expect("list"), vec![record("i2", 0)]);
    p.a.leave("i1").await.expect("leave again");
}

async fn silent_instances_expire<F: Fixture>() {
    let Some(p) = F::pair().await else { return };
    p.a.heartbeat(&record("dies", 0), Duration::from_millis(300))
        .await
        .expect("heartbeat dies");
    p.b.heartbeat(&record("lives", 0), HOUR)
        .await
        .expect("heartbeat lives");
    let b = p.b.clone();
    eventually("the silent instance to drop out", || {
        let b = b.clone();
        async move { b.list().await.expect("list").len() == 1 }
    })
    .await;
    assert_eq!(p.a.list().await.expect("list"), vec![record("lives", 0)]);
}

async fn check_is_ok<F: Fixture>() {
    let Some(p) = F::pair().await else { return };
    p.a.check().await.expect("check");
}
