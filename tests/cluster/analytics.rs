//! The analytics opt-out is one list for all instances.

use reqwest::StatusCode;
use serde_json::json;

use crate::harness::{Cluster, Services, Spec, call, with_cookie};

#[tokio::test]
async fn an_opt_out_on_one_instance_holds_on_every_instance() {
    let Some(services) = Services::discover().await else {
        return;
    };
    let cluster = Cluster::start(&services, Spec::new(3)).await;
    let (_, login) = cluster.user(0, 0).await;
    let event = json!({"name": "task_board_opened", "properties": {"tasks": 3}});

    let (status, body) = call(with_cookie(cluster.get(2, "/api/analytics/status"), &login)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["opted_out"], false);
    let (status, body) =
        call(with_cookie(cluster.post(1, "/api/analytics/events"), &login).json(&event)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["recorded"], true, "before the opt-out events are kept");

    let (status, body) = call(with_cookie(
        cluster.post(0, "/api/analytics/opt-out"),
        &login,
    ))
    .await;
    assert_eq!(status, StatusCode::OK, "opt-out on instance 1: {body}");
    assert_eq!(body["opted_out"], true);

    let (status, body) = call(with_cookie(cluster.get(2, "/api/analytics/status"), &login)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["opted_out"], true,
        "instance 3 does not know of the opt-out"
    );

    let (status, body) =
        call(with_cookie(cluster.post(1, "/api/analytics/events"), &login).json(&event)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(
        body["recorded"], false,
        "instance 2 kept an opted-out user's event"
    );
}
