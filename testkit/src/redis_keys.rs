//! Removing a test's keys from a shared Redis.

use std::time::Duration;

/// Deletes every key of `prefix` at `redis_url`: plain ones (`{prefix}:…`) and
/// hash-tagged ones (`{{prefix}:group}:…`). Best effort: a Redis that is gone has
/// nothing left to clean.
pub fn delete_prefix(redis_url: &str, prefix: &str) {
    let Ok(client) = redis::Client::open(redis_url) else {
        return;
    };
    let Ok(mut conn) = client.get_connection_with_timeout(Duration::from_secs(1)) else {
        return;
    };
    for pattern in [format!("{prefix}:*"), format!("{{{prefix}:*")] {
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(pattern)
            .query(&mut conn)
            .unwrap_or_default();
        if !keys.is_empty() {
            let _: Result<(), _> = redis::cmd("DEL").arg(keys).query(&mut conn);
        }
    }
}
