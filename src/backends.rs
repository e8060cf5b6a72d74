//! The backend resolver: the one place that looks at the configuration to choose
//! in-process or Redis implementations of the capabilities (docs/architecture.md). Nothing
//! else in the code base asks which mode it is in.

use std::sync::Arc;

use anyhow::Context;

use crate::analytics::OptOutStore;
use crate::analytics::redis::RedisOptOutStore;
use crate::analytics::sql::SqlOptOutStore;
use crate::cache::Cache;
use crate::cache::memory::MemoryCache;
use crate::cache::redis::RedisCache;
use crate::config::{CacheProvider, Config};
use crate::db::Db;
use crate::presence::Presence;
use crate::presence::memory::MemoryPresence;
use crate::presence::redis::RedisPresence;
use crate::pubsub::PubSub;
use crate::pubsub::fallback::FallbackPubSub;
use crate::pubsub::memory::MemoryPubSub;
use crate::pubsub::redis::RedisPubSub;
use crate::rate_limit::RateLimiter;
use crate::rate_limit::denials::RememberDenials;
use crate::rate_limit::fallback::FallbackRateLimiter;
use crate::rate_limit::memory::MemoryRateLimiter;
use crate::rate_limit::redis::RedisRateLimiter;
use crate::redis_client::RedisClient;
use crate::registry::InstanceRegistry;
use crate::registry::memory::MemoryRegistry;
use crate::registry::redis::RedisRegistry;
use crate::session::SessionStore;
use crate::session::durable::DurableSessionStore;
use crate::session::redis::RedisSessionStore;
use crate::session::sql::SqlSessionStore;

/// Every capability, behind its trait.
pub struct Backends {
    /// Session records.
    pub sessions: Arc<dyn SessionStore>,
    /// Look-up cache.
    pub cache: Arc<dyn Cache>,
    /// Request budgets.
    pub rate_limiter: Arc<dyn RateLimiter>,
    /// Messages between instances.
    pub pubsub: Arc<dyn PubSub>,
    /// Who is online.
    pub presence: Arc<dyn Presence>,
    /// Live instances.
    pub registry: Arc<dyn InstanceRegistry>,
    /// Analytics opt-outs.
    pub opt_out: Arc<dyn OptOutStore>,
    /// The Redis client, in distributed mode.
    pub redis: Option<RedisClient>,
    /// The in-process limiter, which needs periodic pruning: in embedded mode the
    /// request limiter itself; in both modes the one for budgets of one connection
    /// (see [`crate::state::AppParts::connection_limiter`]).
    pub memory_limiter: Arc<MemoryRateLimiter>,
    /// The SQL session store, whose expired rows need purging (embedded mode).
    pub sql_sessions: Option<Arc<SqlSessionStore>>,
}

impl Backends {
    /// Builds the backends the configuration asks for.
    pub async fn connect(config: &Config, db: &Db) -> anyhow::Result<Self> {
        let Some(target) = &config.redis.target else {
            let limiter = Arc::new(MemoryRateLimiter::new());
            let sessions = Arc::new(SqlSessionStore::new(db.clone()));
            return Ok(Self {
                sessions: sessions.clone(),
                cache: Arc::new(MemoryCache::new(config.cache.max_size, config.cache.ttl)),
                rate_limiter: limiter.clone(),
                pubsub: Arc::new(MemoryPubSub::new()),
                presence: Arc::new(MemoryPresence::new()),
                registry: Arc::new(MemoryRegistry::new()),
                opt_out: Arc::new(SqlOptOutStore::new(db.clone())),
                redis: None,
                memory_limiter: limiter,
                sql_sessions: Some(sessions),
            });
        };
        let client = RedisClient::connect(
            target,
            &config.redis.key_prefix,
            config.redis.tls_ca.as_ref(),
        )
        .await
        .context("cannot connect to Redis")?;
        let pubsub = RedisPubSub::connect(&client)
            .await
            .context("cannot open the Redis subscription connection")?;
        let cache: Arc<dyn Cache> = match config.cache.provider {
            CacheProvider::Redis => Arc::new(
                RedisCache::new(
                    client.clone(),
                    pubsub.clone(),
                    config.cache.max_size,
                    config.cache.ttl,
                )
                .await
                .context("cannot start the Redis cache")?,
            ),
            // Allowed for experiments; with several instances a memory cache serves
            // stale users after a change elsewhere until its TTL passes.
            CacheProvider::Memory => {
                Arc::new(MemoryCache::new(config.cache.max_size, config.cache.ttl))
            }
        };
        // Budgets of one connection, and the request budgets while Redis is down.
        let memory_limiter = Arc::new(MemoryRateLimiter::new());
        let sessions = RedisSessionStore::start(client.clone(), pubsub.clone())
            .await
            .context("cannot start the Redis session store")?;
        Ok(Self {
            sessions: Arc::new(DurableSessionStore::new(db.clone(), sessions)),
            cache,
            rate_limiter: Arc::new(RememberDenials::new(Arc::new(FallbackRateLimiter::new(
                Arc::new(RedisRateLimiter::new(client.clone())),
                memory_limiter.clone(),
            )))),
            // Realtime events reach this instance's own sockets while Redis is down.
            pubsub: Arc::new(FallbackPubSub::new(Arc::new(pubsub))),
            presence: Arc::new(RedisPresence::new(client.clone())),
            registry: Arc::new(RedisRegistry::new(client.clone())),
            opt_out: Arc::new(RedisOptOutStore::new(client.clone())),
            redis: Some(client),
            memory_limiter,
            sql_sessions: None,
        })
    }
}
