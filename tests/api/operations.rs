//! Health, readiness, the cluster view, metrics and API docs (docs/operations.md, docs/api.md).

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use shoal::app::Stopped;

use crate::helpers::{PATIENCE, TestApp, header, metric_value, spawn_app};

async fn get_json(app: &TestApp, path: &str) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    let response = app.client.get(app.url(path)).send().await.expect("GET");
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.json().await.expect("JSON body");
    (status, headers, body)
}

#[tokio::test(flavor = "multi_thread")]
async fn liveness_is_200() {
    let app = spawn_app().await;

    let (status, headers, body) = get_json(&app, "/health/live").await;

    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "ok");
    assert_eq!(body["instance"], header(&headers, "x-instance-id"));
}

#[tokio::test(flavor = "multi_thread")]
async fn readiness_is_200_ready() {
    let app = spawn_app().await;

    for path in ["/health/ready", "/api/ready"] {
        let (status, _, body) = get_json(&app, path).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert_eq!(body["status"], "ready", "{path}");
        assert_eq!(body["reasons"], json!([]), "{path}");
        assert_eq!(body["checks"]["database"]["status"], "ok", "{path}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn health_reports_status_version_uptime_and_checks() {
    let app = spawn_app().await;

    for path in ["/health", "/api/health", "/health/backend"] {
        let (status, headers, body) = get_json(&app, path).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert_eq!(body["status"], "healthy", "{path}: {body}");
        assert_eq!(body["version"], env!("CARGO_PKG_VERSION"), "{path}");
        assert_eq!(
            body["instance"],
            header(&headers, "x-instance-id"),
            "{path}"
        );
        assert!(body["uptime_secs"].is_u64(), "{path}: {body}");
        let database = &body["checks"]["database"];
        assert_eq!(database["status"], "ok", "{path}");
        assert!(database["response_time_ms"].is_number(), "{path}: {body}");
        assert_eq!(
            body["checks"]["redis"]["status"], "disabled",
            "embedded mode"
        );
        assert!(
            body["checks"]["memory"]["response_time_ms"].is_number(),
            "{path}: {body}"
        );
        assert!(
            body["checks"]["memory"]["rss_bytes"].is_u64(),
            "{path}: {body}"
        );
        let connections = &body["connections"];
        assert!(
            connections["http"].as_u64().is_some_and(|n| n >= 1),
            "{path}: {body}"
        );
        assert!(
            connections["in_flight_requests"]
                .as_u64()
                .is_some_and(|n| n >= 1),
            "this request is in flight: {body}"
        );
        assert!(connections["websocket"].is_u64(), "{path}: {body}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cluster_view_lists_this_instance() {
    let app = spawn_app().await;

    // The first heartbeat is sent at start; if it races this request, poll (bounded).
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let (headers, body) = loop {
        let (status, headers, body) = get_json(&app, "/health/cluster").await;
        assert_eq!(status, StatusCode::OK);
        if body["count"].as_u64() == Some(1) {
            break (headers, body);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "instance never registered: {body}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };

    let me = header(&headers, "x-instance-id");
    assert_eq!(body["instance"], me);
    let instances = body["instances"].as_array().expect("instances");
    assert_eq!(instances.len(), 1);
    assert_eq!(instances[0]["id"], me);
    assert_eq!(instances[0]["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(
        instances[0]["address"],
        app.address.trim_start_matches("http://")
    );
    assert_eq!(instances[0]["draining"], false);
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_are_prometheus_text_with_request_and_cache_counters() {
    let app = spawn_app().await;
    let user = app.signed_up_user().await;
    // A cache look-up and a request on a known route before the scrape.
    assert_eq!(app.get(&user, "/api/me").await.status(), StatusCode::OK);
    assert_eq!(
        app.client
            .get(app.url("/health/live"))
            .send()
            .await
            .expect("GET")
            .status(),
        StatusCode::OK
    );

    let response = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .expect("GET /metrics");

    assert_eq!(response.status(), StatusCode::OK);
    assert!(header(response.headers(), "content-type").starts_with("text/plain"));
    assert!(response.headers().contains_key("x-instance-id"));
    let text = response.text().await.expect("metrics text");
    assert!(
        text.contains("# TYPE shoal_http_requests_total counter"),
        "{text}"
    );
    assert!(
        metric_value(
            &text,
            "shoal_http_requests_total",
            &[r#"route="/health/live""#]
        ) >= 1.0,
        "{text}"
    );
    assert!(
        metric_value(
            &text,
            "shoal_http_requests_total",
            &[r#"route="/api/me""#, r#"status="200""#]
        ) >= 1.0,
        "{text}"
    );
    assert!(text.contains("shoal_cache_requests_total{"), "{text}");
    assert!(
        text.contains("shoal_http_request_duration_seconds_bucket"),
        "{text}"
    );
    assert!(text.contains("shoal_instance_info{"), "{text}");
    assert!(text.contains("shoal_db_pool_connections{"), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn me_is_served_from_the_cache_after_a_change() {
    let app = spawn_app().await;
    let user = app.signed_up_user().await;
    let changed = app
        .patch(&user, "/api/me", &json!({ "display_name": "Cached Name" }))
        .await;
    assert_eq!(changed.status(), StatusCode::OK);
    // The first read after the change loads it (a miss) …
    let first: Value = app.get(&user, "/api/me").await.json().await.expect("user");
    assert_eq!(first["display_name"], "Cached Name");
    let hit = [r#"layer="memory""#, r#"result="hit""#];
    // The recorder is process-wide: compare before/after, never absolute numbers.
    let before = metric_value(&app.metrics().await, "shoal_cache_requests_total", &hit);

    // … the second is a hit.
    let second: Value = app.get(&user, "/api/me").await.json().await.expect("user");

    let after = metric_value(&app.metrics().await, "shoal_cache_requests_total", &hit);
    assert_eq!(
        second["display_name"], "Cached Name",
        "the hit is not stale"
    );
    assert!(after > before, "cache hits {before} -> {after}");
}

#[tokio::test(flavor = "multi_thread")]
async fn rate_limited_requests_are_counted() {
    let app = crate::helpers::spawn_app_with(&[("RATE_LIMIT_IP_PER_MIN", "1")]).await;
    let before = metric_value(
        &app.metrics().await,
        "shoal_rate_limited_total",
        &[r#"scope="ip""#],
    );

    for _ in 0..2 {
        app.client
            .get(app.url("/api/workspaces"))
            .send()
            .await
            .expect("GET");
    }

    let after = metric_value(
        &app.metrics().await,
        "shoal_rate_limited_total",
        &[r#"scope="ip""#],
    );
    assert!(after > before, "rate limited {before} -> {after}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_openapi_document_describes_the_api() {
    let app = spawn_app().await;

    let (status, headers, doc) = get_json(&app, "/api/openapi.json").await;

    assert_eq!(status, StatusCode::OK);
    assert!(header(&headers, "content-type").starts_with("application/json"));
    assert!(
        doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")),
        "{}",
        doc["openapi"]
    );
    let paths = doc["paths"].as_object().expect("paths");
    for path in [
        "/api/workspaces/{wid}/tasks",
        "/api/workspaces/{wid}/tasks/{id}",
        "/api/auth/login",
        "/api/me",
        "/api/workspaces/{wid}/messages",
        "/health/ready",
    ] {
        assert!(paths.contains_key(path), "{path} is documented");
    }
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
}

/// `shoal openapi` prints what an instance serves, and docs/openapi.json (the copy a
/// client generator reads) is that document: a change to the API that forgets the
/// copy fails here.
#[tokio::test(flavor = "multi_thread")]
async fn shoal_openapi_prints_the_served_document_and_the_committed_copy_is_current() {
    let out = std::process::Command::new(shoal_testkit::shoal_bin())
        .arg("openapi")
        .output()
        .expect("run shoal openapi");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8(out.stdout).expect("utf-8");
    let printed_doc: Value = serde_json::from_str(&printed).expect("JSON");

    let app = spawn_app().await;
    let (_, _, served) = get_json(&app, "/api/openapi.json").await;
    assert_eq!(printed_doc, served, "shoal openapi prints what is served");

    let committed = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/openapi.json"),
    )
    .expect("docs/openapi.json");
    assert!(
        committed == printed,
        "docs/openapi.json is stale: run `cargo run --release -- openapi > docs/openapi.json`"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_docs_page_is_html() {
    let app = spawn_app().await;

    let response = app
        .client
        .get(app.url("/docs"))
        .send()
        .await
        .expect("GET /docs");

    assert_eq!(response.status(), StatusCode::OK);
    assert!(header(response.headers(), "content-type").starts_with("text/html"));
    assert!(response.headers().contains_key("x-request-id"));
    let html = response.text().await.expect("html");
    assert!(html.to_ascii_lowercase().contains("<html"), "{html}");

    // Offline too: every script and style sheet of the page comes from the instance
    // (a page whose script is on a CDN is blank without internet access).
    let base = app.url("/docs/");
    let html = app
        .client
        .get(&base)
        .send()
        .await
        .expect("GET /docs/")
        .text()
        .await
        .expect("html");
    let assets: Vec<&str> = ["src=\"", "href=\""]
        .iter()
        .flat_map(|attr| html.split(attr).skip(1))
        .filter_map(|rest| rest.split('"').next())
        .collect();
    assert!(!assets.is_empty(), "the page loads its scripts: {html}");
    for asset in assets {
        assert!(
            !asset.contains("//"),
            "/docs loads {asset} from another site"
        );
        let r = app
            .client
            .get(format!("{base}{}", asset.trim_start_matches("./")))
            .send()
            .await
            .expect("an asset of /docs");
        assert_eq!(r.status(), StatusCode::OK, "{asset}");
    }
    let init = app
        .client
        .get(format!("{base}swagger-initializer.js"))
        .send()
        .await
        .expect("swagger-initializer.js")
        .text()
        .await
        .expect("text");
    assert!(
        init.contains("/api/openapi.json"),
        "the page reads this instance's document: {init}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_graceful_stop_drains() {
    let app = spawn_app().await;
    let user = app.signed_up_user().await;
    assert_eq!(app.get(&user, "/api/me").await.status(), StatusCode::OK);

    assert_eq!(app.stop().await, Stopped::Drained);
}

/// Embedders (and zero-to-production style test harnesses) run the server with
/// `tokio::spawn(app.run_until_stopped())`; that needs the future to be `Send`.
#[tokio::test(flavor = "multi_thread")]
async fn run_until_stopped_can_be_spawned_on_tokio() {
    let dir = tempfile::TempDir::new().expect("tempdir");
    let config = shoal::config::Config::from_pairs([
        ("PORT", "0"),
        ("HOST", "127.0.0.1"),
        ("DATA_DIR", dir.path().to_str().expect("utf-8 path")),
    ])
    .expect("valid config");
    let app = shoal::app::App::build(config)
        .await
        .expect("the application builds");
    let token = app.shutdown_token();

    // Compiles only while the future is `Send`: that is the check.
    let server = tokio::spawn(app.run_until_stopped());
    token.cancel();
    let stopped = tokio::time::timeout(PATIENCE, server)
        .await
        .expect("stops")
        .expect("the task does not panic")
        .expect("no error");

    assert_eq!(stopped, Stopped::Drained);
}

#[tokio::test(flavor = "multi_thread")]
async fn every_metric_has_help_and_the_standard_process_metrics_are_there() {
    let app = spawn_app().await;
    let user = app.signed_up_user().await;
    assert_eq!(app.get(&user, "/api/me").await.status(), StatusCode::OK);
    let text = app.metrics().await;
    let typed: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .collect();
    assert!(typed.len() >= 10, "{text}");
    for name in &typed {
        assert!(
            text.lines()
                .any(|l| l.starts_with(&format!("# HELP {name} ")) && l.len() > name.len() + 10),
            "{name} has no # HELP line"
        );
    }
    // CPU seconds may still read 0 in a young process; the others cannot.
    assert!(typed.contains(&"process_cpu_seconds_total"), "{text}");
    for name in [
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_max_fds",
        "process_threads",
    ] {
        assert!(typed.contains(&name), "{name} is exported");
        assert!(metric_value(&text, name, &[]) > 0.0, "{name} has a value");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_made_up_method_does_not_become_a_metric_label() {
    let app = spawn_app().await;
    let brew = reqwest::Method::from_bytes(b"BREW").expect("a method");
    let response = app
        .client
        .request(brew, app.url("/api/me"))
        .send()
        .await
        .expect("BREW /api/me");
    assert!(response.status().is_client_error());
    let text = app.metrics().await;
    assert!(!text.contains("BREW"), "the method is not a label value");
    assert!(
        metric_value(&text, "shoal_http_requests_total", &[r#"method="other""#]) >= 1.0,
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn every_answer_says_nosniff_and_the_html_pages_cannot_be_framed() {
    let app = spawn_app().await;
    for path in ["/api/me", "/health/live", "/dashboard", "/docs"] {
        let r = app.client.get(app.url(path)).send().await.expect("GET");
        assert_eq!(
            header(r.headers(), "x-content-type-options"),
            "nosniff",
            "{path}"
        );
        if path == "/dashboard" || path == "/docs" {
            assert_eq!(header(r.headers(), "x-frame-options"), "DENY", "{path}");
            assert!(
                header(r.headers(), "content-security-policy").contains("frame-ancestors 'none'"),
                "{path}"
            );
        }
    }
}

/// The workspace page at `/`: HTML that loads only files of this instance, each with
/// its type, and a policy that keeps it from being framed or loading anything else.
#[tokio::test(flavor = "multi_thread")]
async fn the_workspace_page_and_its_files_are_served_by_the_instance() {
    let app = spawn_app().await;
    let response = app.client.get(app.url("/")).send().await.expect("GET /");
    assert_eq!(response.status(), StatusCode::OK);
    assert!(header(response.headers(), "content-type").starts_with("text/html"));
    let csp = header(response.headers(), "content-security-policy");
    assert!(
        csp.contains("default-src 'self'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    let html = response.text().await.expect("html");
    let assets: Vec<&str> = ["src=\"", "href=\""]
        .iter()
        .flat_map(|attr| html.split(attr).skip(1))
        .filter_map(|rest| rest.split('"').next())
        .collect();
    assert_eq!(assets.len(), 3, "icon, style sheet and script: {html}");
    for asset in assets {
        assert!(
            asset.starts_with('/') && !asset.starts_with("//"),
            "{asset}"
        );
        let r = app
            .client
            .get(app.url(asset))
            .send()
            .await
            .expect("a file of the page");
        assert_eq!(r.status(), StatusCode::OK, "{asset}");
        let kind = header(r.headers(), "content-type");
        let expected = match asset.rsplit('.').next() {
            Some("js") => "text/javascript",
            Some("css") => "text/css",
            _ => "image/svg+xml",
        };
        assert!(kind.starts_with(expected), "{asset}: {kind}");
        let body = r.text().await.expect("body");
        assert!(!body.is_empty(), "{asset} is empty");
    }
}
