//! Server-side sessions: what the cookie stands for.
//!
//! The cookie carries 256 random bits. The storage key is HMAC-SHA256(SESSION_SECRET,
//! cookie), so whoever reads the store cannot turn a key back into a cookie; the
//! record is sealed with XChaCha20-Poly1305 under a key derived from
//! SESSION_ENCRYPTION_KEY, with the storage key as associated data so a record cannot
//! be moved to another key. Neither the user id nor anything else is readable at rest.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::backend_error::BackendError;
use crate::config::Secrets;
use crate::session::SessionStore;

/// What a session knows, sealed at rest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    /// The signed-in user.
    pub user_id: Uuid,
    /// The refresh-token family started by the same login.
    pub family_id: Uuid,
    /// Login time, microseconds since the epoch.
    pub created_at: i64,
}

/// Creates, reads and ends sessions over any [`SessionStore`].
#[derive(Clone)]
pub struct Sessions {
    store: Arc<dyn SessionStore>,
    cipher: XChaCha20Poly1305,
    hmac_key: Vec<u8>,
    ttl: Duration,
    /// The last record unsealed per storage key, with the sealed bytes it came from.
    /// A read whose bytes are the same skips the AEAD and the JSON parse (measured:
    /// ~3% of an authenticated request's CPU); a changed record never matches, so this
    /// cannot serve anything the store would not.
    unsealed: moka::sync::Cache<String, Arc<(Vec<u8>, SessionRecord)>>,
}

impl Sessions {
    /// Sessions of lifetime `ttl` in `store`.
    pub fn new(store: Arc<dyn SessionStore>, secrets: &Secrets, ttl: Duration) -> Self {
        let key = Sha256::digest(secrets.session_encryption_key.expose_secret().as_bytes());
        let cipher = XChaCha20Poly1305::new_from_slice(&key)
            .unwrap_or_else(|_| unreachable!("SHA-256 output is 32 bytes"));
        Self {
            store,
            cipher,
            hmac_key: secrets.session_secret.expose_secret().as_bytes().to_vec(),
            ttl,
            unsealed: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_idle(Duration::from_secs(600))
                .build(),
        }
    }

    /// The session lifetime (the cookie's Max-Age).
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The storage key of a cookie value.
    pub fn key_for_cookie(&self, cookie: &str) -> String {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.hmac_key)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(cookie.as_bytes());
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut key = String::with_capacity(64);
        for b in mac.finalize().into_bytes() {
            key.push(char::from(HEX[usize::from(b >> 4)]));
            key.push(char::from(HEX[usize::from(b & 0x0f)]));
        }
        key
    }

    /// Starts a session; returns the cookie value and the storage key.
    pub async fn create(&self, record: &SessionRecord) -> Result<(String, String), BackendError> {
        let cookie = URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>());
        let key = self.key_for_cookie(&cookie);
        self.save(&key, record).await?;
        Ok((cookie, key))
    }

    /// Writes `record` under `key`, restarting its lifetime.
    pub async fn save(&self, key: &str, record: &SessionRecord) -> Result<(), BackendError> {
        let sealed = self.seal(key, record);
        self.store.put(key, &sealed, self.ttl).await
    }

    /// The live session under `key`. A record that does not unseal (rotated key,
    /// tampering) counts as no session.
    pub async fn load(&self, key: &str) -> Result<Option<SessionRecord>, BackendError> {
        let Some(sealed) = self.store.get(key).await? else {
            return Ok(None);
        };
        if let Some(known) = self.unsealed.get(key)
            && known.0 == sealed
        {
            return Ok(Some(known.1.clone()));
        }
        let record = self.unseal(key, &sealed);
        match &record {
            Some(r) => self
                .unsealed
                .insert(key.to_owned(), Arc::new((sealed, r.clone()))),
            None => tracing::warn!("session record does not unseal; treating as signed out"),
        }
        Ok(record)
    }

    /// Ends the session under `key`.
    pub async fn destroy(&self, key: &str) -> Result<(), BackendError> {
        self.unsealed.invalidate(key);
        self.store.delete(key).await
    }

    /// Readiness of the store.
    pub async fn check(&self) -> Result<(), BackendError> {
        self.store.check().await
    }

    fn seal(&self, key: &str, record: &SessionRecord) -> Vec<u8> {
        let plain = serde_json::to_vec(record).unwrap_or_default();
        let nonce_bytes: [u8; 24] = rand::random();
        let nonce = XNonce::from(nonce_bytes);
        let sealed = self
            .cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: &plain,
                    aad: key.as_bytes(),
                },
            )
            .unwrap_or_default();
        let mut out = Vec::with_capacity(24 + sealed.len());
        out.extend_from_slice(&nonce_bytes);
        out.extend_from_slice(&sealed);
        out
    }

    fn unseal(&self, key: &str, sealed: &[u8]) -> Option<SessionRecord> {
        if sealed.len() < 24 {
            return None;
        }
        let (nonce, ciphertext) = sealed.split_at(24);
        let nonce = XNonce::try_from(nonce).ok()?;
        let plain = self
            .cipher
            .decrypt(
                &nonce,
                Payload {
                    msg: ciphertext,
                    aad: key.as_bytes(),
                },
            )
            .ok()?;
        serde_json::from_slice(&plain).ok()
    }
}
