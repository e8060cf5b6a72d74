//! The user cache: a change on one instance is visible on the others at once, even
//! where the old value was cached.

use reqwest::StatusCode;
use serde_json::json;

use crate::harness::{Cluster, Services, Spec, call, with_cookie};

#[tokio::test]
async fn a_display_name_changed_on_one_instance_shows_at_once_on_the_others() {
    let Some(services) = Services::discover().await else {
        return;
    };
    let cluster = Cluster::start(&services, Spec::new(3)).await;
    let (_, login) = cluster.user(0, 0).await;

    // Every instance has the user cached with the old name.
    for i in 0..3 {
        let (status, body) = call(with_cookie(cluster.get(i, "/api/me"), &login)).await;
        assert_eq!(status, StatusCode::OK, "instance {}: {body}", i + 1);
        assert_eq!(body["display_name"], "Ada", "instance {}", i + 1);
    }

    let (status, body) = call(
        with_cookie(cluster.patch(1, "/api/me"), &login).json(&json!({"display_name": "Grace"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "PATCH on instance 2: {body}");
    assert_eq!(body["display_name"], "Grace");

    for i in [0, 2, 1] {
        let (status, body) = call(with_cookie(cluster.get(i, "/api/me"), &login)).await;
        assert_eq!(status, StatusCode::OK, "instance {}: {body}", i + 1);
        assert_eq!(
            body["display_name"],
            "Grace",
            "instance {} serves a stale user",
            i + 1
        );
    }
}
