//! Socket.IO: message size, presence lifetime, connections per user, room channels.

use std::time::Duration;

use serde::Deserialize;

use super::{ConfigError, Key, secs};

/// This section's keys.
pub const KEYS: &[Key] = &[
    Key {
        name: "REALTIME_MAX_MESSAGE_BYTES",
        default: "16384",
        meaning: "largest chat message body, over Socket.IO `message:send` (error ack) and `POST …/messages` (422); 1 … 1048576",
    },
    Key {
        name: "REALTIME_PRESENCE_TTL",
        default: "30 (s)",
        meaning: "a connection's presence entry lives this long without a refresh (refreshed every third of it; ≥ 3)",
    },
    Key {
        name: "REALTIME_MAX_SOCKETS_PER_USER",
        default: "32",
        meaning: "Socket.IO connections one user may hold open on one instance; the next handshake gets `connect_error` `too_many_connections` (1 … 100000)",
    },
    Key {
        name: "REALTIME_MAX_SOCKETS_PER_IP",
        default: "1000",
        meaning: "Socket.IO connections one client address (an IPv6 /64) may hold open on one instance, all users together; the next handshake gets `connect_error` `too_many_connections` (1 … 100000)",
    },
    Key {
        name: "REALTIME_CHANNEL_LINGER",
        default: "10 (s)",
        meaning: "an instance stays subscribed to a room's channel this long after its last socket there left, so that a socket that comes and goes does not subscribe and unsubscribe each time (1 … 3600)",
    },
];

/// The raw keys; field names are the lower-cased keys.
#[derive(Debug, Deserialize)]
pub(super) struct Raw {
    #[serde(default = "default_max_message_bytes")]
    realtime_max_message_bytes: usize,
    #[serde(default = "default_presence_ttl")]
    realtime_presence_ttl: u64,
    #[serde(default = "default_max_sockets_per_user")]
    realtime_max_sockets_per_user: usize,
    #[serde(default = "default_max_sockets_per_ip")]
    realtime_max_sockets_per_ip: usize,
    #[serde(default = "default_channel_linger")]
    realtime_channel_linger: u64,
}

fn default_max_message_bytes() -> usize {
    16 * 1024
}
fn default_presence_ttl() -> u64 {
    30
}
fn default_max_sockets_per_user() -> usize {
    32
}
fn default_max_sockets_per_ip() -> usize {
    1000
}
fn default_channel_linger() -> u64 {
    10
}

/// The realtime section.
#[derive(Debug, Clone)]
pub struct RealtimeConfig {
    /// Largest chat message body in bytes, whichever transport posts it.
    pub max_message_bytes: usize,
    /// How long a Socket.IO connection stays in `presence:list` without a refresh
    /// (refreshed every third of it while connected, so a dead instance's entries go).
    pub presence_ttl: Duration,
    /// Socket.IO connections one user may hold on one instance: enough for many tabs
    /// and devices, few enough that one account cannot hold an instance's memory and
    /// file descriptors.
    pub max_sockets_per_user: usize,
    /// Socket.IO connections one client address may hold on one instance: room for an
    /// office behind one NAT, not for one machine opening thousands.
    pub max_sockets_per_ip: usize,
    /// How long this instance keeps a room's channel after its last socket there left.
    pub channel_linger: Duration,
}

impl RealtimeConfig {
    pub(super) fn from_raw(raw: Raw) -> Result<Self, ConfigError> {
        if !(1..=1024 * 1024).contains(&raw.realtime_max_message_bytes) {
            return Err(ConfigError::new(
                "REALTIME_MAX_MESSAGE_BYTES",
                "must be 1 to 1048576",
            ));
        }
        if raw.realtime_presence_ttl < 3 {
            return Err(ConfigError::new(
                "REALTIME_PRESENCE_TTL",
                "must be at least 3 (seconds)",
            ));
        }
        if !(1..=100_000).contains(&raw.realtime_max_sockets_per_user) {
            return Err(ConfigError::new(
                "REALTIME_MAX_SOCKETS_PER_USER",
                "must be 1 to 100000",
            ));
        }
        if !(1..=100_000).contains(&raw.realtime_max_sockets_per_ip) {
            return Err(ConfigError::new(
                "REALTIME_MAX_SOCKETS_PER_IP",
                "must be 1 to 100000",
            ));
        }
        if !(1..=3600).contains(&raw.realtime_channel_linger) {
            return Err(ConfigError::new(
                "REALTIME_CHANNEL_LINGER",
                "must be 1 to 3600 (seconds)",
            ));
        }
        Ok(Self {
            channel_linger: Duration::from_secs(raw.realtime_channel_linger),
            max_sockets_per_ip: raw.realtime_max_sockets_per_ip,
            max_message_bytes: raw.realtime_max_message_bytes,
            presence_ttl: Duration::from_secs(raw.realtime_presence_ttl),
            max_sockets_per_user: raw.realtime_max_sockets_per_user,
        })
    }

    pub(super) fn describe(&self, out: &mut Vec<(&'static str, String)>) {
        out.extend([
            (
                "REALTIME_MAX_MESSAGE_BYTES",
                self.max_message_bytes.to_string(),
            ),
            ("REALTIME_PRESENCE_TTL", secs(self.presence_ttl)),
            (
                "REALTIME_MAX_SOCKETS_PER_USER",
                self.max_sockets_per_user.to_string(),
            ),
            (
                "REALTIME_MAX_SOCKETS_PER_IP",
                self.max_sockets_per_ip.to_string(),
            ),
            ("REALTIME_CHANNEL_LINGER", secs(self.channel_linger)),
        ]);
    }
}
