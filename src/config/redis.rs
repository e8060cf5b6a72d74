//! Redis: one server, Sentinel or Cluster. Configuring any of them is what makes an
//! instance distributed.

use std::path::PathBuf;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::{ConfigError, Key, List, mask_url};

/// This section's keys.
pub const KEYS: &[Key] = &[
    Key {
        name: "REDIS_URL",
        default: "unset",
        meaning: "set = distributed mode (`redis://`, `rediss://`, `unix://`)",
    },
    Key {
        name: "REDIS_SENTINELS",
        default: "unset",
        meaning: "Sentinel instead of a fixed URL: comma list of `host:port` (with `REDIS_SENTINEL_MASTER`)",
    },
    Key {
        name: "REDIS_SENTINEL_MASTER",
        default: "unset",
        meaning: "the master name the sentinels monitor",
    },
    Key {
        name: "REDIS_CLUSTER_NODES",
        default: "unset",
        meaning: "Redis Cluster instead of one server: comma list of seed `redis://` URLs (any masters; the rest is discovered). Excludes `REDIS_URL` and `REDIS_SENTINELS`",
    },
    Key {
        name: "REDIS_TLS_CA_FILE",
        default: "unset (the system's roots)",
        meaning: "PEM file of the CA that signed the Redis servers' certificates, for `rediss://` to a private CA (managed Redis); used for standalone, Sentinel and Cluster",
    },
    Key {
        name: "REDIS_KEY_PREFIX",
        default: "`shoal`",
        meaning: "prefix of every key and channel",
    },
];

/// The raw keys; field names are the lower-cased keys.
#[derive(Debug, Deserialize)]
pub(super) struct Raw {
    redis_url: Option<String>,
    #[serde(default)]
    redis_sentinels: List,
    redis_sentinel_master: Option<String>,
    #[serde(default)]
    redis_cluster_nodes: List,
    #[serde(default = "default_key_prefix")]
    redis_key_prefix: String,
    redis_tls_ca_file: Option<PathBuf>,
}

fn default_key_prefix() -> String {
    "shoal".into()
}

/// Where Redis lives, when it is configured at all.
#[derive(Debug, Clone)]
pub enum RedisTarget {
    /// A single server: `redis://…`, `rediss://…`, `unix://…`.
    Url(SecretString),
    /// A Redis Cluster: the URLs (`redis://host:port`) of some of its nodes; the rest
    /// of the topology is discovered from them.
    Cluster {
        /// Seed nodes.
        nodes: Vec<SecretString>,
    },
    /// Sentinels that know the current master.
    Sentinel {
        /// `host:port` or `redis://host:port` of each sentinel.
        sentinels: Vec<String>,
        /// The master name the sentinels monitor.
        master: String,
        /// Optional URL whose credentials/db are used for the master connection.
        url: Option<SecretString>,
    },
}

/// The Redis section.
#[derive(Debug, Clone)]
pub struct RedisConfig {
    /// Redis, when configured: its presence is what makes this instance distributed.
    pub target: Option<RedisTarget>,
    /// Prefix of every Redis key and channel, so that deployments can share a server.
    pub key_prefix: String,
    /// The CA that signed the servers' certificates (PEM), for `rediss://` to a
    /// private CA; `None` trusts the system's roots.
    pub tls_ca: Option<TlsCa>,
}

/// A CA bundle read from `REDIS_TLS_CA_FILE`.
#[derive(Clone)]
pub struct TlsCa {
    /// The file it came from.
    pub path: PathBuf,
    /// Its PEM bytes.
    pub pem: Vec<u8>,
}

impl std::fmt::Debug for TlsCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsCa").field("path", &self.path).finish()
    }
}

impl RedisTarget {
    /// Whether any address of this target is `rediss://` (TLS).
    pub fn uses_tls(&self) -> bool {
        let tls = |s: &str| s.starts_with("rediss://");
        match self {
            RedisTarget::Url(url) => tls(url.expose_secret()),
            RedisTarget::Cluster { nodes } => nodes.iter().any(|n| tls(n.expose_secret())),
            RedisTarget::Sentinel { sentinels, url, .. } => {
                sentinels.iter().any(|s| tls(s))
                    || url.as_ref().is_some_and(|u| tls(u.expose_secret()))
            }
        }
    }
}

impl RedisConfig {
    pub(super) fn from_raw(mut raw: Raw) -> Result<Self, ConfigError> {
        if !raw.redis_cluster_nodes.0.is_empty() {
            if !raw.redis_sentinels.0.is_empty() || raw.redis_url.is_some() {
                return Err(ConfigError::new(
                    "REDIS_CLUSTER_NODES",
                    "cannot be combined with REDIS_URL or REDIS_SENTINELS",
                ));
            }
            if let Some(bad) = raw
                .redis_cluster_nodes
                .0
                .iter()
                .find(|n| !(n.starts_with("redis://") || n.starts_with("rediss://")))
            {
                return Err(ConfigError::new(
                    "REDIS_CLUSTER_NODES",
                    format!(
                        "every node must be a redis:// or rediss:// URL, got {}",
                        mask_url(bad)
                    ),
                ));
            }
        }
        let master_without_sentinels = || {
            ConfigError::new(
                "REDIS_SENTINELS",
                "is required when REDIS_SENTINEL_MASTER is set",
            )
        };
        let cluster_nodes = std::mem::take(&mut raw.redis_cluster_nodes.0);
        let target = match (raw.redis_url, raw.redis_sentinels.0.is_empty()) {
            (None, true) if !cluster_nodes.is_empty() => {
                if raw.redis_sentinel_master.is_some() {
                    return Err(master_without_sentinels());
                }
                Some(RedisTarget::Cluster {
                    nodes: cluster_nodes.into_iter().map(SecretString::from).collect(),
                })
            }
            (url, false) => {
                let master = raw.redis_sentinel_master.ok_or_else(|| {
                    ConfigError::new(
                        "REDIS_SENTINEL_MASTER",
                        "is required when REDIS_SENTINELS is set",
                    )
                })?;
                Some(RedisTarget::Sentinel {
                    sentinels: raw.redis_sentinels.0,
                    master,
                    url: url.map(SecretString::from),
                })
            }
            (Some(url), true) => {
                if !(url.starts_with("redis://")
                    || url.starts_with("rediss://")
                    || url.starts_with("redis+unix://")
                    || url.starts_with("unix://"))
                {
                    return Err(ConfigError::new(
                        "REDIS_URL",
                        "must start with redis://, rediss:// or unix://",
                    ));
                }
                Some(RedisTarget::Url(SecretString::from(url)))
            }
            (None, true) => {
                if raw.redis_sentinel_master.is_some() {
                    return Err(master_without_sentinels());
                }
                None
            }
        };
        if raw.redis_key_prefix.is_empty() || raw.redis_key_prefix.contains(char::is_whitespace) {
            return Err(ConfigError::new(
                "REDIS_KEY_PREFIX",
                "must be non-empty and contain no whitespace",
            ));
        }
        let tls_ca = match raw.redis_tls_ca_file {
            None => None,
            Some(path) => {
                let pem = std::fs::read(&path).map_err(|e| {
                    ConfigError::new(
                        "REDIS_TLS_CA_FILE",
                        format!("cannot read {}: {e}", path.display()),
                    )
                })?;
                if !pem.windows(27).any(|w| w == b"-----BEGIN CERTIFICATE-----") {
                    return Err(ConfigError::new(
                        "REDIS_TLS_CA_FILE",
                        format!("{} holds no PEM certificate", path.display()),
                    ));
                }
                if target.is_none() {
                    return Err(ConfigError::new(
                        "REDIS_TLS_CA_FILE",
                        "needs REDIS_URL, REDIS_SENTINELS or REDIS_CLUSTER_NODES",
                    ));
                }
                Some(TlsCa { path, pem })
            }
        };
        Ok(Self {
            target,
            key_prefix: raw.redis_key_prefix,
            tls_ca,
        })
    }

    pub(super) fn describe(&self, out: &mut Vec<(&'static str, String)>) {
        let target = match &self.target {
            None => ("REDIS_URL", "(unset: embedded mode)".to_owned()),
            Some(RedisTarget::Url(url)) => ("REDIS_URL", mask_url(url.expose_secret())),
            Some(RedisTarget::Sentinel {
                sentinels, master, ..
            }) => (
                "REDIS_SENTINELS",
                format!(
                    "{} (master {master})",
                    sentinels
                        .iter()
                        .map(|s| mask_url(s))
                        .collect::<Vec<_>>()
                        .join(",")
                ),
            ),
            Some(RedisTarget::Cluster { nodes }) => (
                "REDIS_CLUSTER_NODES",
                nodes
                    .iter()
                    .map(|n| mask_url(n.expose_secret()))
                    .collect::<Vec<_>>()
                    .join(","),
            ),
        };
        let ca = match &self.tls_ca {
            Some(ca) => ca.path.display().to_string(),
            None => "(unset: the system's roots)".into(),
        };
        out.extend([
            target,
            ("REDIS_TLS_CA_FILE", ca),
            ("REDIS_KEY_PREFIX", self.key_prefix.clone()),
        ]);
    }
}
