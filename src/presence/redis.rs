//! Presence in Redis (distributed mode): who is online in a room, on any instance.
//!
//! Key layout per room, all under one Redis Cluster hash tag `{{prefix}:presence:{room}}`
//! (one slot, so a script may use them together):
//! - `…:users`, a sorted set: user → the latest expiry of its connections, in Redis
//!   milliseconds; `list` reads the users whose score is in the future;
//! - `…:u:{user}`, a sorted set per user: connection → expiry.
//!
//! Every key gets a `PEXPIRE` at its latest expiry, so an abandoned room (its instances
//! died) disappears by itself.
//!
//! Trade-off: every call is one Lua script (one round trip; `join_many` one per 500
//! entries), so that expiry is judged by Redis `TIME` (instances with skewed clocks
//! agree) and so that "did this user just come online / go offline" is answered
//! atomically with the change. Each costs O(log n) in the room's size: an earlier
//! layout (one set of connections per room) made `leave` read the whole room to learn
//! whether the user had another connection, O(n) per leave and O(n²) for a workspace
//! whose clients all reconnect at once.

use std::time::Duration;

use async_trait::async_trait;

use super::{Entry, Presence};
use crate::backend_error::BackendError;
use crate::redis_client::{RedisClient, px};

/// The current Redis time in ms, as `now`.
const NOW: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
";

/// KEYS[1] = users, KEYS[1 + i] = the i-th entry's user key; ARGV[1] = ttl ms, then
/// user, conn per entry. Returns 1 when the first entry's user came online.
const JOIN: &str = r"
local exp = now + tonumber(ARGV[1])
local first = 0
for i = 2, #KEYS do
  local ukey, user, conn = KEYS[i], ARGV[2 * i - 2], ARGV[2 * i - 1]
  redis.call('ZREMRANGEBYSCORE', ukey, '-inf', now)
  local online = redis.call('ZCARD', ukey) > 0
  redis.call('ZADD', ukey, exp, conn)
  local top = redis.call('ZRANGE', ukey, -1, -1, 'WITHSCORES')
  redis.call('PEXPIRE', ukey, math.max(1, tonumber(top[2]) - now))
  local score = redis.call('ZSCORE', KEYS[1], user)
  if not score or tonumber(score) < tonumber(top[2]) then
    redis.call('ZADD', KEYS[1], top[2], user)
  end
  if i == 2 and not online then
    first = 1
  end
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local top = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
if top[2] then
  redis.call('PEXPIRE', KEYS[1], math.max(1, tonumber(top[2]) - now))
end
return first
";

/// KEYS[1] = users, KEYS[2] = the user's key; ARGV[1] = user, ARGV[2] = conn.
/// Returns 1 when the user has no live connection left.
const LEAVE: &str = r"
redis.call('ZREM', KEYS[2], ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
local top = redis.call('ZRANGE', KEYS[2], -1, -1, 'WITHSCORES')
if not top[2] then
  redis.call('ZREM', KEYS[1], ARGV[1])
  return 1
end
redis.call('ZADD', KEYS[1], top[2], ARGV[1])
return 0
";

/// KEYS[1] = users. Returns the users with a live connection.
const LIST: &str = r"
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
return redis.call('ZRANGE', KEYS[1], 0, -1)
";

/// Entries per `join_many` script call: Redis runs nothing else while one runs.
const JOIN_MANY_CHUNK: usize = 500;

/// Presence in Redis; shared by every instance on the same server and prefix.
pub struct RedisPresence {
    client: RedisClient,
    join: redis::Script,
    leave: redis::Script,
    list: redis::Script,
}

impl RedisPresence {
    /// Presence over `client`.
    pub fn new(client: RedisClient) -> Self {
        Self {
            client,
            join: redis::Script::new(&format!("{NOW}{JOIN}")),
            leave: redis::Script::new(&format!("{NOW}{LEAVE}")),
            list: redis::Script::new(&format!("{NOW}{LIST}")),
        }
    }

    fn users_key(&self, room: &str) -> String {
        self.client.tagged_key(&["presence", room], &["users"])
    }

    fn user_key(&self, room: &str, user: &str) -> String {
        self.client.tagged_key(&["presence", room], &["u", user])
    }
}

#[async_trait]
impl Presence for RedisPresence {
    async fn join(
        &self,
        room: &str,
        user: &str,
        conn: &str,
        ttl: Duration,
    ) -> Result<bool, BackendError> {
        let mut invocation = self.join.prepare_invoke();
        invocation
            .key(self.users_key(room))
            .key(self.user_key(room, user))
            .arg(px(ttl))
            .arg(user)
            .arg(conn);
        Ok(self.client.run_script::<i64>(&invocation).await? == 1)
    }

    async fn join_many(
        &self,
        room: &str,
        entries: &[Entry],
        ttl: Duration,
    ) -> Result<(), BackendError> {
        let users = self.users_key(room);
        for chunk in entries.chunks(JOIN_MANY_CHUNK) {
            let mut invocation = self.join.prepare_invoke();
            invocation.key(&users).arg(px(ttl));
            for entry in chunk {
                invocation
                    .key(self.user_key(room, &entry.user))
                    .arg(&entry.user)
                    .arg(&entry.conn);
            }
            self.client.run_script::<i64>(&invocation).await?;
        }
        Ok(())
    }

    async fn leave(&self, room: &str, user: &str, conn: &str) -> Result<bool, BackendError> {
        let mut invocation = self.leave.prepare_invoke();
        invocation
            .key(self.users_key(room))
            .key(self.user_key(room, user))
            .arg(user)
            .arg(conn);
        Ok(self.client.run_script::<i64>(&invocation).await? == 1)
    }

    async fn list(&self, room: &str) -> Result<Vec<String>, BackendError> {
        let mut invocation = self.list.prepare_invoke();
        invocation.key(self.users_key(room));
        let mut users: Vec<String> = self.client.run_script(&invocation).await?;
        users.sort();
        users.dedup();
        Ok(users)
    }

    async fn check(&self) -> Result<(), BackendError> {
        self.client.ping().await
    }
}
