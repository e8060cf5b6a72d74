//! Instance identity: `INSTANCE_ID`, or `{hostname}-{pid}-{6 random}` so that two
//! processes on one host (or two restarts of one pod) never share an id.

use std::time::Instant;

use rand::distr::{Alphanumeric, SampleString};

/// Who this process is.
#[derive(Debug, Clone)]
pub struct Instance {
    /// Shown in `X-Instance-Id`, logs and the registry.
    pub id: String,
    /// `id` as the `X-Instance-Id` value, made once (`None` if it is not a valid
    /// header value).
    pub header: Option<axum::http::HeaderValue>,
    /// Crate version.
    pub version: &'static str,
    /// Start time, RFC 3339.
    pub started_at: String,
    /// Start time, for uptime.
    pub started: Instant,
}

impl Instance {
    /// The configured id, or a generated one.
    pub fn new(configured: Option<&str>) -> Self {
        let id = match configured {
            Some(id) => id.to_owned(),
            None => {
                let host = gethostname::gethostname().to_string_lossy().into_owned();
                let host: String = host
                    .chars()
                    .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '.')
                    .collect();
                let suffix = Alphanumeric
                    .sample_string(&mut rand::rng(), 6)
                    .to_ascii_lowercase();
                format!("{host}-{}-{suffix}", std::process::id())
            }
        };
        Self {
            header: axum::http::HeaderValue::from_str(&id).ok(),
            id,
            version: env!("CARGO_PKG_VERSION"),
            started_at: crate::clock::rfc3339(crate::clock::now_micros()),
            started: Instant::now(),
        }
    }

    /// Seconds since start.
    pub fn uptime_secs(&self) -> u64 {
        self.started.elapsed().as_secs()
    }
}
