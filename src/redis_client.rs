//! The one Redis client of the process: a multiplexed [`ConnectionManager`] for
//! commands, the key prefix of the deployment, a round-trip counter, and the means to
//! open dedicated subscription connections (see [`crate::pubsub::redis`]).
//!
//! Every Redis backend (sessions, cache, rate limiter, pub/sub, presence, registry,
//! analytics opt-out) goes through [`RedisClient`], so that
//! - every key and channel carries the `{prefix}:` of the deployment ([`RedisClient::key`]);
//! - every call is bounded by [`COMMAND_TIMEOUT`]: a Redis outage becomes
//!   `BackendError::unavailable("redis", …)` within that time instead of a hung request;
//! - round trips are counted ([`RedisClient::round_trips`]) so that tests can hold hot
//!   paths to a budget.
//!
//! Guarantees: the client is cheap to clone (one `Arc`) and shared by all tasks of one
//! instance; it reconnects by itself after Redis restarts (the `ConnectionManager`
//! does this on the first failing command). With Sentinel, the master is resolved at
//! start and re-resolved after a failed command, so a failover is followed within a
//! few failed commands. With a Redis Cluster (`REDIS_CLUSTER_NODES`), commands go
//! through redis-rs's cluster connection, which routes each command, script and
//! pipeline by its key's slot and follows `MOVED`/`ASK` and failovers by itself; keys
//! that one command or script uses together share a hash tag ([`RedisClient::tagged_key`]).
//! Pub/sub on a cluster is sharded (Redis 7: `SPUBLISH`/`SSUBSCRIBE`): each channel is
//! its own hash tag ([`RedisClient::channel`]), so it lives on the master of its slot,
//! a publish goes to that master only and is not broadcast over the cluster bus, and
//! the subscriptions use a RESP3 cluster connection of their own
//! ([`RedisClient::cluster_subscriber`]).
//! Nothing here is per instance: two processes with the same prefix see the same keys.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::sentinel::{
    SentinelClient, SentinelClientBuilder, SentinelNodeConnectionInfo, SentinelServerType,
};
use redis::{
    Client, Cmd, FromRedisValue, IntoConnectionInfo, Pipeline, ScriptInvocation, TlsCertificates,
    TlsMode,
};
use redis::{ProtocolVersion, PushInfo};
use secrecy::ExposeSecret;

use crate::backend_error::BackendError;
use crate::config::{RedisTarget, TlsCa};

mod breaker;

use breaker::{Breaker, Outcome, Rejected, Ticket};

/// Upper bound on one command (or pipeline, or script) including the wait for a
/// connection. Two seconds: far above a healthy round trip (well under 1 ms on a LAN),
/// short enough that a request fails with 503 long before a load balancer or client
/// gives up on it.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);

/// Upper bound on opening one TCP connection (and its handshake).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// The Redis client shared by every Redis backend of one instance.
#[derive(Clone)]
pub struct RedisClient {
    inner: Arc<Shared>,
}

struct Shared {
    /// The command connection. Behind a lock only so that a Sentinel failover can swap
    /// it; commands clone it (an `Arc`) out and never hold the lock across an await.
    conn: RwLock<Commands>,
    /// Where connections come from (a fixed URL, or whatever master Sentinel names).
    source: Source,
    /// `{prefix}` of every key and channel (without the trailing `:`).
    prefix: String,
    /// Commands, pipelines and scripts sent through this client, for hot-path budgets.
    round_trips: AtomicU64,
    /// Set while a Sentinel re-resolution is running, so a burst of failing commands
    /// starts only one.
    resolving: AtomicBool,
    /// Fails commands at once while Redis does not answer (see [`breaker`]).
    breaker: Breaker,
}

/// Where commands go.
#[derive(Clone)]
enum Commands {
    /// One server (fixed, or the master Sentinel names), reconnected by the manager.
    Server(ConnectionManager),
    /// A Redis Cluster.
    Cluster(ClusterConnection),
}

enum Source {
    /// A fixed server.
    Url(Client),
    /// A Redis Cluster: what a subscription connection is built from.
    Cluster {
        /// The seed URLs (`REDIS_CLUSTER_NODES`).
        urls: Vec<secrecy::SecretString>,
        /// The CA for `rediss://` seeds, when one is configured.
        certs: Option<TlsCertificates>,
    },
    /// The master named by the sentinels, and the client last resolved for it.
    Sentinel {
        /// Boxed: a `SentinelClient` is large and this enum lives once per process.
        sentinel: Box<tokio::sync::Mutex<SentinelClient>>,
        current: RwLock<Client>,
    },
}

impl RedisClient {
    /// Connects to `target` (standalone URL or Sentinel) and checks the connection with
    /// one command. `prefix` is put in front of every key and channel as `{prefix}:`.
    /// `tls_ca` is the CA of the servers' certificates for `rediss://` addresses
    /// (`REDIS_TLS_CA_FILE`); without it TLS trusts the system's roots.
    pub async fn connect(
        target: &RedisTarget,
        prefix: &str,
        tls_ca: Option<&TlsCa>,
    ) -> Result<RedisClient, BackendError> {
        install_tls_provider();
        let bad = |key: &str, e: redis::RedisError| {
            BackendError::unavailable("redis", format!("bad {key}: {e}"))
        };
        let certs = || TlsCertificates {
            client_tls: None,
            root_cert: tls_ca.map(|ca| ca.pem.clone()),
        };
        let open = |url: &str| match tls_ca {
            Some(_) if url.starts_with("rediss://") => Client::build_with_tls(url, certs()),
            _ => Client::open(url),
        };
        let (conn, source) = match target {
            RedisTarget::Url(url) => {
                let client = open(url.expose_secret()).map_err(|e| bad("REDIS_URL", e))?;
                let conn = timeout(ConnectionManager::new_with_config(
                    client.clone(),
                    manager_config(),
                ))
                .await?;
                (Commands::Server(conn), Source::Url(client))
            }
            RedisTarget::Cluster { nodes } => {
                let urls: Vec<&str> = nodes.iter().map(|n| n.expose_secret()).collect();
                let certs = (tls_ca.is_some() && target.uses_tls()).then(certs);
                let cluster = cluster_builder(&urls, certs.clone())
                    .build()
                    .map_err(|e| bad("REDIS_CLUSTER_NODES", e))?;
                let conn = timeout(cluster.get_async_connection()).await?;
                let source = Source::Cluster {
                    urls: nodes.clone(),
                    certs,
                };
                (Commands::Cluster(conn), source)
            }
            RedisTarget::Sentinel {
                sentinels,
                master,
                url,
            } => {
                let params: Vec<String> = sentinels
                    .iter()
                    .map(|s| {
                        if s.contains("://") {
                            s.clone()
                        } else {
                            format!("redis://{s}")
                        }
                    })
                    .collect();
                let mut sentinel = if tls_ca.is_some() && target.uses_tls() {
                    sentinel_with_ca(&params, master, url.as_ref(), certs())
                        .map_err(|e| bad("REDIS_SENTINELS", e))?
                } else {
                    let mut node = SentinelNodeConnectionInfo::default();
                    if let Some(url) = url {
                        let info = url
                            .expose_secret()
                            .into_connection_info()
                            .map_err(|e| bad("REDIS_URL", e))?;
                        node = node.set_redis_connection_info(info.redis_settings().clone());
                    }
                    if target.uses_tls() {
                        // The master and replicas speak TLS like the sentinels do.
                        node = node.set_tls_mode(TlsMode::Secure);
                    }
                    SentinelClient::build(
                        params,
                        master.clone(),
                        Some(node),
                        SentinelServerType::Master,
                    )
                    .map_err(|e| bad("REDIS_SENTINELS", e))?
                };
                let client = timeout(sentinel.async_get_client()).await?;
                let conn = timeout(ConnectionManager::new_with_config(
                    client.clone(),
                    manager_config(),
                ))
                .await?;
                let source = Source::Sentinel {
                    sentinel: Box::new(tokio::sync::Mutex::new(sentinel)),
                    current: RwLock::new(client),
                };
                (Commands::Server(conn), source)
            }
        };
        let this = RedisClient {
            inner: Arc::new(Shared {
                conn: RwLock::new(conn),
                source,
                prefix: prefix.to_owned(),
                round_trips: AtomicU64::new(0),
                resolving: AtomicBool::new(false),
                breaker: Breaker::default(),
            }),
        };
        this.ping().await?;
        Ok(this)
    }

    /// `{prefix}:{part}:{part}…` — the name of a key or channel of this deployment.
    pub fn key(&self, parts: &[&str]) -> String {
        let mut key = self.inner.prefix.clone();
        for part in parts {
            key.push(':');
            key.push_str(part);
        }
        key
    }

    /// Like [`RedisClient::key`], for keys that one command or script uses together:
    /// `{{prefix}:{group}}:{part}…`. The braces are a Redis Cluster hash tag, so every
    /// key of one group lives in the same slot (on a single server they are just
    /// characters of the name).
    pub fn tagged_key(&self, group: &[&str], parts: &[&str]) -> String {
        let mut key = String::from("{");
        key.push_str(&self.inner.prefix);
        for part in group {
            key.push(':');
            key.push_str(part);
        }
        key.push('}');
        for part in parts {
            key.push(':');
            key.push_str(part);
        }
        key
    }

    /// The name of a pub/sub channel: `{{prefix}:pubsub}:{channel}` on one server, and
    /// `{prefix}:pubsub:{{channel}}` on a cluster, where the channel is its own hash
    /// tag so that sharded pub/sub spreads the channels over the masters.
    pub fn channel(&self, channel: &str) -> String {
        if self.is_cluster() {
            format!("{}:pubsub:{{{channel}}}", self.inner.prefix)
        } else {
            self.tagged_key(&["pubsub"], &[channel])
        }
    }

    /// Whether commands go to a Redis Cluster, where a pipeline must stay in one slot.
    pub fn is_cluster(&self) -> bool {
        matches!(self.inner.source, Source::Cluster { .. })
    }

    /// The deployment's prefix (without the trailing `:`).
    pub fn prefix(&self) -> &str {
        &self.inner.prefix
    }

    /// How many round trips (commands, pipelines, script calls) this client and its
    /// clones have sent so far. A script call counts as one, although the rare
    /// `NOSCRIPT` fallback (first call after a Redis restart) costs two more.
    pub fn round_trips(&self) -> u64 {
        self.inner.round_trips.load(Ordering::Relaxed)
    }

    /// Sends one command.
    pub async fn query<T: FromRedisValue>(&self, cmd: &Cmd) -> Result<T, BackendError> {
        let ticket = self.permit()?;
        let result = match self.begin() {
            Commands::Server(mut c) => bounded(cmd.query_async(&mut c)).await,
            Commands::Cluster(mut c) => bounded(cmd.query_async(&mut c)).await,
        };
        self.finish(ticket, result)
    }

    /// Sends a pipeline (or a `MULTI`/`EXEC` transaction) in one round trip. On a
    /// cluster, every keyed command of it must be in one slot.
    pub async fn query_pipe<T: FromRedisValue>(&self, pipe: &Pipeline) -> Result<T, BackendError> {
        let ticket = self.permit()?;
        let result = match self.begin() {
            Commands::Server(mut c) => bounded(pipe.query_async(&mut c)).await,
            Commands::Cluster(mut c) => bounded(pipe.query_async(&mut c)).await,
        };
        self.finish(ticket, result)
    }

    /// Runs a Lua script by `EVALSHA`, falling back to loading it on `NOSCRIPT`.
    pub async fn run_script<T: FromRedisValue>(
        &self,
        invocation: &ScriptInvocation<'_>,
    ) -> Result<T, BackendError> {
        let ticket = self.permit()?;
        let result = match self.begin() {
            Commands::Server(mut c) => bounded(invocation.invoke_async(&mut c)).await,
            Commands::Cluster(mut c) => bounded(invocation.invoke_async(&mut c)).await,
        };
        self.finish(ticket, result)
    }

    /// Readiness: one `PING`.
    pub async fn ping(&self) -> Result<(), BackendError> {
        let _: String = self.query(&redis::cmd("PING")).await?;
        Ok(())
    }

    /// A client for a dedicated connection (subscriptions) to the current server: the
    /// URL's, or the master Sentinel names right now. A cluster has no such server
    /// (see [`RedisClient::cluster_subscriber`]).
    pub(crate) async fn dedicated_client(&self) -> Result<Client, BackendError> {
        match &self.inner.source {
            Source::Url(client) => Ok(client.clone()),
            Source::Cluster { .. } => Err(BackendError::unavailable(
                "redis",
                "a Redis Cluster has no single server to subscribe on",
            )),
            Source::Sentinel { sentinel, current } => {
                let mut sentinel = sentinel.lock().await;
                let client = timeout(sentinel.async_get_client()).await?;
                *current.write().unwrap_or_else(|p| p.into_inner()) = client.clone();
                Ok(client)
            }
        }
    }

    /// A new RESP3 connection to the cluster for sharded subscriptions, whose messages
    /// and disconnections arrive on `pushes`; `None` when Redis is not a cluster.
    pub(crate) async fn cluster_subscriber(
        &self,
        pushes: tokio::sync::mpsc::UnboundedSender<PushInfo>,
    ) -> Option<Result<ClusterConnection, BackendError>> {
        let Source::Cluster { urls, certs } = &self.inner.source else {
            return None;
        };
        let urls: Vec<&str> = urls.iter().map(|u| u.expose_secret()).collect();
        let built = cluster_builder(&urls, certs.clone())
            .use_protocol(ProtocolVersion::RESP3)
            .push_sender(pushes)
            .build()
            .map_err(|e| BackendError::unavailable("redis", e.to_string()));
        Some(match built {
            Ok(client) => timeout(client.get_async_connection()).await,
            Err(e) => Err(e),
        })
    }

    /// The breaker's permission to send a command; a refusal is the same `Unavailable`
    /// error a failed command gives, so every backend takes the same fallback.
    fn permit(&self) -> Result<Ticket<'_>, BackendError> {
        self.inner.breaker.permit().map_err(|Rejected| {
            BackendError::unavailable(
                "redis",
                "commands paused: Redis stopped answering (one probe at a time)",
            )
        })
    }

    /// Tells the breaker how a sent command ended, maps its error, and starts a Sentinel
    /// re-resolution after a failure.
    fn finish<T>(&self, ticket: Ticket<'_>, result: Bounded<T>) -> Result<T, BackendError> {
        let result = match result {
            Ok(Ok(value)) => {
                ticket.record(Outcome::Answered);
                Ok(value)
            }
            Ok(Err(e)) => {
                let unanswered = e.is_timeout()
                    || e.is_io_error()
                    || e.is_connection_refusal()
                    || e.is_connection_dropped();
                ticket.record(if unanswered {
                    Outcome::Unanswered
                } else {
                    Outcome::Answered
                });
                Err(BackendError::from(e))
            }
            Err(_elapsed) => {
                ticket.record(Outcome::Unanswered);
                Err(no_answer())
            }
        };
        self.after(&result);
        result
    }

    fn begin(&self) -> Commands {
        self.inner.round_trips.fetch_add(1, Ordering::Relaxed);
        self.inner
            .conn
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// After a failed command in Sentinel mode, asks the sentinels whether the master
    /// moved and, if so, swaps the command connection. Any `Unavailable` error triggers
    /// the question (a `READONLY` from a demoted master looks like that too); if the
    /// master did not move, nothing changes. At most one re-resolution runs at a time.
    fn after<T>(&self, result: &Result<T, BackendError>) {
        let Err(e) = result else { return };
        if e.kind() != crate::backend_error::BackendErrorKind::Unavailable {
            return;
        }
        if !matches!(self.inner.source, Source::Sentinel { .. }) {
            return;
        }
        if self.inner.resolving.swap(true, Ordering::AcqRel) {
            return;
        }
        let inner = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            if let Some(inner) = inner.upgrade() {
                let this = RedisClient { inner };
                if let Err(e) = this.follow_master().await {
                    tracing::warn!(error = %e, "redis: sentinel re-resolution failed");
                }
                this.inner.resolving.store(false, Ordering::Release);
            }
        });
    }

    async fn follow_master(&self) -> Result<(), BackendError> {
        let Source::Sentinel { current, .. } = &self.inner.source else {
            return Ok(());
        };
        let before = current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get_connection_info()
            .addr()
            .clone();
        let client = self.dedicated_client().await?;
        if *client.get_connection_info().addr() == before {
            return Ok(());
        }
        tracing::info!(master = %client.get_connection_info().addr(), "redis: following new sentinel master");
        let conn = timeout(ConnectionManager::new_with_config(client, manager_config())).await?;
        *self.inner.conn.write().unwrap_or_else(|p| p.into_inner()) = Commands::Server(conn);
        Ok(())
    }
}

impl std::fmt::Debug for RedisClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisClient")
            .field("prefix", &self.inner.prefix)
            .field("round_trips", &self.round_trips())
            .finish_non_exhaustive()
    }
}

/// The cluster connections' settings: bounded connects and commands, two retries of a
/// command that met a `MOVED`/`ASK` or a node being replaced.
fn cluster_builder(urls: &[&str], certs: Option<TlsCertificates>) -> ClusterClientBuilder {
    let mut builder = ClusterClientBuilder::new(urls.to_vec())
        .connection_timeout(CONNECT_TIMEOUT)
        .response_timeout(COMMAND_TIMEOUT)
        .retries(2);
    if let Some(certs) = certs {
        builder = builder.certs(certs);
    }
    builder
}

/// The manager reconnects on demand: the next command after a failed reconnect starts
/// a new one. One try per reconnect, no retries of its own: the breaker paces the
/// attempts while Redis is gone (one probe at a time), and with retries every command
/// that arrived during a reconnect waited for all of them — outage p99 480 ms with two
/// retries, 4.8 ms with none (`scripts/fault-redis.sh`, docs/operations.md).
fn manager_config() -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(COMMAND_TIMEOUT))
        .set_number_of_retries(0)
}

/// rustls needs one process-wide crypto provider; sqlx's TLS and redis-rs's both use
/// rustls, so the provider is chosen here once (ring, which sqlx's TLS is built on)
/// instead of depending on which of their crate features happen to be on.
fn install_tls_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // Err means a provider is installed already: that one serves as well.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// A Sentinel client whose connections (to the sentinels and to the master) trust
/// the CA of `REDIS_TLS_CA_FILE`: `SentinelClient::build` has no way to pass it.
fn sentinel_with_ca(
    params: &[String],
    master: &str,
    url: Option<&secrecy::SecretString>,
    certs: TlsCertificates,
) -> redis::RedisResult<SentinelClient> {
    let addrs = params
        .iter()
        .map(|p| p.as_str().into_connection_info().map(|i| i.addr().clone()))
        .collect::<redis::RedisResult<Vec<_>>>()?;
    let mut builder = SentinelClientBuilder::new(addrs, master, SentinelServerType::Master)?
        .set_client_to_redis_tls_mode(TlsMode::Secure)
        .set_client_to_sentinel_certificates(certs.clone())
        .set_client_to_redis_certificates(certs);
    if params.iter().any(|p| p.starts_with("rediss://")) {
        builder = builder.set_client_to_sentinel_tls_mode(TlsMode::Secure);
    }
    if let Some(url) = url {
        let info = url.expose_secret().into_connection_info()?;
        let settings = info.redis_settings();
        if let Some(user) = settings.username() {
            builder = builder.set_client_to_redis_username(user);
        }
        if let Some(password) = settings.password() {
            builder = builder.set_client_to_redis_password(password);
        }
        builder = builder.set_client_to_redis_db(settings.db());
    }
    builder.build()
}

/// Milliseconds for `PX`, at least 1 (Redis rejects 0).
pub(crate) fn px(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// Bounds `fut` by [`COMMAND_TIMEOUT`] and maps both failure kinds to [`BackendError`].
pub(crate) async fn timeout<T>(
    fut: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> Result<T, BackendError> {
    match tokio::time::timeout(COMMAND_TIMEOUT, fut).await {
        Ok(result) => result.map_err(BackendError::from),
        Err(_) => Err(no_answer()),
    }
}

/// A command's result, or `Err` when it got no answer within [`COMMAND_TIMEOUT`].
type Bounded<T> = Result<redis::RedisResult<T>, tokio::time::error::Elapsed>;

/// Bounds `fut` by [`COMMAND_TIMEOUT`], keeping a timeout apart for the breaker.
async fn bounded<T>(fut: impl std::future::Future<Output = redis::RedisResult<T>>) -> Bounded<T> {
    tokio::time::timeout(COMMAND_TIMEOUT, fut).await
}

fn no_answer() -> BackendError {
    BackendError::unavailable("redis", format!("no answer within {COMMAND_TIMEOUT:?}"))
}
