//! Embedded mode's secrets: generated once under `DATA_DIR` (file mode 0600) so that
//! sessions and tokens survive a restart without any configuration.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use anyhow::Context;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

use crate::config::{KeyRing, Secrets};

#[derive(Serialize, Deserialize)]
struct SecretsFile {
    session_secret: String,
    session_encryption_key: String,
    jwt_access_secret: String,
    jwt_refresh_secret: String,
}

/// Reads `DATA_DIR/secrets.json`, creating it with fresh random secrets first if it
/// does not exist.
pub fn load_or_generate(data_dir: &Path) -> anyhow::Result<Secrets> {
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create DATA_DIR {}", data_dir.display()))?;
    let path = data_dir.join("secrets.json");
    let fresh = || URL_SAFE_NO_PAD.encode(rand::random::<[u8; 48]>());
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
    {
        Ok(mut file) => {
            let contents = SecretsFile {
                session_secret: fresh(),
                session_encryption_key: fresh(),
                jwt_access_secret: fresh(),
                jwt_refresh_secret: fresh(),
            };
            file.write_all(serde_json::to_string_pretty(&contents)?.as_bytes())
                .and_then(|()| file.sync_all())
                .with_context(|| format!("cannot write {}", path.display()))?;
            tracing::info!(path = %path.display(), "generated secrets for embedded mode");
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e).with_context(|| format!("cannot create {}", path.display())),
    }
    let meta = std::fs::metadata(&path)?;
    if meta.permissions().mode() & 0o077 != 0 {
        tracing::warn!(path = %path.display(), "secrets file is readable by others; chmod 600 it");
    }
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let file: SecretsFile = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a Shoal secrets file", path.display()))?;
    Ok(Secrets {
        session_secret: KeyRing::single(file.session_secret),
        session_encryption_key: KeyRing::single(file.session_encryption_key),
        jwt_access_secret: KeyRing::single(file.jwt_access_secret),
        jwt_refresh_secret: KeyRing::single(file.jwt_refresh_secret),
    })
}
