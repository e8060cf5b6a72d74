//! Server-side sessions: what the cookie stands for.
//!
//! The cookie carries 256 random bits. The storage key is HMAC-SHA256(SESSION_SECRET,
//! cookie), so whoever reads the store cannot turn a key back into a cookie; the
//! record is sealed with XChaCha20-Poly1305 under a key derived from
//! SESSION_ENCRYPTION_KEY, with the storage key as associated data so a record cannot
//! be moved to another key. Neither the user id nor anything else is readable at rest.
//!
//! While a secret is rotated (a comma list, src/config/auth.rs `KeyRing`), new
//! sessions use the first secret of each list and existing ones are still found and
//! opened with the others, so nobody is logged out.

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
    /// When the session ends unless saved again, microseconds since the epoch; set by
    /// [`Sessions::save`] (0 in records written before it was kept: see
    /// [`Sessions::expires_at`]).
    #[serde(default)]
    pub expires_at: i64,
}

/// Creates, reads and ends sessions over any [`SessionStore`].
#[derive(Clone)]
pub struct Sessions {
    store: Arc<dyn SessionStore>,
    /// The current cipher first, then those of older keys (open only).
    ciphers: Vec<XChaCha20Poly1305>,
    /// The current HMAC key first, then older ones (lookup only).
    hmac_keys: Vec<Vec<u8>>,
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
        let ciphers = secrets
            .session_encryption_key
            .all()
            .iter()
            .map(|secret| {
                let key = Sha256::digest(secret.expose_secret().as_bytes());
                XChaCha20Poly1305::new_from_slice(&key)
                    .unwrap_or_else(|_| unreachable!("SHA-256 output is 32 bytes"))
            })
            .collect();
        let hmac_keys = secrets
            .session_secret
            .all()
            .iter()
            .map(|secret| secret.expose_secret().as_bytes().to_vec())
            .collect();
        Self {
            store,
            ciphers,
            hmac_keys,
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

    /// When `record`'s session ends unless saved again, microseconds since the
    /// epoch. A record written before the expiry was kept gives its login time plus
    /// the lifetime, which is no later than the real end.
    pub fn expires_at(&self, record: &SessionRecord) -> i64 {
        if record.expires_at > 0 {
            return record.expires_at;
        }
        let ttl = i64::try_from(self.ttl.as_micros()).unwrap_or(i64::MAX);
        record.created_at.saturating_add(ttl)
    }

    /// The storage key of a new session's cookie value.
    fn key_for_cookie(&self, cookie: &str) -> String {
        storage_key(&self.hmac_keys[0], cookie)
    }

    /// The live session a cookie stands for, with its storage key. A cookie issued
    /// under an older `SESSION_SECRET` is looked up under that secret's key too
    /// (one more store read, only while rotating and only for such cookies).
    pub async fn find_by_cookie(
        &self,
        cookie: &str,
    ) -> Result<Option<(String, SessionRecord)>, BackendError> {
        for hmac_key in &self.hmac_keys {
            let key = storage_key(hmac_key, cookie);
            if let Some(record) = self.load(&key).await? {
                return Ok(Some((key, record)));
            }
        }
        Ok(None)
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
        let ttl = i64::try_from(self.ttl.as_micros()).unwrap_or(i64::MAX);
        let record = SessionRecord {
            expires_at: crate::clock::now_micros().saturating_add(ttl),
            ..record.clone()
        };
        let sealed = self.seal(key, &record);
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
        let sealed = self.ciphers[0]
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
        let payload = || Payload {
            msg: ciphertext,
            aad: key.as_bytes(),
        };
        let plain = self
            .ciphers
            .iter()
            .find_map(|cipher| cipher.decrypt(&nonce, payload()).ok())?;
        serde_json::from_slice(&plain).ok()
    }
}

/// Hex HMAC-SHA256 of a cookie value under one `SESSION_SECRET`.
fn storage_key(hmac_key: &[u8], cookie: &str) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(hmac_key)
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

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Mutex;

    use async_trait::async_trait;

    use super::*;
    use crate::config::KeyRing;

    /// A map is store enough here: this checks the keys, not the store.
    #[derive(Default)]
    struct MapStore(Mutex<HashMap<String, Vec<u8>>>);

    #[async_trait]
    impl SessionStore for MapStore {
        async fn put(&self, key: &str, value: &[u8], _ttl: Duration) -> Result<(), BackendError> {
            let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
            map.insert(key.to_owned(), value.to_vec());
            Ok(())
        }
        async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, BackendError> {
            let map = self.0.lock().unwrap_or_else(|p| p.into_inner());
            Ok(map.get(key).cloned())
        }
        async fn delete(&self, key: &str) -> Result<(), BackendError> {
            let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
            map.remove(key);
            Ok(())
        }
        async fn check(&self) -> Result<(), BackendError> {
            Ok(())
        }
    }

    /// Sessions over `store` whose HMAC and encryption rings are `hmac` and `seal`
    /// (letters, each standing for a 32-character secret).
    fn sessions(store: &Arc<MapStore>, hmac: &str, seal: &str) -> Sessions {
        let ring = |letters: &str| {
            let list: Vec<String> = letters.chars().map(|c| c.to_string().repeat(32)).collect();
            KeyRing::parse("SESSION_SECRET", &list.join(",")).expect("valid secrets")
        };
        let secrets = Secrets {
            session_secret: ring(hmac),
            session_encryption_key: ring(seal),
            jwt_access_secret: KeyRing::single("y".repeat(32)),
            jwt_refresh_secret: KeyRing::single("z".repeat(32)),
        };
        Sessions::new(store.clone(), &secrets, Duration::from_secs(60))
    }

    #[tokio::test]
    async fn a_session_made_before_a_rotation_is_found_during_it_and_lost_after_it() {
        let store = Arc::new(MapStore::default());
        let record = SessionRecord {
            user_id: Uuid::now_v7(),
            family_id: Uuid::now_v7(),
            created_at: 1,
            expires_at: 0,
        };
        let (old_cookie, old_key) = sessions(&store, "a", "b")
            .create(&record)
            .await
            .expect("create");

        let rotating = sessions(&store, "ca", "db");
        let (key, found) = rotating
            .find_by_cookie(&old_cookie)
            .await
            .expect("read")
            .expect("an older secret still finds and opens the session");
        assert_eq!(
            (key.as_str(), found.user_id),
            (old_key.as_str(), record.user_id)
        );
        let (new_cookie, _) = rotating.create(&record).await.expect("create");

        let after = sessions(&store, "c", "d");
        assert!(
            after
                .find_by_cookie(&old_cookie)
                .await
                .expect("read")
                .is_none(),
            "a secret dropped from the list finds nothing"
        );
        assert_eq!(
            after
                .find_by_cookie(&new_cookie)
                .await
                .expect("read")
                .map(|(_, r)| r.user_id),
            Some(record.user_id),
            "new sessions use the first secret of each list"
        );
    }
}
