//! A circuit breaker for Redis commands: after two commands in a row get no answer
//! (no reply within [`super::COMMAND_TIMEOUT`], or no connection), further commands fail
//! at once, and one probe command at a time finds out when Redis answers again.
//!
//! Why: every Redis backend has a fallback for a Redis that does not answer
//! (docs/operations.md, "When Redis is down"), but without a breaker each request
//! first waits for its own attempt to fail. Against a *hung* Redis (a frozen process,
//! a network path that drops packets) that is the whole command timeout, 2 s; against a
//! stopped one it is the connection manager's reconnect with its retries, about 1 s
//! measured here (`scripts/fault-redis.sh`: outage p99 1,080 ms before the breaker).
//! Error replies (a wrong type, `READONLY` from a demoted master) are answers and do
//! not trip it.
//!
//! Written here rather than taken from `failsafe` (the maintained crate for this):
//! failsafe's half-open state lets every call through until one fails, and against a
//! hung Redis that means every request waits the full timeout again once per pause.
//! Here exactly one caller probes while the others keep failing fast, which takes a
//! few atomics.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Consecutive unanswered commands that open the breaker. Two, not one: a single slow
/// answer or dropped connection can be a blip (a fork for a snapshot, an idle
/// connection closed by a proxy); two in a row from a server whose healthy round trip
/// is well under a millisecond are not.
pub(super) const TRIP_AFTER: u32 = 2;

/// How long the breaker stays open before one command probes Redis again. Short, so
/// that the way back after Redis recovers costs at most this long.
pub(super) const PAUSE: Duration = Duration::from_millis(500);

/// A command may be sent: its outcome must be recorded with [`Ticket::record`]. A probe
/// ticket dropped unrecorded (its request was cancelled) lets the next caller probe.
#[derive(Debug)]
pub(super) struct Ticket<'a> {
    breaker: &'a Breaker,
    probe: bool,
}

/// The breaker is open: fail the command at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Rejected;

/// How a sent command ended, as far as the breaker cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Outcome {
    /// Redis answered, with a value or an error reply.
    Answered,
    /// No answer: the command timed out, or there was no connection to send it on.
    Unanswered,
}

/// The breaker of one Redis client (shared by all its clones).
#[derive(Debug)]
pub(super) struct Breaker {
    started: Instant,
    /// Milliseconds since `started` until which the breaker is open; 0 when closed.
    open_until_ms: AtomicU64,
    consecutive_misses: AtomicU32,
    probing: AtomicBool,
}

impl Default for Breaker {
    fn default() -> Self {
        Breaker {
            started: Instant::now(),
            open_until_ms: AtomicU64::new(0),
            consecutive_misses: AtomicU32::new(0),
            probing: AtomicBool::new(false),
        }
    }
}

impl Breaker {
    /// Whether a command may be sent now: closed, or open with the pause over and no
    /// other probe out (this one becomes the probe).
    pub(super) fn permit(&self) -> Result<Ticket<'_>, Rejected> {
        let until = self.open_until_ms.load(Ordering::Acquire);
        if until == 0 {
            return Ok(Ticket {
                breaker: self,
                probe: false,
            });
        }
        if self.now_ms() < until || self.probing.swap(true, Ordering::AcqRel) {
            metrics::counter!("shoal_redis_rejected_total").increment(1);
            return Err(Rejected);
        }
        Ok(Ticket {
            breaker: self,
            probe: true,
        })
    }

    /// Whether commands are being refused right now.
    #[cfg(test)]
    fn is_open(&self) -> bool {
        self.open_until_ms.load(Ordering::Acquire) != 0
    }

    fn record(&self, probe: bool, outcome: Outcome) {
        match outcome {
            Outcome::Answered => {
                self.consecutive_misses.store(0, Ordering::Release);
                if probe {
                    self.open_until_ms.store(0, Ordering::Release);
                    self.probing.store(false, Ordering::Release);
                    metrics::gauge!("shoal_redis_breaker_open").set(0.0);
                    tracing::info!("redis: answering again, commands resume");
                }
            }
            Outcome::Unanswered => {
                metrics::counter!("shoal_redis_unanswered_total").increment(1);
                let misses = self.consecutive_misses.fetch_add(1, Ordering::AcqRel) + 1;
                if probe || misses >= TRIP_AFTER {
                    self.open();
                }
                if probe {
                    self.probing.store(false, Ordering::Release);
                }
            }
        }
    }

    fn open(&self) {
        // PAUSE is positive, so `until` is never 0 (which means closed).
        let until = self.now_ms() + u64::try_from(PAUSE.as_millis()).unwrap_or(u64::MAX);
        let was = self.open_until_ms.swap(until, Ordering::AcqRel);
        if was == 0 {
            metrics::counter!("shoal_redis_breaker_opened_total").increment(1);
            metrics::gauge!("shoal_redis_breaker_open").set(1.0);
            tracing::warn!(
                pause_ms = PAUSE.as_millis() as u64,
                "redis: commands get no answer; failing them at once, one probe at a time"
            );
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

impl Ticket<'_> {
    /// Records how the command ended.
    pub(super) fn record(mut self, outcome: Outcome) {
        self.breaker.record(self.probe, outcome);
        self.probe = false;
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        if self.probe {
            self.breaker.probing.store(false, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A breaker made ten seconds ago, so that a reopening instant of 1 ms is past.
    fn breaker() -> Breaker {
        Breaker {
            started: Instant::now()
                .checked_sub(Duration::from_secs(10))
                .expect("the clock is past its first ten seconds"),
            ..Breaker::default()
        }
    }

    fn miss(b: &Breaker) {
        b.permit().expect("permitted").record(Outcome::Unanswered);
    }

    /// Moves the end of the pause into the past instead of sleeping through it.
    fn end_pause(b: &Breaker) {
        b.open_until_ms.store(1, Ordering::Release);
    }

    #[test]
    fn one_miss_does_not_open_two_in_a_row_do() {
        let b = breaker();
        miss(&b);
        b.permit().expect("still closed").record(Outcome::Answered);
        miss(&b);
        assert!(!b.is_open(), "an answer in between resets the count");
        miss(&b);
        assert!(b.is_open());
        assert_eq!(b.permit().err(), Some(Rejected));
    }

    #[test]
    fn after_the_pause_one_caller_probes_and_its_answer_closes() {
        let b = breaker();
        miss(&b);
        miss(&b);
        end_pause(&b);
        let probe = b.permit().expect("the probe");
        assert_eq!(b.permit().err(), Some(Rejected), "only one probe at a time");
        probe.record(Outcome::Answered);
        assert!(!b.is_open());
        assert!(b.permit().is_ok());
    }

    #[test]
    fn an_unanswered_probe_reopens() {
        let b = breaker();
        miss(&b);
        miss(&b);
        end_pause(&b);
        b.permit().expect("the probe").record(Outcome::Unanswered);
        assert_eq!(b.permit().err(), Some(Rejected));
        end_pause(&b);
        assert!(b.permit().is_ok(), "the next pause ends in a new probe");
    }

    #[test]
    fn a_cancelled_probe_lets_the_next_caller_probe() {
        let b = breaker();
        miss(&b);
        miss(&b);
        end_pause(&b);
        drop(b.permit().expect("the probe"));
        assert!(b.permit().is_ok());
    }
}
