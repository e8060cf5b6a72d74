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
            let handle = match builder.install_recorder() {
                Ok(handle) => handle,
                // Another recorder is installed (embedding application): render ours
                // unattached rather than fail.
                Err(_) => PrometheusBuilder::new().build_recorder().handle(),
            };
            describe();
            handle
        })
        .clone()
}

/// The standard `process_*` metrics (CPU seconds, resident and virtual memory, open
/// and maximum file descriptors, threads, start time), read at scrape time.
fn process_collector() -> &'static metrics_process::Collector {
    static COLLECTOR: std::sync::OnceLock<metrics_process::Collector> = std::sync::OnceLock::new();
    COLLECTOR.get_or_init(metrics_process::Collector::default)
}

/// Every metric Shoal records, with its `# HELP` text: one list, so that a metric
/// without a description is easy to spot (a test reads `/metrics` for it).
const DESCRIPTIONS: &[(Kind, &str, &str)] = &[
    (
        Kind::Counter,
        "shoal_http_requests_total",
        "HTTP requests answered, by method, matched route and status",
    ),
    (
        Kind::Histogram,
        "shoal_http_request_duration_seconds",
        "Time to answer an HTTP request, by method and matched route",
    ),
    (
        Kind::Gauge,
        "shoal_http_connections",
        "Open HTTP connections",
    ),
    (
        Kind::Gauge,
        "shoal_http_requests_in_flight",
        "HTTP requests being answered now",
    ),
    (
        Kind::Gauge,
        "shoal_websocket_connections",
        "Open Socket.IO connections",
    ),
    (
        Kind::Counter,
        "shoal_cache_requests_total",
        "Cache look-ups, by layer (memory or redis) and result (hit or miss)",
    ),
    (
        Kind::Counter,
        "shoal_rate_limited_total",
        "Requests refused by a rate limit, by scope",
    ),
    (
        Kind::Counter,
        "shoal_rate_limiter_errors_total",
        "Rate-limit checks that failed (the request was let through)",
    ),
    (
        Kind::Counter,
        "shoal_rate_limiter_fallback_total",
        "Rate-limit checks made in-process because the shared limiter (Redis) did not answer",
    ),
    (
        Kind::Counter,
        "shoal_session_redis_write_failures_total",
        "Session writes that reached the database but not Redis (repaired later)",
    ),
    (
        Kind::Counter,
        "shoal_session_restored_total",
        "Sessions Redis had lost, put back from the database",
    ),
    (
        Kind::Counter,
        "shoal_password_busy_total",
        "Logins and registrations answered 503 because every password-hashing slot stayed busy",
    ),
    (
        Kind::Counter,
        "shoal_realtime_connections_refused_total",
        "Socket.IO handshakes refused by a connection cap, by reason",
    ),
    (
        Kind::Counter,
        "shoal_realtime_connections_dropped_total",
        "Socket.IO connections closed for ignoring their budget, by reason",
    ),
    (
        Kind::Counter,
        "shoal_realtime_leases_ended_total",
        "Socket.IO connections closed because their access token or session ran out, by reason",
    ),
    (
        Kind::Counter,
        "shoal_redis_unanswered_total",
        "Redis commands that got no answer (timed out after 2 s, or no connection)",
    ),
    (
        Kind::Counter,
        "shoal_redis_rejected_total",
        "Redis commands failed at once because Redis stopped answering (breaker open)",
    ),
    (
        Kind::Counter,
        "shoal_redis_breaker_opened_total",
        "Times commands to Redis were paused after two unanswered in a row",
    ),
    (
        Kind::Gauge,
        "shoal_redis_breaker_open",
        "1 while Redis commands are paused because Redis stopped answering, else 0",
    ),
    (
        Kind::Counter,
        "shoal_degraded_seconds_total",
        "Seconds this instance served while a shared dependency (Redis) was down",
    ),
    (
        Kind::Gauge,
        "shoal_db_pool_connections",
        "Database pool connections, by state (in_use or idle)",
    ),
    (
        Kind::Gauge,
        "shoal_db_pool_max_connections",
        "Upper bound of the database pool (DB_POOL_MAX)",
    ),
    (
        Kind::Gauge,
        "shoal_dependency_check_seconds",
        "Duration of the last readiness check of a dependency",
    ),
    (
        Kind::Histogram,
        "shoal_realtime_event_duration_seconds",
        "Time from a Socket.IO event reaching its handler to its ack, by event",
    ),
    (
        Kind::Counter,
        "shoal_realtime_rate_limited_total",
        "Socket.IO events refused by a socket's budget",
    ),
    (
        Kind::Counter,
        "shoal_realtime_publish_failures_total",
        "Realtime events that could not be published to the broker",
    ),
    (
        Kind::Histogram,
        "shoal_realtime_publish_duration_seconds",
        "Time to publish one realtime event to the broker",
    ),
    (
        Kind::Counter,
        "shoal_realtime_events_decoded_total",
        "Realtime events this instance received from the broker and decoded (only those of rooms it has sockets in)",
    ),
    (
        Kind::Gauge,
        "shoal_realtime_channels",
        "Room channels this instance is subscribed to",
    ),
    (
        Kind::Counter,
        "shoal_realtime_channel_changes_total",
        "Room channels subscribed (change=subscribe) and unsubscribed (change=unsubscribe)",
    ),
    (
        Kind::Histogram,
        "shoal_realtime_subscribe_duration_seconds",
        "Time to subscribe to a room channel, confirmation by the broker included",
    ),
    (
        Kind::Histogram,
        "shoal_chat_messages_per_commit",
        "Chat messages written by one commit (group commit)",
    ),
    (
        Kind::Histogram,
        "shoal_chat_commit_duration_seconds",
        "A chat message's wait for its commit, queue included",
    ),
    (
        Kind::Gauge,
        "shoal_chat_messages_waiting",
        "Chat messages queued for a commit or being written",
    ),
    (
        Kind::Gauge,
        "shoal_queue_jobs",
        "Jobs in the queue (the whole cluster's), by state",
    ),
    (
        Kind::Gauge,
        "shoal_queue_jobs_by_type",
        "Jobs in the queue, by state and type",
    ),
    (
        Kind::Counter,
        "shoal_jobs_finished_total",
        "Jobs finished on this instance, by type and status",
    ),
    (
        Kind::Histogram,
        "shoal_job_start_delay_seconds",
        "Time from a job being due to a worker starting it, by type",
    ),
    (
        Kind::Histogram,
        "shoal_job_duration_seconds",
        "Time a job's handler ran, by type and outcome (ok or error)",
    ),
    (
        Kind::Gauge,
        "shoal_process_resident_memory_bytes",
        "Resident memory of this process (as process_resident_memory_bytes)",
    ),
    (
        Kind::Gauge,
        "shoal_uptime_seconds",
        "Seconds since this instance started",
    ),
    (
        Kind::Gauge,
        "shoal_instance_info",
        "This instance: its id, version and mode, as labels (always 1)",
    ),
];

#[derive(Clone, Copy)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// Registers the `# HELP` text of every metric, Shoal's and the process collector's.
fn describe() {
    for (kind, name, help) in DESCRIPTIONS {
        match kind {
            Kind::Counter => metrics::describe_counter!(*name, *help),
            Kind::Gauge => metrics::describe_gauge!(*name, *help),
            Kind::Histogram => metrics::describe_histogram!(*name, *help),
        }
    }
    process_collector().describe();
}

/// See the module doc.
pub async fn render(State(state): State<AppState>) -> Response {
    process_collector().collect();
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The metric names (`shoal_…`, `process_…`) an expression refers to.
    fn metric_names(expr: &str) -> Vec<String> {
        let mut names = Vec::new();
        let mut word = String::new();
        for c in expr.chars().chain([' ']) {
            if c.is_ascii_alphanumeric() || c == '_' {
                word.push(c);
            } else {
                if word.starts_with("shoal_") || word.starts_with("process_") {
                    names.push(std::mem::take(&mut word));
                }
                word.clear();
            }
        }
        names
    }

    #[test]
    fn the_grafana_dashboard_uses_only_metrics_shoal_ships() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/grafana/shoal.json");
        let text = std::fs::read_to_string(path).expect("read deploy/grafana/shoal.json");
        let dashboard: serde_json::Value = serde_json::from_str(&text).expect("JSON");
        let process = [
            "process_cpu_seconds_total",
            "process_resident_memory_bytes",
            "process_virtual_memory_bytes",
            "process_open_fds",
            "process_max_fds",
            "process_threads",
            "process_start_time_seconds",
        ];
        let mut checked = 0;
        for panel in dashboard["panels"].as_array().expect("panels") {
            for target in panel["targets"].as_array().expect("targets") {
                let expr = target["expr"].as_str().expect("expr");
                for name in metric_names(expr) {
                    let histogram = DESCRIPTIONS
                        .iter()
                        .filter(|(kind, ..)| matches!(kind, Kind::Histogram))
                        .any(|(_, base, _)| {
                            ["_bucket", "_sum", "_count"]
                                .iter()
                                .any(|s| name == format!("{base}{s}"))
                        });
                    let known = DESCRIPTIONS.iter().any(|(_, n, _)| *n == name)
                        || process.contains(&name.as_str())
                        || histogram;
                    assert!(
                        known,
                        "{} uses {name}, which Shoal does not ship",
                        panel["title"]
                    );
                    checked += 1;
                }
            }
        }
        assert!(
            checked >= 14,
            "the dashboard's expressions were read ({checked})"
        );
    }

    #[test]
    fn names_are_read_out_of_promql() {
        assert_eq!(
            metric_names("rate(shoal_x_total{a=\"b\"}[5m]) / process_open_fds"),
            ["shoal_x_total", "process_open_fds"]
        );
    }
}
