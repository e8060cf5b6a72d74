//! `/health/cluster` lists every live instance with its last heartbeat, on every
//! instance, and forgets an instance that died once its entry expires
//! (`REGISTRY_HEARTBEAT=1`: expiry after 3 s).

use std::collections::BTreeSet;

use reqwest::StatusCode;
use serde_json::Value;

use crate::harness::{Cluster, Services, Spec, call, eventually};

/// The ids `/health/cluster` on instance `i` lists, with the whole body.
async fn listed(cluster: &Cluster, i: usize) -> (BTreeSet<String>, Value) {
    let (status, body) = call(cluster.get(i, "/health/cluster")).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "/health/cluster on instance {}: {body}",
        i + 1
    );
    let ids = body["instances"]
        .as_array()
        .expect("an instances array")
        .iter()
        .map(|r| r["id"].as_str().expect("an instance id").to_owned())
        .collect();
    (ids, body)
}

#[tokio::test]
async fn every_instance_lists_the_cluster_and_a_dead_instance_drops_out() {
    let Some(services) = Services::discover().await else {
        return;
    };
    let mut cluster = Cluster::start(&services, Spec::new(3)).await;
    let all: BTreeSet<String> = cluster.nodes.iter().map(|n| n.id.clone()).collect();

    for i in 0..3 {
        let (ids, body) = listed(&cluster, i).await;
        assert_eq!(ids, all, "instance {} lists: {body}", i + 1);
        assert_eq!(body["count"], 3);
        for record in body["instances"].as_array().expect("instances") {
            let beat = record["last_heartbeat"].as_str().unwrap_or_default();
            assert!(
                beat.len() >= 20 && beat.contains('T'),
                "an RFC 3339 last_heartbeat: {record}"
            );
        }
    }

    let dead = cluster.node(2).id.clone();
    cluster.nodes[2].kill();
    for i in [0, 1] {
        let ids = eventually(
            &format!("{dead} to leave /health/cluster on instance {}", i + 1),
            || async {
                let (ids, _) = listed(&cluster, i).await;
                (!ids.contains(&dead)).then_some(ids)
            },
        )
        .await;
        let alive: BTreeSet<String> =
            [cluster.node(0).id.clone(), cluster.node(1).id.clone()].into();
        assert_eq!(ids, alive, "the live instances stay listed");
    }
}
