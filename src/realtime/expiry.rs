//! A Socket.IO connection lasts as long as the credentials it authenticated with: when
//! its access token expires (unless the client sent a fresh one with `auth:renew`) or
//! its session ends, the socket gets `session:ended` (`token_expired` or
//! `session_expired`) and is closed. A logout or a revoked login closes it at once
//! through the hub (`session:ended` on the realtime channel); this module covers the
//! endings nobody announces.
//!
//! One ordered set of deadlines per instance and one sweep a second, rather than a
//! timer task per socket: an idle connection then costs one set entry.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use socketioxide::SocketIo;
use socketioxide::socket::Sid;
use tokio_util::sync::CancellationToken;

use super::Ctx;
use super::handlers::conn_of;
use super::resume::Conn;
use crate::clock;
use crate::events::SessionEnded;
use crate::usecase::identity::Principal;

/// How often deadlines are checked: a socket ends at most this long after its
/// credentials did.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// How long to wait before checking again when the session store cannot answer: an
/// outage of the store does not end anyone's connection.
const RETRY_AFTER_MICROS: i64 = 5_000_000;

/// What a connection's credentials allow, and until when.
pub(crate) struct Lease {
    /// Storage key of the session the socket belongs to.
    session_key: Mutex<String>,
    /// The access token's expiry (µs since the epoch); `i64::MAX` for a cookie.
    token_expires_at: AtomicI64,
    /// The next check (µs since the epoch): the sooner of the two ends.
    deadline: AtomicI64,
}

impl Lease {
    /// The lease of a connection authenticated as `principal`.
    pub(crate) fn of(principal: &Principal) -> Self {
        Self {
            session_key: Mutex::new(principal.session_key.clone()),
            token_expires_at: AtomicI64::new(principal.token_expires_at.unwrap_or(i64::MAX)),
            deadline: AtomicI64::new(principal.expires_at),
        }
    }

    fn session_key(&self) -> String {
        self.session_key
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// The deadlines of this instance's connections, soonest first.
#[derive(Default)]
pub(crate) struct Expiries {
    due: Mutex<BTreeSet<(i64, Sid)>>,
}

impl Expiries {
    fn set(&self) -> std::sync::MutexGuard<'_, BTreeSet<(i64, Sid)>> {
        self.due.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts watching a new connection.
    pub(crate) fn watch(&self, sid: Sid, conn: &Conn) {
        let deadline = conn.lease.deadline.load(Ordering::Relaxed);
        self.set().insert((deadline, sid));
    }

    /// Stops watching a closed connection.
    pub(crate) fn forget(&self, sid: Sid, conn: &Conn) {
        let deadline = conn.lease.deadline.load(Ordering::Relaxed);
        self.set().remove(&(deadline, sid));
    }

    /// Moves a connection's next check to `deadline`.
    fn reschedule(&self, sid: Sid, conn: &Conn, deadline: i64) {
        let mut set = self.set();
        let before = conn.lease.deadline.swap(deadline, Ordering::Relaxed);
        set.remove(&(before, sid));
        set.insert((deadline, sid));
    }

    /// Takes the connections whose check is due at `now`.
    fn take_due(&self, now: i64) -> Vec<(i64, Sid)> {
        let mut set = self.set();
        let later = set.split_off(&(now.saturating_add(1), Sid::ZERO));
        std::mem::replace(&mut *set, later).into_iter().collect()
    }
}

/// `auth:renew {token}`: a fresh access token of the same login extends the socket's
/// lease to that token's expiry (or the session's end, if sooner).
pub(crate) fn renew(ctx: &Ctx, sid: Sid, conn: &Conn, principal: &Principal) {
    *conn
        .lease
        .session_key
        .lock()
        .unwrap_or_else(|p| p.into_inner()) = principal.session_key.clone();
    conn.lease.token_expires_at.store(
        principal.token_expires_at.unwrap_or(i64::MAX),
        Ordering::Relaxed,
    );
    ctx.expiries.reschedule(sid, conn, principal.expires_at);
}

/// Checks due connections every [`SWEEP_EVERY`] until `stop`.
pub(crate) async fn sweep_loop(ctx: Ctx, io: SocketIo, stop: CancellationToken) {
    let mut ticker = tokio::time::interval(SWEEP_EVERY);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = stop.cancelled() => return,
        }
        let now = clock::now_micros();
        for (deadline, sid) in ctx.expiries.take_due(now) {
            let Some(socket) = io.get_socket(sid) else {
                continue;
            };
            let Some(conn) = conn_of(&socket) else {
                continue;
            };
            // Renewed since this entry was taken: its new entry is in the set.
            if conn.lease.deadline.load(Ordering::Relaxed) != deadline {
                continue;
            }
            match check(&ctx, &conn, now).await {
                Verdict::Until(next) => ctx.expiries.reschedule(sid, &conn, next),
                Verdict::Ended(reason) => {
                    metrics::counter!("shoal_realtime_leases_ended_total", "reason" => reason)
                        .increment(1);
                    let ended = SessionEnded {
                        family_id: conn.family_id,
                        reason: reason.into(),
                    };
                    let _ = socket.emit("session:ended", &ended);
                    let _ = socket.disconnect();
                }
            }
        }
    }
}

enum Verdict {
    /// Still valid; check again then.
    Until(i64),
    /// Over, for this reason.
    Ended(&'static str),
}

/// Whether a connection whose deadline passed may go on: the token (if any) must not
/// have expired, and the session must still be there (a refresh may have extended it).
async fn check(ctx: &Ctx, conn: &Arc<Conn>, now: i64) -> Verdict {
    let token_expires_at = conn.lease.token_expires_at.load(Ordering::Relaxed);
    if token_expires_at <= now {
        return Verdict::Ended("token_expired");
    }
    let sessions = &ctx.state.sessions;
    match sessions.load(&conn.lease.session_key()).await {
        Ok(Some(record)) if record.user_id == conn.user_id => {
            let next = sessions.expires_at(&record).min(token_expires_at);
            if next > now {
                Verdict::Until(next)
            } else {
                Verdict::Ended("session_expired")
            }
        }
        Ok(_) => Verdict::Ended("session_expired"),
        Err(e) => {
            tracing::warn!(error = %e, "session store unavailable; checking the socket's session again later");
            Verdict::Until(now.saturating_add(RETRY_AFTER_MICROS))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_what_is_due_is_taken_soonest_first() {
        let expiries = Expiries::default();
        let sids: Vec<Sid> = (0..3).map(|_| Sid::new()).collect();
        for (deadline, sid) in [(30, sids[0]), (10, sids[1]), (20, sids[2])] {
            expiries.set().insert((deadline, sid));
        }
        assert!(expiries.take_due(9).is_empty());
        assert_eq!(expiries.take_due(20), vec![(10, sids[1]), (20, sids[2])]);
        assert_eq!(expiries.take_due(i64::MAX), vec![(30, sids[0])]);
        assert!(expiries.take_due(i64::MAX).is_empty());
    }
}
