//! Jobs in distributed mode: an export asked for on one instance is started by the
//! wake-up that reaches idle workers on every instance through Redis (what lets
//! their polling back off, `QUEUE_IDLE_POLL_MAX`), and its status and result read
//! the same from every instance.

use reqwest::StatusCode;
use serde_json::json;

use crate::harness::{Cluster, Services, Spec, call, eventually, send, with_cookie};

#[tokio::test]
async fn an_export_asked_for_on_one_instance_is_read_from_another() {
    let Some(services) = Services::discover().await else {
        return;
    };
    // Idle workers poll once a minute: within the test's patience only the enqueue's
    // wake-up (Redis pub/sub, to every instance) can start the export.
    let spec = Spec::new(2)
        .with("QUEUE_POLL_INTERVAL", 60_000)
        .with("QUEUE_IDLE_POLL_MAX", 60_000);
    let cluster = Cluster::start(&services, spec).await;
    let (_, login) = cluster.user(0, 0).await;

    let (status, body) =
        call(with_cookie(cluster.post(0, "/api/workspaces"), &login).json(&json!({"name": "Ops"})))
            .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let wid = body["id"].as_str().expect("a workspace id").to_owned();
    let (status, body) = call(
        with_cookie(
            cluster.post(1, &format!("/api/workspaces/{wid}/tasks")),
            &login,
        )
        .json(&json!({"title": "Rotate the keys, then tell \"ops\""})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    let (status, body) = call(
        with_cookie(
            cluster.post(0, &format!("/api/workspaces/{wid}/exports")),
            &login,
        )
        .json(&json!({})),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let job = body["job_id"].as_str().expect("a job id").to_owned();

    let finished = eventually("the export to succeed", || async {
        let (status, body) = call(with_cookie(
            cluster.get(1, &format!("/api/jobs/{job}")),
            &login,
        ))
        .await;
        assert_eq!(status, StatusCode::OK, "job on instance 2: {body}");
        assert_ne!(body["status"], "dead", "{body}");
        (body["status"] == "succeeded").then_some(body)
    })
    .await;
    assert_eq!(finished["attempts"], 1);

    for i in [1, 0] {
        let r = send(with_cookie(
            cluster.get(i, &format!("/api/jobs/{job}/result")),
            &login,
        ))
        .await;
        assert_eq!(r.status(), StatusCode::OK, "result on instance {}", i + 1);
        let csv = r.text().await.expect("the CSV");
        assert!(
            csv.contains(r#""Rotate the keys, then tell ""ops""""#),
            "instance {} served: {csv}",
            i + 1
        );
    }
}
