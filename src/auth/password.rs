//! Argon2id password hashes (PHC strings), computed off the async runtime.

use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};

/// Hashes and verifies passwords.
#[derive(Clone)]
pub struct Passwords {
    /// A hash of a random password, verified against when the e-mail is unknown so
    /// that "no such user" costs the same time as "wrong password".
    dummy_hash: String,
}

/// Hashing failed (only on absurd inputs or a broken RNG).
#[derive(Debug, thiserror::Error)]
#[error("password hashing failed: {0}")]
pub struct HashError(String);

impl Passwords {
    /// Prepares the dummy hash (one hash at start-up).
    pub async fn new() -> Result<Self, HashError> {
        let random: [u8; 16] = rand::random();
        let dummy_hash = hash(hex(&random)).await?;
        Ok(Self { dummy_hash })
    }

    /// The argon2id PHC string of `password` (argon2's defaults: 19 MiB, t=2, p=1,
    /// OWASP's recommended minimum).
    pub async fn hash(&self, password: String) -> Result<String, HashError> {
        hash(password).await
    }

    /// Whether `password` matches `stored`; with `None`, burns the same time and
    /// answers false.
    pub async fn verify(&self, password: String, stored: Option<String>) -> bool {
        let (hash, known) = match stored {
            Some(h) => (h, true),
            None => (self.dummy_hash.clone(), false),
        };
        let ok = tokio::task::spawn_blocking(move || {
            PasswordHash::new(&hash)
                .map(|parsed| {
                    Argon2::default()
                        .verify_password(password.as_bytes(), &parsed)
                        .is_ok()
                })
                .unwrap_or(false)
        })
        .await
        .unwrap_or(false);
        ok && known
    }
}

async fn hash(password: String) -> Result<String, HashError> {
    tokio::task::spawn_blocking(move || {
        Argon2::default()
            .hash_password(password.as_bytes())
            .map(|h| h.to_string())
            .map_err(|e| HashError(e.to_string()))
    })
    .await
    .map_err(|e| HashError(e.to_string()))?
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn verifies_only_the_right_password() {
        let p = Passwords::new().await.expect("dummy hash");
        let h = p.hash("correct horse".into()).await.expect("hash");
        assert!(h.starts_with("$argon2id$"));
        assert!(p.verify("correct horse".into(), Some(h.clone())).await);
        assert!(!p.verify("wrong".into(), Some(h)).await);
        assert!(!p.verify("anything".into(), None).await);
    }
}
