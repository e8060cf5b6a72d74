//! Bounded waits. A test awaits an event where it can; where nothing announces a
//! change (a key expiring, an instance noticed down), it polls. Either way the bound
//! is [`PATIENCE`], which only turns a hang into a failure: it is never a timing
//! assertion.

use std::future::Future;
use std::time::Duration;

/// The upper bound for anything a test awaits.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// How often a bounded wait polls.
pub const POLL: Duration = Duration::from_millis(50);

/// What a probe of [`eventually`] answers: `Some(value)` or `true` once the awaited
/// state is there.
pub trait Outcome {
    /// What [`eventually`] returns.
    type Value;
    /// `Some` once settled.
    fn settled(self) -> Option<Self::Value>;
}

impl<T> Outcome for Option<T> {
    type Value = T;
    fn settled(self) -> Option<T> {
        self
    }
}

impl Outcome for bool {
    type Value = ();
    fn settled(self) -> Option<()> {
        self.then_some(())
    }
}

/// Polls `probe` until it answers `Some` (or `true`), at most [`PATIENCE`]; panics
/// naming `what`. For state changes nobody announces.
pub async fn eventually<O, F, Fut>(what: &str, mut probe: F) -> O::Value
where
    O: Outcome,
    F: FnMut() -> Fut,
    Fut: Future<Output = O>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if let Some(value) = probe().await.settled() {
            return value;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("gave up after {PATIENCE:?} waiting for {what}");
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Awaits `fut` for at most [`PATIENCE`], naming what was awaited on failure.
pub async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(PATIENCE, fut)
        .await
        .unwrap_or_else(|_| panic!("gave up after {PATIENCE:?} waiting for {what}"))
}
