//! Presence in Redis (distributed mode): who is online in a room, on any instance.
//!
//! Key layout per room: a sorted set `{{prefix}:presence:{room}}:expiry` (connection →
//! expiry in Redis milliseconds) and a hash `{{prefix}:presence:{room}}:info`
//! (connection → info); the braces are a Redis Cluster hash tag, so both are in one
//! slot. Both keys are given a `PEXPIRE` of the latest expiry in the
//! room, so an abandoned room (its instances died) disappears by itself.
//!
//! Trade-off: `join` and `list` are Lua scripts so that expiry is judged by Redis
//! `TIME` (instances with skewed clocks agree) and so that pruning expired entries and
//! reading the live ones is atomic; each call is one round trip (`join_many`: one per
//! 500 entries). `leave` is a
//! `MULTI` of `ZREM` + `HDEL`.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use super::Presence;
use crate::backend_error::BackendError;
use crate::redis_client::RedisClient;
use crate::session::redis::px;

/// Drops expired entries of the room in KEYS[1] (zset) / KEYS[2] (hash) and returns
/// the current Redis time in ms. Shared prelude of both scripts.
const PRUNE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local dead = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)
for _, m in ipairs(dead) do
  redis.call('ZREM', KEYS[1], m)
  redis.call('HDEL', KEYS[2], m)
end
";

/// ARGV[1] = ttl ms, then conn, info pairs.
const JOIN: &str = r"
local exp = now + tonumber(ARGV[1])
for i = 2, #ARGV - 1, 2 do
  redis.call('ZADD', KEYS[1], exp, ARGV[i])
  redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
end
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
local keep = math.max(1, tonumber(last[2]) - now)
redis.call('PEXPIRE', KEYS[1], keep)
redis.call('PEXPIRE', KEYS[2], keep)
return 1
";

/// Returns {conn, info, conn, info, …} of the live entries.
const LIST: &str = r"
local live = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf')
local out = {}
for _, m in ipairs(live) do
  local info = redis.call('HGET', KEYS[2], m)
  if info then
    table.insert(out, m)
    table.insert(out, info)
  end
end
return out
";

/// Entries per `join_many` script call.
const JOIN_MANY_CHUNK: usize = 500;

/// Presence in Redis; shared by every instance on the same server and prefix.
pub struct RedisPresence {
    client: RedisClient,
    join: redis::Script,
    list: redis::Script,
}

impl RedisPresence {
    /// Presence over `client`.
    pub fn new(client: RedisClient) -> Self {
        Self {
            client,
            join: redis::Script::new(&format!("{PRUNE}{JOIN}")),
            list: redis::Script::new(&format!("{PRUNE}{LIST}")),
        }
    }

    fn keys(&self, room: &str) -> (String, String) {
        (
            // One hash tag per room: the scripts use both keys (one slot on a cluster).
            self.client.tagged_key(&["presence", room], &["expiry"]),
            self.client.tagged_key(&["presence", room], &["info"]),
        )
    }
}

#[async_trait]
impl Presence for RedisPresence {
    async fn join(
        &self,
        room: &str,
        conn: &str,
        info: Bytes,
        ttl: Duration,
    ) -> Result<(), BackendError> {
        let (expiry, infos) = self.keys(room);
        let mut invocation = self.join.prepare_invoke();
        invocation
            .key(expiry)
            .key(infos)
            .arg(px(ttl))
            .arg(conn)
            .arg(info.as_ref());
        self.client.run_script::<i64>(&invocation).await.map(|_| ())
    }

    async fn join_many(
        &self,
        room: &str,
        entries: &[(String, Bytes)],
        ttl: Duration,
    ) -> Result<(), BackendError> {
        let (expiry, infos) = self.keys(room);
        // Bounded scripts: Redis runs nothing else while one runs.
        for chunk in entries.chunks(JOIN_MANY_CHUNK) {
            let mut invocation = self.join.prepare_invoke();
            invocation.key(&expiry).key(&infos).arg(px(ttl));
            for (conn, info) in chunk {
                invocation.arg(conn).arg(info.as_ref());
            }
            self.client.run_script::<i64>(&invocation).await?;
        }
        Ok(())
    }

    async fn leave(&self, room: &str, conn: &str) -> Result<(), BackendError> {
        let (expiry, infos) = self.keys(room);
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("ZREM")
            .arg(expiry)
            .arg(conn)
            .ignore()
            .cmd("HDEL")
            .arg(infos)
            .arg(conn)
            .ignore();
        self.client.query_pipe::<()>(&pipe).await
    }

    async fn list(&self, room: &str) -> Result<Vec<(String, Bytes)>, BackendError> {
        let (expiry, infos) = self.keys(room);
        let mut invocation = self.list.prepare_invoke();
        invocation.key(expiry).key(infos);
        let flat: Vec<Vec<u8>> = self.client.run_script(&invocation).await?;
        let mut out = Vec::with_capacity(flat.len() / 2);
        let mut items = flat.into_iter();
        while let (Some(conn), Some(info)) = (items.next(), items.next()) {
            let conn = String::from_utf8(conn)
                .map_err(|e| BackendError::corrupt("redis", format!("presence member: {e}")))?;
            out.push((conn, Bytes::from(info)));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    async fn check(&self) -> Result<(), BackendError> {
        self.client.ping().await
    }
}
