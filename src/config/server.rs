//! The server: where it listens, HTTP limits, which proxies and origins it trusts,
//! and the operator token.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;

use super::{ConfigError, Key, List, millis, positive, secs};

/// This section's keys.
pub const KEYS: &[Key] = &[
    Key {
        name: "HOST",
        default: "`0.0.0.0`",
        meaning: "interface to bind",
    },
    Key {
        name: "PORT",
        default: "`8080`",
        meaning: "port (0 = any free port)",
    },
    Key {
        name: "INSTANCE_ID",
        default: "`{hostname}-{pid}-{6 random}`",
        meaning: "shown in `X-Instance-Id`, logs, the registry (1-128 visible ASCII characters)",
    },
    Key {
        name: "DATA_DIR",
        default: "`data`",
        meaning: "embedded mode: the SQLite file and generated secrets",
    },
    Key {
        name: "REQUEST_TIMEOUT",
        default: "30 (s)",
        meaning: "bound on one request (then 503 `request_timeout`)",
    },
    Key {
        name: "BODY_LIMIT",
        default: "1048576 (bytes)",
        meaning: "larger bodies get 413",
    },
    Key {
        name: "HEALTH_CHECK_TIMEOUT",
        default: "1000 (ms)",
        meaning: "bound on each dependency check of readiness",
    },
    Key {
        name: "TRUSTED_PROXIES",
        default: "empty",
        meaning: "IPs/CIDRs whose `X-Forwarded-For` is believed",
    },
    Key {
        name: "CORS_ORIGINS",
        default: "empty (no CORS)",
        meaning: "comma list of origins, or `*` (then without credentials)",
    },
    Key {
        name: "ADMIN_TOKEN",
        default: "unset",
        meaning: "`X-Admin-Token` value for `/api/admin/*` (≥ 16 chars); unset = those routes are 404",
    },
];

/// The raw keys; field names are the lower-cased keys.
#[derive(Debug, Deserialize)]
pub(super) struct Raw {
    #[serde(default = "default_host")]
    host: IpAddr,
    #[serde(default = "default_port")]
    port: u16,
    instance_id: Option<String>,
    #[serde(default = "default_data_dir")]
    data_dir: PathBuf,
    #[serde(default = "default_request_timeout")]
    request_timeout: u64,
    #[serde(default = "default_body_limit")]
    body_limit: usize,
    #[serde(default = "default_health_check_timeout_ms")]
    health_check_timeout: u64,
    #[serde(default)]
    trusted_proxies: List,
    #[serde(default)]
    cors_origins: List,
    admin_token: Option<String>,
}

fn default_host() -> IpAddr {
    IpAddr::V4(Ipv4Addr::UNSPECIFIED)
}
fn default_port() -> u16 {
    8080
}
fn default_data_dir() -> PathBuf {
    PathBuf::from("data")
}
fn default_request_timeout() -> u64 {
    30
}
fn default_body_limit() -> usize {
    1024 * 1024
}
fn default_health_check_timeout_ms() -> u64 {
    1000
}

/// The server section.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Interface to bind.
    pub host: IpAddr,
    /// TCP port; 0 picks a free one (tests).
    pub port: u16,
    /// Explicit instance id; `None` means `{hostname}-{pid}-{6 random}`.
    pub instance_id: Option<String>,
    /// Where embedded mode keeps its database file and generated secrets.
    pub data_dir: PathBuf,
    /// Bound on one HTTP request.
    pub request_timeout: Duration,
    /// Largest accepted request body in bytes.
    pub body_limit: usize,
    /// Bound on one readiness/health check of a dependency.
    pub health_check_timeout: Duration,
    /// Peers whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<IpNet>,
    /// Origins allowed by CORS; empty means no CORS headers at all.
    pub cors_origins: Vec<String>,
    /// `X-Admin-Token` value that opens `/api/admin/*`; unset = those routes are 404.
    pub admin_token: Option<SecretString>,
    /// Whether this process serves the API (`shoal worker` clears it: health and
    /// metrics only). Not an environment key: chosen by the subcommand.
    pub serve_api: bool,
    /// Bind the port with SO_REUSEPORT: set for the supervisor's workers (never from
    /// the environment), which share one port.
    pub reuse_port: bool,
}

impl ServerConfig {
    pub(super) fn from_raw(raw: Raw) -> Result<Self, ConfigError> {
        positive("REQUEST_TIMEOUT", raw.request_timeout)?;
        positive("BODY_LIMIT", raw.body_limit as u64)?;
        positive("HEALTH_CHECK_TIMEOUT", raw.health_check_timeout)?;
        if let Some(id) = &raw.instance_id
            && (id.is_empty() || id.len() > 128 || !id.chars().all(|c| c.is_ascii_graphic()))
        {
            return Err(ConfigError::new(
                "INSTANCE_ID",
                "must be 1-128 visible ASCII characters",
            ));
        }
        let trusted_proxies = raw
            .trusted_proxies
            .0
            .iter()
            .map(|s| {
                IpNet::parse(s).ok_or_else(|| {
                    ConfigError::new("TRUSTED_PROXIES", format!("{s:?} is not an IP or CIDR"))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        for origin in &raw.cors_origins.0 {
            if origin != "*" && !(origin.starts_with("http://") || origin.starts_with("https://")) {
                return Err(ConfigError::new(
                    "CORS_ORIGINS",
                    format!("{origin:?} must be * or start with http:// or https://"),
                ));
            }
        }
        if raw.admin_token.as_ref().is_some_and(|t| t.len() < 16) {
            return Err(ConfigError::new(
                "ADMIN_TOKEN",
                "must be at least 16 characters",
            ));
        }
        Ok(Self {
            host: raw.host,
            port: raw.port,
            instance_id: raw.instance_id,
            data_dir: raw.data_dir,
            request_timeout: Duration::from_secs(raw.request_timeout),
            body_limit: raw.body_limit,
            health_check_timeout: Duration::from_millis(raw.health_check_timeout),
            trusted_proxies,
            cors_origins: raw.cors_origins.0,
            admin_token: raw.admin_token.map(SecretString::from),
            serve_api: true,
            reuse_port: false,
        })
    }

    pub(super) fn describe(&self, out: &mut Vec<(&'static str, String)>) {
        out.extend([
            ("HOST", self.host.to_string()),
            ("PORT", self.port.to_string()),
            (
                "INSTANCE_ID",
                self.instance_id
                    .clone()
                    .unwrap_or_else(|| "(hostname-pid-random)".into()),
            ),
            ("DATA_DIR", self.data_dir.display().to_string()),
            ("REQUEST_TIMEOUT", secs(self.request_timeout)),
            ("BODY_LIMIT", self.body_limit.to_string()),
            ("HEALTH_CHECK_TIMEOUT", millis(self.health_check_timeout)),
            (
                "TRUSTED_PROXIES",
                self.trusted_proxies
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(","),
            ),
            ("CORS_ORIGINS", self.cors_origins.join(",")),
            (
                "ADMIN_TOKEN",
                if self.admin_token.is_some() {
                    "***"
                } else {
                    "(unset)"
                }
                .to_owned(),
            ),
        ]);
    }
}

/// An IPv4/IPv6 network in CIDR notation (`10.0.0.0/8`, `::1/128`, `127.0.0.1`).
///
/// Hand-written because it is twelve lines and `TRUSTED_PROXIES` needs nothing more
/// than containment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl IpNet {
    /// Parses `addr` or `addr/prefix`.
    pub fn parse(s: &str) -> Option<Self> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a.parse::<IpAddr>().ok()?, Some(p.parse::<u8>().ok()?)),
            None => (s.parse::<IpAddr>().ok()?, None),
        };
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(max);
        (prefix <= max).then_some(Self { addr, prefix })
    }

    /// Whether `ip` is inside this network (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl std::fmt::Display for IpNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_containment() {
        let net = IpNet::parse("10.1.0.0/16").expect("valid cidr");
        assert!(net.contains("10.1.2.3".parse().expect("ip")));
        assert!(!net.contains("10.2.0.1".parse().expect("ip")));
        assert!(net.contains("::ffff:10.1.0.9".parse().expect("ip")));
        let any = IpNet::parse("0.0.0.0/0").expect("valid cidr");
        assert!(any.contains("8.8.8.8".parse().expect("ip")));
    }
}
