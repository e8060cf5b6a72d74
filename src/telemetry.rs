//! Logging, set up once per process: JSON (production) or pretty (terminal), with
//! the `LOG_LEVEL` filter. Instance and request ids travel as span fields, so every
//! line inside a request or a background task carries them.
//!
//! JSON lines are flat, the shape log shippers (Loki, Elasticsearch, CloudWatch)
//! index as they are: `timestamp`, `level`, `target`, `message`, the event's fields
//! and the fields of every span it is in (`instance_id`, `request_id`, `method`,
//! `route`, …) side by side at the top level. tracing-subscriber's own JSON format can
//! only nest span fields in a `spans` array; json-subscriber flattens them.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::{Config, LogFormat};

/// The target of the access log: one line per HTTP request (`LOG_ACCESS`).
pub const ACCESS_TARGET: &str = "shoal::access";

/// Installs the global subscriber; a second call (tests) is a no-op.
pub fn init(config: &Config) {
    let filter = EnvFilter::try_new(&config.log.level).unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = match config.log.format {
        LogFormat::Json => {
            let mut json = json_subscriber::JsonLayer::new(std::io::stderr);
            json.with_timer("timestamp", tracing_subscriber::fmt::time::SystemTime)
                .with_level("level")
                .with_target("target")
                .with_flattened_event()
                // Span fields are merged by name (the innermost span wins), so a field
                // set on the application span and again on a request span appears once.
                .with_top_level_flattened_span_list();
            tracing_subscriber::registry()
                .with(filter)
                .with(json)
                .try_init()
        }
        LogFormat::Pretty => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_target(false)
            .finish()
            .try_init(),
    };
}
