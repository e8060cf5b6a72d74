//! The instance registry in Redis (distributed mode): every instance sees every live
//! instance of the deployment.
//!
//! Key layout: a sorted set `{{prefix}:registry}:instances` (instance id → expiry in
//! Redis milliseconds) and one JSON string per instance,
//! `{{prefix}:registry}:instance:{id}`, written with `PX ttl` so that Redis drops the
//! record of an instance that stopped heartbeating. The sorted set lets `list()` find
//! the ids without `KEYS`/`SCAN`; it is pruned by score on every heartbeat and list.
//!
//! Trade-off: `heartbeat` and `list` are Lua scripts so that expiry is judged by Redis
//! `TIME` (skewed instance clocks agree) and each is one round trip. `list` builds the
//! record keys inside the script from a prefix argument instead of declaring them as
//! `KEYS`; on a Redis Cluster that is only allowed because every key of the registry
//! carries the same hash tag (`{…}`), so they all live in the index's slot.

use std::time::Duration;

use async_trait::async_trait;

use super::{InstanceRecord, InstanceRegistry};
use crate::backend_error::BackendError;
use crate::redis_client::{RedisClient, px};

/// KEYS[1] = zset, KEYS[2] = record key; ARGV[1] = id, ARGV[2] = JSON, ARGV[3] = ttl ms.
const HEARTBEAT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
return 1
";

/// KEYS[1] = zset; ARGV[1] = record key prefix. Returns the live JSON records.
const LIST: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local ids = redis.call('ZRANGE', KEYS[1], 0, -1)
local out = {}
for _, id in ipairs(ids) do
  local record = redis.call('GET', ARGV[1] .. id)
  if record then table.insert(out, record) end
end
return out
";

/// Instance records in Redis.
pub struct RedisRegistry {
    client: RedisClient,
    heartbeat: redis::Script,
    list: redis::Script,
}

impl RedisRegistry {
    /// A registry over `client`.
    pub fn new(client: RedisClient) -> Self {
        Self {
            client,
            heartbeat: redis::Script::new(HEARTBEAT),
            list: redis::Script::new(LIST),
        }
    }

    // One hash tag for the index and every record: the scripts use them together,
    // so on a Redis Cluster they must share a slot (`LIST` reads records it finds in
    // the index, which only a same-slot key allows).
    fn index(&self) -> String {
        self.client.tagged_key(&["registry"], &["instances"])
    }

    fn record(&self, id: &str) -> String {
        self.client.tagged_key(&["registry"], &["instance", id])
    }
}

#[async_trait]
impl InstanceRegistry for RedisRegistry {
    async fn heartbeat(&self, record: &InstanceRecord, ttl: Duration) -> Result<(), BackendError> {
        let json = serde_json::to_string(record)
            .map_err(|e| BackendError::corrupt("redis", format!("instance record: {e}")))?;
        let mut invocation = self.heartbeat.prepare_invoke();
        invocation
            .key(self.index())
            .key(self.record(&record.id))
            .arg(&record.id)
            .arg(json)
            .arg(px(ttl));
        self.client.run_script::<i64>(&invocation).await.map(|_| ())
    }

    async fn leave(&self, id: &str) -> Result<(), BackendError> {
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("ZREM")
            .arg(self.index())
            .arg(id)
            .ignore()
            .cmd("DEL")
            .arg(self.record(id))
            .ignore();
        self.client.query_pipe::<()>(&pipe).await
    }

    async fn list(&self) -> Result<Vec<InstanceRecord>, BackendError> {
        let mut invocation = self.list.prepare_invoke();
        invocation.key(self.index()).arg(self.record(""));
        let raw: Vec<Vec<u8>> = self.client.run_script(&invocation).await?;
        let mut records = raw
            .iter()
            .map(|json| {
                serde_json::from_slice::<InstanceRecord>(json)
                    .map_err(|e| BackendError::corrupt("redis", format!("instance record: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        records.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(records)
    }

    async fn check(&self) -> Result<(), BackendError> {
        self.client.ping().await
    }
}
