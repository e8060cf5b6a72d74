//! The lifecycle coordinator: start-up in order (config → DB + migrations → Redis →
//! backends → listener → ready) and shut-down in reverse (docs/architecture.md, docs/operations.md).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context;
use axum::ServiceExt as _;
use axum::middleware::{from_fn_with_state, map_response_with_state};
use axum::response::IntoResponse;
use socketioxide::layer::SocketIoLayer;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::auth::password::Passwords;
use crate::auth::sessions::Sessions;
use crate::auth::tokens::TokenKeys;
use crate::backends::Backends;
use crate::config::{Config, DatabaseKind};
use crate::db::Db;
use crate::db::message_writer::MessageWriter;
use crate::instance::Instance;
use crate::listener::{PeerAddr, TrackedListener};
use crate::realtime::{self, Realtime};
use crate::registry::InstanceRecord;
use crate::state::{AppParts, AppState, Lifecycle};
use crate::user_directory::UserDirectory;
use crate::{http, secrets};

/// A built application, listening but not yet serving.
pub struct App {
    state: AppState,
    listener: TrackedListener,
    /// Closes the listener at the start of a shutdown.
    close_listener: CancellationToken,
    addr: SocketAddr,
    shutdown: CancellationToken,
    memory_limiter: std::sync::Arc<crate::rate_limit::memory::MemoryRateLimiter>,
    sql_sessions: Option<std::sync::Arc<crate::session::sql::SqlSessionStore>>,
    realtime: Realtime,
    realtime_layer: SocketIoLayer,
}

/// How the process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// Every in-flight request finished within `SHUTDOWN_TIMEOUT`.
    Drained,
    /// The timeout passed first; the remaining connections were dropped.
    TimedOut,
}

impl App {
    /// Connects everything and binds the listener. Migrations run here, under a
    /// database lock on PostgreSQL, so instances starting together apply them once.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        // First: backends register their metric handles against the recorder.
        let metrics = http::metrics::recorder();
        let instance = Instance::new(config.server.instance_id.as_deref());
        let secrets = match &config.auth.secrets {
            Some(s) => s.clone(),
            None => secrets::load_or_generate(&config.server.data_dir)?,
        };
        let db = Db::lazy(&config)?;
        // One attempt here; a PostgreSQL that is unreachable or full is waited for in
        // the background (`bring_up_database`) while the instance listens, live and
        // not ready, instead of exiting: an orchestrator wants a pod that waits, not
        // one that crash-loops. SQLite is a local file: nothing to wait for.
        let database_problem = match db.bring_up().await {
            Ok(()) => None,
            Err(e)
                if config.database.kind == DatabaseKind::Postgres
                    && config.database.connect_retries != Some(0) =>
            {
                let reason = crate::db::unavailable_reason(e.as_ref());
                tracing::warn!(error = %format!("{e:#}"), reason, "database not ready at start-up; serving health checks while retrying");
                Some(reason)
            }
            Err(e) => {
                return Err(e.context("cannot connect to the database after 1 attempts"));
            }
        };
        let backends = Backends::connect(&config, &db).await?;
        // One password hash at a time per core (src/auth/password.rs).
        let cores = std::thread::available_parallelism().map_or(2, std::num::NonZero::get);
        let passwords = Passwords::new(cores).await.context("password hasher")?;

        let tcp = crate::listener::bind(
            config.server.host,
            config.server.port,
            config.server.reuse_port,
        )
        .with_context(|| {
            format!(
                "cannot listen on {}:{}",
                config.server.host, config.server.port
            )
        })?;
        let addr = tcp.local_addr()?;
        let lifecycle = Lifecycle::default();
        let close_listener = CancellationToken::new();
        let listener = TrackedListener::new(
            tcp,
            lifecycle.http_connections.clone(),
            close_listener.clone(),
        );

        let state = AppState::new(AppParts {
            instance,
            sessions: Sessions::new(backends.sessions, &secrets, config.auth.session_ttl),
            users: UserDirectory::new(db.clone(), backends.cache),
            message_writer: MessageWriter::new(db.clone()),
            rate_limiter: backends.rate_limiter,
            connection_limiter: backends.memory_limiter.clone(),
            pubsub: backends.pubsub,
            presence: backends.presence,
            registry: backends.registry,
            opt_out: backends.opt_out,
            tokens: TokenKeys::new(
                &secrets,
                config.auth.jwt_access_ttl,
                config.auth.jwt_refresh_ttl,
            ),
            passwords,
            lifecycle,
            metrics,
            redis: backends.redis,
            db,
            config,
        });
        let (realtime_layer, realtime) = Realtime::build(&state).await?;
        match database_problem {
            None => state.lifecycle.set_migrated(),
            Some(reason) => state.lifecycle.set_database_problem(Some(reason)),
        }
        Ok(Self {
            state,
            listener,
            close_listener,
            addr,
            shutdown: CancellationToken::new(),
            memory_limiter: backends.memory_limiter,
            sql_sessions: backends.sql_sessions,
            realtime,
            realtime_layer,
        })
    }

    /// The bound address (the real port when `PORT=0`).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The shared state (tests inspect it).
    pub fn state(&self) -> AppState {
        self.state.clone()
    }

    /// Cancelling this token starts the graceful shutdown.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Serves until the shutdown token is cancelled, then drains: readiness is 503 at
    /// once, the listener closes (new connections are refused), Socket.IO connections
    /// close, requests on open keep-alive connections are still answered (with
    /// `Connection: close`) for up to `SHUTDOWN_KEEPALIVE_GRACE`, in-flight requests
    /// finish, the instance leaves the registry, pools close — all within
    /// `SHUTDOWN_TIMEOUT`.
    pub async fn run_until_stopped(self) -> anyhow::Result<Stopped> {
        let App {
            state,
            listener,
            close_listener,
            addr,
            shutdown,
            memory_limiter,
            sql_sessions,
            mut realtime,
            realtime_layer,
        } = self;
        let span = tracing::info_span!("shoal", instance_id = %state.instance.id);
        let background = TaskTracker::new();
        let stop_background = CancellationToken::new();
        background.spawn(
            heartbeat(state.clone(), addr, stop_background.clone()).instrument(span.clone()),
        );
        background.spawn(
            housekeeping(memory_limiter, sql_sessions, stop_background.clone())
                .instrument(span.clone()),
        );

        realtime.spawn(&background, stop_background.clone());

        // Job workers stop claiming as soon as shutdown begins (not after the HTTP
        // drain) and get `SHUTDOWN_TIMEOUT` to finish or release their jobs.
        let stop_jobs = shutdown.child_token();
        // Workers start once the database is migrated: at once, or when the
        // background bring-up gets there. Giving up (a bounded DB_CONNECT_RETRIES)
        // stops the instance.
        let gave_up = Arc::new(std::sync::OnceLock::<String>::new());
        let workers = if state.lifecycle.is_migrated() {
            start_workers(&state, &background, &stop_jobs, &span)
        } else {
            Some(tokio::spawn(
                bring_up_database(
                    state.clone(),
                    background.clone(),
                    stop_jobs.clone(),
                    shutdown.clone(),
                    gave_up.clone(),
                    span.clone(),
                )
                .instrument(span.clone()),
            ))
        };

        // Socket.IO shares the port: its layer answers `/socket.io/` and passes the
        // rest to the HTTP router; the gate outside it refuses new handshakes while
        // draining and detaches their heads from the connection buffer.
        // Both wrap the router as a whole, not each route (`Router::layer` would box
        // and clone them per route and request).
        let service = tower::ServiceBuilder::new()
            .layer(map_response_with_state(
                state.clone(),
                http::drain::close_while_draining,
            ))
            .layer(from_fn_with_state(state.clone(), realtime::handshake_gate))
            .map_response(IntoResponse::into_response)
            .layer(realtime_layer)
            .service(http::router(state.clone()));
        let draining = {
            let state = state.clone();
            let shutdown = shutdown.clone();
            let sockets = realtime.closer();
            async move {
                shutdown.cancelled().await;
                state.lifecycle.begin_draining();
                // New connections are refused from here on (a load balancer retries
                // them on another instance); open ones are still served, each answer
                // with `Connection: close`.
                close_listener.cancel();
                // Sockets next: their clients reconnect elsewhere (this instance
                // refuses handshakes now) and resume by `seq`.
                sockets.close(state.config.shutdown.timeout / 3).await;
                keepalive_grace(&state).await;
                tracing::info!("shutdown: draining in-flight requests");
            }
            .instrument(span.clone())
        };
        let server = axum::serve(
            listener,
            service.into_make_service_with_connect_info::<PeerAddr>(),
        )
        .with_graceful_shutdown(draining);
        async { tracing::info!(%addr, mode = if state.config.is_distributed() { "distributed" } else { "embedded" }, "listening") }
            .instrument(span.clone())
            .await;

        let mut server = std::pin::pin!(server.into_future());
        let timeout = state.config.shutdown.timeout;
        let stopped = tokio::select! {
            result = &mut server => {
                result.context("server failed")?;
                Stopped::Drained
            }
            () = async { shutdown.cancelled().await; tokio::time::sleep(timeout).await } => {
                tracing::warn!(open = state.lifecycle.http_connections.load(Ordering::Relaxed), "shutdown timeout passed; dropping remaining connections");
                Stopped::TimedOut
            }
        };

        async {
            stop_jobs.cancel();
            if let Some(workers) = workers {
                let _ = tokio::time::timeout(timeout, workers).await;
            }
            stop_background.cancel();
            background.close();
            let _ = tokio::time::timeout(Duration::from_secs(2), background.wait()).await;
            realtime.finish(Duration::from_secs(2)).await;
            if let Err(e) = state.registry.leave(&state.instance.id).await {
                tracing::warn!(error = %e, "could not leave the instance registry");
            }
            state.db.close().await;
            tracing::info!(?stopped, "stopped");
        }
        .instrument(span)
        .await;
        match gave_up.get() {
            Some(why) => Err(anyhow::anyhow!("{why}")),
            None => Ok(stopped),
        }
    }
}

/// Starts the job scheduler (on `background`) and the workers, when this process runs
/// workers; the workers' task.
fn start_workers(
    state: &AppState,
    background: &TaskTracker,
    stop_jobs: &CancellationToken,
    span: &tracing::Span,
) -> Option<tokio::task::JoinHandle<()>> {
    state.config.queue.workers.then(|| {
        background.spawn(
            crate::jobs::scheduler::run(state.clone(), stop_jobs.clone()).instrument(span.clone()),
        );
        tokio::spawn(
            crate::jobs::worker::run(
                state.clone(),
                crate::jobs::JobHandlers::standard(&state.config),
                stop_jobs.clone(),
            )
            .instrument(span.clone()),
        )
    })
}

/// Brings a database that was unreachable or full at start-up up: migrates as soon
/// as it can, retrying with backoff and jitter (`db::retry_delay`) — without a limit
/// unless `DB_CONNECT_RETRIES` sets one — then marks the instance migrated (ready)
/// and runs the job workers. Readiness names the last reason meanwhile.
async fn bring_up_database(
    state: AppState,
    background: TaskTracker,
    stop_jobs: CancellationToken,
    shutdown: CancellationToken,
    gave_up: Arc<std::sync::OnceLock<String>>,
    span: tracing::Span,
) {
    // The attempt in `App::build` was the first.
    let mut attempt: u32 = 0;
    loop {
        if let Some(limit) = state.config.database.connect_retries
            && attempt >= limit
        {
            let why = format!(
                "cannot connect to the database after {} attempts",
                attempt + 1
            );
            tracing::error!(reason = state.lifecycle.database_problem(), "{why}");
            let _ = gave_up.set(why);
            shutdown.cancel();
            return;
        }
        let delay = crate::db::retry_delay(attempt);
        attempt += 1;
        tokio::select! {
            () = stop_jobs.cancelled() => return,
            () = tokio::time::sleep(delay) => {}
        }
        match state.db.bring_up().await {
            Ok(()) => {
                state.lifecycle.set_database_problem(None);
                state.lifecycle.set_migrated();
                tracing::info!(attempts = attempt + 1, "database up and migrated; ready");
                break;
            }
            Err(e) => {
                let reason = crate::db::unavailable_reason(e.as_ref());
                state.lifecycle.set_database_problem(Some(reason));
                tracing::warn!(error = %format!("{e:#}"), reason, attempt, "database still not ready; retrying");
            }
        }
    }
    if let Some(workers) = start_workers(&state, &background, &stop_jobs, &span) {
        let _ = workers.await;
    }
}

/// Lets the clients of open keep-alive connections close them (see
/// `SHUTDOWN_KEEPALIVE_GRACE`): returns once none is open or the grace has passed,
/// after which the server closes what is idle and finishes what is in flight.
async fn keepalive_grace(state: &AppState) {
    let grace = state.config.shutdown.keepalive_grace;
    let until = tokio::time::Instant::now() + grace;
    let open = || state.lifecycle.http_connections.load(Ordering::Relaxed);
    // A poll, not an event: connections close on their own tasks, and a tenth of a
    // second is nothing next to the grace.
    while open() > 0 && tokio::time::Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if open() > 0 && !grace.is_zero() {
        tracing::info!(
            open = open(),
            "shutdown: keep-alive grace over; closing idle connections"
        );
    }
}

/// Announces this instance in the registry every `REGISTRY_HEARTBEAT`; the entry
/// expires after three missed beats.
async fn heartbeat(state: AppState, addr: SocketAddr, stop: CancellationToken) {
    let period = state.config.cluster.registry_heartbeat;
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut since = std::time::Instant::now();
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = stop.cancelled() => return,
        }
        let window = state.lifecycle.requests.take(since.elapsed());
        since = std::time::Instant::now();
        let record = InstanceRecord {
            id: state.instance.id.clone(),
            version: state.instance.version.to_owned(),
            started_at: state.instance.started_at.clone(),
            last_heartbeat: crate::clock::rfc3339(crate::clock::now_micros()),
            address: addr.to_string(),
            http_connections: state.lifecycle.http_connections.load(Ordering::Relaxed),
            ws_connections: state.lifecycle.ws_connections.load(Ordering::Relaxed),
            draining: state.lifecycle.is_draining(),
            request_rate: window.rate,
            p99_ms: window.p99_ms,
        };
        if let Err(e) = state.registry.heartbeat(&record, period * 3).await {
            // The registry lives in Redis: this period was served degraded.
            metrics::counter!("shoal_degraded_seconds_total").increment(period.as_secs());
            tracing::warn!(error = %e, "registry heartbeat failed");
        }
    }
}

/// Periodic clean-up of in-process state: forgotten rate-limit keys, expired sessions.
async fn housekeeping(
    limiter: std::sync::Arc<crate::rate_limit::memory::MemoryRateLimiter>,
    sessions: Option<std::sync::Arc<crate::session::sql::SqlSessionStore>>,
    stop: CancellationToken,
) {
    let mut ticker = tokio::time::interval(Duration::from_secs(60));
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = stop.cancelled() => return,
        }
        limiter.prune();
        if let Some(s) = &sessions {
            match s.purge_expired().await {
                Ok(0) => {}
                Ok(n) => tracing::debug!(purged = n, "expired sessions removed"),
                Err(e) => tracing::warn!(error = %e, "session purge failed"),
            }
        }
    }
}
