//! Logs: format and filter.

use serde::Deserialize;

use super::{ConfigError, Key};

/// This section's keys.
pub const KEYS: &[Key] = &[
    Key {
        name: "LOG_FORMAT",
        default: "`pretty`",
        meaning: "`json` for production, `pretty` for a terminal",
    },
    Key {
        name: "LOG_ACCESS",
        default: "true",
        meaning: "one log line per HTTP request (method, route, status, duration, request id; target `shoal::access`); `false` turns it off",
    },
    Key {
        name: "LOG_LEVEL",
        default: "`info`",
        meaning: "a `tracing` filter (`info`, `shoal=debug,sqlx=warn`, …)",
    },
];

/// The raw keys; field names are the lower-cased keys.
#[derive(Debug, Deserialize)]
pub(super) struct Raw {
    #[serde(default = "default_format")]
    log_format: LogFormat,
    #[serde(default = "default_level")]
    log_level: String,
    #[serde(default = "default_access")]
    log_access: bool,
}

fn default_format() -> LogFormat {
    LogFormat::Pretty
}
fn default_level() -> String {
    "info".into()
}
fn default_access() -> bool {
    true
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One JSON object per line, for production log shippers.
    Json,
    /// Human-readable, for a terminal.
    Pretty,
}

/// The log section.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// Log format.
    pub format: LogFormat,
    /// `tracing` filter directive (`info`, `shoal=debug,sqlx=warn`, …).
    pub level: String,
    /// One line per HTTP request (target [`crate::telemetry::ACCESS_TARGET`]).
    pub access: bool,
}

impl LogConfig {
    pub(super) fn from_raw(raw: Raw) -> Result<Self, ConfigError> {
        if tracing_subscriber::EnvFilter::try_new(&raw.log_level).is_err() {
            return Err(ConfigError::new(
                "LOG_LEVEL",
                format!("{:?} is not a valid filter", raw.log_level),
            ));
        }
        Ok(Self {
            format: raw.log_format,
            level: raw.log_level,
            access: raw.log_access,
        })
    }

    pub(super) fn describe(&self, out: &mut Vec<(&'static str, String)>) {
        out.extend([
            ("LOG_FORMAT", format!("{:?}", self.format).to_lowercase()),
            ("LOG_ACCESS", self.access.to_string()),
            ("LOG_LEVEL", self.level.clone()),
        ]);
    }
}
