//! `GET /metrics`: Prometheus text. Counters and histograms are recorded where things
//! happen (request middleware, cache, rate limiter); gauges that are cheap to read
//! (pool, connections, memory) are set here, at scrape time, instead of on every
//! request.

use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::state::AppState;

/// The process-wide Prometheus recorder. The `metrics` facade is global by design
/// (one recorder per process), so it is installed once; several apps in one test
/// process share it.
pub fn recorder() -> PrometheusHandle {
    static HANDLE: std::sync::OnceLock<PrometheusHandle> = std::sync::OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    metrics_exporter_prometheus::Matcher::Suffix("_seconds".into()),
                    &[
                        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                        5.0, 10.0,
                    ],
                )
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        metrics_exporter_prometheus::Matcher::Full(
                            crate::db::message_writer::BATCH_METRIC.into(),
                        ),
                        &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0],
                    )
                })
                .unwrap_or_else(|_| PrometheusBuilder::new());
            match builder.install_recorder() {
                Ok(handle) => handle,
                // Another recorder is installed (embedding application): render ours
                // unattached rather than fail.
                Err(_) => PrometheusBuilder::new().build_recorder().handle(),
            }
        })
        .clone()
}

/// See the module doc.
pub async fn render(State(state): State<AppState>) -> Response {
    let (in_use, idle) = state.db.pool_usage();
    metrics::gauge!("shoal_db_pool_connections", "state" => "in_use").set(f64::from(in_use));
    metrics::gauge!("shoal_db_pool_connections", "state" => "idle").set(f64::from(idle));
    metrics::gauge!("shoal_db_pool_max_connections").set(f64::from(state.config.database.pool_max));
    let lc = &state.lifecycle;
    metrics::gauge!("shoal_http_connections")
        .set(lc.http_connections.load(Ordering::Relaxed) as f64);
    metrics::gauge!("shoal_http_requests_in_flight")
        .set(lc.in_flight.load(Ordering::Relaxed) as f64);
    metrics::gauge!("shoal_chat_messages_waiting").set(state.message_writer.waiting() as f64);
    metrics::gauge!("shoal_websocket_connections")
        .set(lc.ws_connections.load(Ordering::Relaxed) as f64);
    metrics::gauge!("shoal_process_resident_memory_bytes").set(super::health::rss_bytes() as f64);
    metrics::gauge!("shoal_uptime_seconds").set(state.instance.uptime_secs() as f64);
    metrics::gauge!(
        "shoal_instance_info",
        "instance_id" => state.instance.id.clone(),
        "version" => state.instance.version,
        "mode" => if state.config.is_distributed() { "distributed" } else { "embedded" },
    )
    .set(1.0);
    queue_depth(&state).await;
    let mut response = state.metrics.render().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

/// `shoal_queue_jobs{state}` and `shoal_queue_jobs_by_type{state,type}`, read from
/// the database at scrape time (the queue is shared: every instance reports the
/// cluster's depth). A (state, type) pair seen before and absent now is set to 0,
/// not left at its last value.
async fn queue_depth(state: &AppState) {
    static SEEN: std::sync::Mutex<Vec<(String, String)>> = std::sync::Mutex::new(Vec::new());
    let stats = match super::jobs::depth(state).await {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!(error = %e, "queue depth not read");
            return;
        }
    };
    for (status, n) in &stats.by_state {
        metrics::gauge!("shoal_queue_jobs", "state" => status.clone()).set(*n as f64);
    }
    let now: Vec<(String, String)> = stats
        .by_type
        .iter()
        .map(|t| (t.status.clone(), t.r#type.clone()))
        .collect();
    let gone: Vec<(String, String)> = {
        let mut seen = SEEN.lock().unwrap_or_else(|p| p.into_inner());
        let gone = seen.iter().filter(|p| !now.contains(p)).cloned().collect();
        *seen = now;
        gone
    };
    for (status, kind) in gone {
        metrics::gauge!("shoal_queue_jobs_by_type", "state" => status, "type" => kind).set(0.0);
    }
    for t in stats.by_type {
        metrics::gauge!("shoal_queue_jobs_by_type", "state" => t.status, "type" => t.r#type)
            .set(t.count as f64);
    }
}
