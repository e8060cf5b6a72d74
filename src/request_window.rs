//! Request rate and p99 of one instance for the dashboard and the registry heartbeat:
//! every request's latency lands in a log-scale histogram of atomic counters, which
//! the heartbeat reads and resets once per period — no lock on the request path.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Buckets per doubling of latency: each bucket is ~19% wide, so a p99 read from it
/// is within 19% of the true value.
const PER_OCTAVE: f64 = 4.0;
/// 1 µs to ~2^32 µs (over an hour) in quarter-octaves.
const BUCKETS: usize = 128;

/// A lock-free latency histogram (see the module doc).
pub struct RequestWindow {
    buckets: [AtomicU64; BUCKETS],
}

/// What one window saw.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WindowStats {
    /// Requests per second.
    pub rate: f64,
    /// 99th percentile latency in milliseconds (bucket upper bound; 0 without requests).
    pub p99_ms: f64,
}

impl RequestWindow {
    /// An empty window.
    pub const fn new() -> Self {
        Self {
            buckets: [const { AtomicU64::new(0) }; BUCKETS],
        }
    }

    /// Counts one request that took `elapsed`.
    pub fn record(&self, elapsed: Duration) {
        let micros = elapsed.as_micros().max(1) as f64;
        let index = ((micros.log2() * PER_OCTAVE) as usize).min(BUCKETS - 1);
        self.buckets[index].fetch_add(1, Ordering::Relaxed);
    }

    /// Reads and resets the window, which lasted `period`.
    pub fn take(&self, period: Duration) -> WindowStats {
        let counts: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| b.swap(0, Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        let secs = period.as_secs_f64().max(0.001);
        let mut p99_ms = 0.0;
        if total > 0 {
            let rank = (total as f64 * 0.99).ceil() as u64;
            let mut seen = 0;
            for (i, n) in counts.iter().enumerate() {
                seen += n;
                if seen >= rank {
                    let upper_micros = 2f64.powf((i + 1) as f64 / PER_OCTAVE);
                    p99_ms = (upper_micros / 1000.0 * 1000.0).round() / 1000.0;
                    break;
                }
            }
        }
        WindowStats {
            rate: (total as f64 / secs * 10.0).round() / 10.0,
            p99_ms,
        }
    }
}

impl Default for RequestWindow {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_and_p99_come_from_the_window_and_it_resets() {
        let w = RequestWindow::new();
        for _ in 0..99 {
            w.record(Duration::from_micros(100));
        }
        w.record(Duration::from_millis(50));
        let stats = w.take(Duration::from_secs(2));
        assert_eq!(stats.rate, 50.0);
        // 99 of 100 are ~100 µs: the p99 is that bucket's upper bound (< 0.12 ms).
        assert!(stats.p99_ms > 0.1 && stats.p99_ms < 0.12, "{stats:?}");
        assert_eq!(w.take(Duration::from_secs(1)).rate, 0.0);
        assert_eq!(w.take(Duration::from_secs(1)).p99_ms, 0.0);
    }
}
