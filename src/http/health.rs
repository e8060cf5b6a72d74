//! Liveness, readiness, health and the cluster view (docs/operations.md).
//!
//! `/health/live` only proves the process answers. `/health/ready` is 200 only when
//! migrations are applied, every dependency answers within `HEALTH_CHECK_TIMEOUT`
//! and the instance is not draining; otherwise 503 with the reasons. `/health` adds
//! per-check `response_time_ms`, memory and connection counts.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::time::Instant;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::ApiResult;
use super::json::Json;
use crate::backend_error::BackendError;
use crate::registry::InstanceRecord;
use crate::state::AppState;

/// Routes of this module (aliases included).
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(live))
        .routes(routes!(ready))
        .routes(routes!(api_ready))
        .routes(routes!(health))
        .routes(routes!(api_health))
        .routes(routes!(backend_health))
        .routes(routes!(cluster))
}

/// Liveness.
#[derive(Debug, Serialize, ToSchema)]
pub struct Live {
    /// Always `ok`.
    status: &'static str,
    /// This instance.
    instance: String,
}

#[utoipa::path(get, path = "/health/live", tag = "operations", responses((status = 200, body = Live)))]
async fn live(State(state): State<AppState>) -> Json<Live> {
    Json(Live {
        status: "ok",
        instance: state.instance.id.clone(),
    })
}

/// One dependency check.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Check {
    /// `ok`, `down`, or `disabled` (not used in this mode).
    status: &'static str,
    /// How long the check took.
    response_time_ms: f64,
    /// Why it is down.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

impl Check {
    fn disabled() -> Self {
        Self {
            status: "disabled",
            response_time_ms: 0.0,
            error: None,
        }
    }

    fn is_down(&self) -> bool {
        self.status == "down"
    }
}

async fn timed<F: Future<Output = Result<(), BackendError>>>(
    state: &AppState,
    dependency: &'static str,
    f: F,
) -> Check {
    let started = Instant::now();
    let result = tokio::time::timeout(state.config.server.health_check_timeout, f).await;
    let elapsed = started.elapsed();
    metrics::gauge!("shoal_dependency_check_seconds", "dependency" => dependency)
        .set(elapsed.as_secs_f64());
    let response_time_ms = (elapsed.as_secs_f64() * 1_000_000.0).round() / 1_000.0;
    match result {
        Ok(Ok(())) => Check {
            status: "ok",
            response_time_ms,
            error: None,
        },
        Ok(Err(e)) => Check {
            status: "down",
            response_time_ms,
            error: Some(e.to_string()),
        },
        Err(_) => Check {
            status: "down",
            response_time_ms,
            error: Some(format!(
                "no answer within {} ms",
                state.config.server.health_check_timeout.as_millis()
            )),
        },
    }
}

/// The dependency checks, run concurrently.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Checks {
    /// SQL database.
    database: Check,
    /// Redis (every Redis-backed capability, pub/sub subscription included).
    redis: Check,
    /// Background job queue.
    queue: Check,
}

async fn run_checks(state: &AppState) -> Checks {
    let database = timed(state, "database", async {
        state
            .db
            .ping()
            .await
            .map_err(|e| BackendError::unavailable("database", e))
    });
    let redis = async {
        if state.redis.is_none() {
            return Check::disabled();
        }
        timed(state, "redis", async {
            let (a, b, c, d, e, f, g) = tokio::join!(
                state.sessions.check(),
                state.users.check(),
                state.rate_limiter.check_ready(),
                state.pubsub.check(),
                state.presence.check(),
                state.registry.check(),
                state.opt_out.check(),
            );
            a.and(b).and(c).and(d).and(e).and(f).and(g)
        })
        .await
    };
    // The queue lives in the database: its check is that the claim index answers
    // (a missing `jobs` table, a locked one), not the database ping again.
    let queue = timed(state, "queue", async {
        crate::db::jobs::count_in_state(state.db.pool(), "running")
            .await
            .map(|_| ())
            .map_err(|e| BackendError::unavailable("queue", e))
    });
    let (database, redis, queue) = tokio::join!(database, redis, queue);
    Checks {
        database,
        redis,
        queue,
    }
}

/// Readiness.
///
/// The rule (docs/operations.md): an instance is unready when it cannot serve and
/// another instance could — it is draining, or it cannot reach the database every
/// write goes to. A Redis outage is not such a case: every instance shares that Redis,
/// so taking them all out of the load balancer would stop the service, while each can
/// serve degraded (sessions from the database, in-process rate limits, realtime
/// delivery on this instance only). So Redis down leaves an instance ready, with
/// `degraded: ["redis_down"]`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Ready {
    /// `ready` or `not_ready`.
    status: &'static str,
    /// Why not ready (`draining`, `not_migrated` with `database_unreachable`,
    /// `database_full` or `migrations_pending` while start-up waits for the
    /// database, `database_down`).
    reasons: Vec<String>,
    /// What does not work fully while the instance still serves (`redis_down`).
    degraded: Vec<String>,
    /// This instance.
    instance: String,
    /// The dependency checks.
    checks: Checks,
}

async fn readiness(state: AppState) -> Response {
    let mut reasons = Vec::new();
    if state.lifecycle.is_draining() {
        reasons.push("draining".to_owned());
    }
    if !state.lifecycle.is_migrated() {
        reasons.push("not_migrated".to_owned());
        if let Some(problem) = state.lifecycle.database_problem() {
            reasons.push(problem.to_owned());
        }
    }
    let checks = run_checks(&state).await;
    if checks.database.is_down() {
        reasons.push("database_down".to_owned());
    }
    let mut degraded = Vec::new();
    if checks.redis.is_down() {
        degraded.push("redis_down".to_owned());
    }
    let status = if reasons.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = Ready {
        status: if reasons.is_empty() {
            "ready"
        } else {
            "not_ready"
        },
        reasons,
        degraded,
        instance: state.instance.id.clone(),
        checks,
    };
    (status, Json(body)).into_response()
}

#[utoipa::path(get, path = "/health/ready", tag = "operations",
    responses((status = 200, body = Ready), (status = 503, body = Ready)))]
async fn ready(State(state): State<AppState>) -> Response {
    readiness(state).await
}

#[utoipa::path(get, path = "/api/ready", tag = "operations",
    responses((status = 200, body = Ready), (status = 503, body = Ready)))]
async fn api_ready(State(state): State<AppState>) -> Response {
    readiness(state).await
}

/// Memory of this process.
#[derive(Debug, Serialize, ToSchema)]
pub struct MemoryCheck {
    /// Always `ok` (reported, not judged).
    status: &'static str,
    /// Resident set size.
    rss_bytes: u64,
    /// Time to read it.
    response_time_ms: f64,
}

/// Full health.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `healthy`, `degraded` (draining, Redis or the queue down: still serving) or
    /// `unhealthy` (the database is down).
    status: &'static str,
    /// Why not healthy (`draining`, `redis_down`, `queue_down`, `database_down`).
    reasons: Vec<String>,
    /// This instance.
    instance: String,
    /// Shoal version.
    version: &'static str,
    /// Seconds since start.
    uptime_secs: u64,
    /// Dependencies.
    checks: HealthChecks,
    /// Open connections and requests.
    connections: Connections,
}

/// Health checks including memory.
#[derive(Debug, Serialize, ToSchema)]
pub struct HealthChecks {
    /// SQL database.
    database: Check,
    /// Redis.
    redis: Check,
    /// Job queue.
    queue: Check,
    /// Process memory.
    memory: MemoryCheck,
}

/// Connection counts.
#[derive(Debug, Serialize, ToSchema)]
pub struct Connections {
    /// Open HTTP connections.
    http: u64,
    /// Open WebSocket (Socket.IO) connections.
    websocket: u64,
    /// Requests in progress (this one included).
    in_flight_requests: u64,
}

/// Resident memory from `/proc/self/statm` (0 where there is no procfs).
pub fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|p| p.parse::<u64>().ok())
        })
        .map(|pages| pages * 4096)
        .unwrap_or(0)
}

async fn full_health(state: AppState) -> Response {
    let checks = run_checks(&state).await;
    let started = Instant::now();
    let rss = rss_bytes();
    let memory = MemoryCheck {
        status: "ok",
        rss_bytes: rss,
        response_time_ms: (started.elapsed().as_secs_f64() * 1_000_000.0).round() / 1_000.0,
    };
    let down = checks.database.is_down();
    let mut reasons = Vec::new();
    for (problem, reason) in [
        (down, "database_down"),
        (checks.redis.is_down(), "redis_down"),
        (checks.queue.is_down(), "queue_down"),
        (state.lifecycle.is_draining(), "draining"),
    ] {
        if problem {
            reasons.push(reason.to_owned());
        }
    }
    let status = if down {
        "unhealthy"
    } else if reasons.is_empty() {
        "healthy"
    } else {
        "degraded"
    };
    let body = Health {
        status,
        reasons,
        instance: state.instance.id.clone(),
        version: state.instance.version,
        uptime_secs: state.instance.uptime_secs(),
        checks: HealthChecks {
            database: checks.database,
            redis: checks.redis,
            queue: checks.queue,
            memory,
        },
        connections: Connections {
            http: state.lifecycle.http_connections.load(Ordering::Relaxed),
            websocket: state.lifecycle.ws_connections.load(Ordering::Relaxed),
            in_flight_requests: state.lifecycle.in_flight.load(Ordering::Relaxed),
        },
    };
    let code = if down {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    (code, Json(body)).into_response()
}

#[utoipa::path(get, path = "/health", tag = "operations",
    responses((status = 200, body = Health), (status = 503, body = Health)))]
async fn health(State(state): State<AppState>) -> Response {
    full_health(state).await
}

#[utoipa::path(get, path = "/api/health", tag = "operations",
    responses((status = 200, body = Health), (status = 503, body = Health)))]
async fn api_health(State(state): State<AppState>) -> Response {
    full_health(state).await
}

#[utoipa::path(get, path = "/health/backend", tag = "operations",
    responses((status = 200, body = Health), (status = 503, body = Health)))]
async fn backend_health(State(state): State<AppState>) -> Response {
    full_health(state).await
}

/// The live instances.
#[derive(Debug, Serialize, ToSchema)]
pub struct Cluster {
    /// The instance that answered.
    instance: String,
    /// How many are live.
    count: usize,
    /// Live instances from the registry, sorted by id.
    instances: Vec<InstanceRecord>,
}

#[utoipa::path(get, path = "/health/cluster", tag = "operations",
    responses((status = 200, body = Cluster), (status = 503, description = "registry unavailable")))]
async fn cluster(State(state): State<AppState>) -> ApiResult<Json<Cluster>> {
    let instances = state.registry.list().await?;
    Ok(Json(Cluster {
        instance: state.instance.id.clone(),
        count: instances.len(),
        instances,
    }))
}
