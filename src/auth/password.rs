//! Argon2id password hashes (PHC strings), computed off the async runtime, a bounded
//! number at a time.
//!
//! Each hash or check takes argon2's 19 MiB and about 20 ms of one core. Unbounded,
//! a burst of logins runs as many at once as the blocking pool has threads (512): ~10 GiB
//! of memory and every core busy. So at most `slots` run at once (one per core: more
//! would only share the cores), a caller waits at most [`QUEUE_WAIT`] for a slot, and
//! past that it gets [`PasswordError::Busy`] (503 with `Retry-After`) instead of
//! queueing without end.

use std::sync::Arc;
use std::time::Duration;

use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use tokio::sync::Semaphore;

/// How long a caller waits for a free slot: a burst at a few times the machine's rate
/// still gets through; a flood gets 503 quickly rather than piling up requests.
pub const QUEUE_WAIT: Duration = Duration::from_secs(2);

/// Hashes and verifies passwords.
#[derive(Clone)]
pub struct Passwords {
    /// A hash of a random password, verified against when the e-mail is unknown so
    /// that "no such user" costs the same time as "wrong password".
    dummy_hash: String,
    /// One permit per hash or check running.
    slots: Arc<Semaphore>,
    /// [`QUEUE_WAIT`] (shorter in tests).
    queue_wait: Duration,
}

/// Why a password could not be hashed or checked.
#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    /// Every slot stayed busy for [`QUEUE_WAIT`].
    #[error("too many password checks at once; retry shortly")]
    Busy,
    /// Hashing failed (only on absurd inputs or a broken RNG).
    #[error("password hashing failed: {0}")]
    Failed(String),
}

impl Passwords {
    /// Prepares the dummy hash (one hash at start-up); `slots` hashes may run at once.
    pub async fn new(slots: usize) -> Result<Self, PasswordError> {
        let this = Self {
            dummy_hash: String::new(),
            slots: Arc::new(Semaphore::new(slots.max(1))),
            queue_wait: QUEUE_WAIT,
        };
        let random: [u8; 16] = rand::random();
        let dummy_hash = this.hash(hex(&random)).await?;
        Ok(Self { dummy_hash, ..this })
    }

    /// The argon2id PHC string of `password` (argon2's defaults: 19 MiB, t=2, p=1,
    /// OWASP's recommended minimum).
    pub async fn hash(&self, password: String) -> Result<String, PasswordError> {
        self.run(move || {
            Argon2::default()
                .hash_password(password.as_bytes())
                .map(|h| h.to_string())
                .map_err(|e| PasswordError::Failed(e.to_string()))
        })
        .await?
    }

    /// Whether `password` matches `stored`; with `None`, burns the same time and
    /// answers false.
    pub async fn verify(
        &self,
        password: String,
        stored: Option<String>,
    ) -> Result<bool, PasswordError> {
        let (hash, known) = match stored {
            Some(h) => (h, true),
            None => (self.dummy_hash.clone(), false),
        };
        let ok = self
            .run(move || {
                PasswordHash::new(&hash)
                    .map(|parsed| {
                        Argon2::default()
                            .verify_password(password.as_bytes(), &parsed)
                            .is_ok()
                    })
                    .unwrap_or(false)
            })
            .await?;
        Ok(ok && known)
    }

    /// Runs `work` on the blocking pool once a slot is free (within [`QUEUE_WAIT`]).
    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, PasswordError> {
        let Ok(Ok(permit)) =
            tokio::time::timeout(self.queue_wait, self.slots.clone().acquire_owned()).await
        else {
            metrics::counter!("shoal_password_busy_total").increment(1);
            return Err(PasswordError::Busy);
        };
        tokio::task::spawn_blocking(move || {
            let out = work();
            drop(permit);
            out
        })
        .await
        .map_err(|e| PasswordError::Failed(e.to_string()))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn verifies_only_the_right_password() {
        let p = Passwords::new(2).await.expect("dummy hash");
        let h = p.hash("correct horse".into()).await.expect("hash");
        assert!(h.starts_with("$argon2id$"));
        assert!(
            p.verify("correct horse".into(), Some(h.clone()))
                .await
                .expect("slot")
        );
        assert!(!p.verify("wrong".into(), Some(h)).await.expect("slot"));
        assert!(!p.verify("anything".into(), None).await.expect("slot"));
    }

    #[tokio::test]
    async fn a_caller_that_finds_every_slot_busy_for_the_queue_wait_is_refused() {
        let mut p = Passwords::new(1).await.expect("dummy hash");
        p.queue_wait = Duration::from_millis(10);
        let held = p
            .slots
            .clone()
            .acquire_owned()
            .await
            .expect("the only slot");
        let refused = p.verify("x".into(), None).await;
        assert!(matches!(refused, Err(PasswordError::Busy)), "{refused:?}");
        drop(held);
        assert!(!p.verify("x".into(), None).await.expect("a free slot"));
    }
}
