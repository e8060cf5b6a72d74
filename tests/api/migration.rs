//! Users carried over from an Express stack (docs/migrating-from-node.md): a password
//! hash made by the `argon2` npm package with its defaults (argon2id, 64 MiB, t=3,
//! p=4), copied into Shoal's `users` table, logs in with its password.

use std::path::Path;
use std::process::Command;

use reqwest::StatusCode;
use shoal_testkit::missing_service;

use crate::helpers::{spawn_app, unique_email};

/// The argon2id hash of `password` from `tests/node/argon2-hash.js` (the npm package,
/// installed by `npm ci --prefix tests/node`), or `None` after saying why there is none.
fn node_argon2_hash(password: &str) -> Option<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/node");
    if !dir.join("node_modules/argon2").is_dir() {
        missing_service("the argon2 npm package (run `npm ci --prefix tests/node`)");
        return None;
    }
    let out = match Command::new("node")
        .arg(dir.join("argon2-hash.js"))
        .arg(password)
        .output()
    {
        Ok(out) => out,
        Err(e) => {
            missing_service(&format!("node ({e})"));
            return None;
        }
    };
    assert!(
        out.status.success(),
        "argon2-hash.js failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(
        String::from_utf8(out.stdout)
            .expect("utf-8")
            .trim()
            .to_owned(),
    )
}

#[tokio::test]
async fn a_password_hash_made_by_the_argon2_npm_package_logs_in() {
    let Some(hash) = node_argon2_hash("a password from the old app") else {
        return;
    };
    assert!(
        hash.starts_with("$argon2id$v=19$m=65536,"),
        "the npm package's defaults: {hash}"
    );
    let app = spawn_app().await;
    let email = unique_email();
    let r = app.register(&email, "a temporary password", "Ada").await;
    assert_eq!(r.status(), StatusCode::CREATED);
    // What a migration script does: the old row's hash, as it was.
    let moved = sqlx::query("UPDATE users SET password_hash = $1 WHERE email = $2")
        .bind(&hash)
        .bind(&email)
        .execute(app.state().db.pool())
        .await
        .expect("UPDATE users");
    assert_eq!(moved.rows_affected(), 1);

    let r = app
        .login_with(&app.client, &email, "a password from the old app")
        .await;
    assert_eq!(r.status(), StatusCode::OK, "the old password logs in");
    let r = app
        .login_with(&app.client, &email, "a temporary password")
        .await;
    assert_eq!(
        r.status(),
        StatusCode::UNAUTHORIZED,
        "and nothing else does"
    );
    app.stop().await;
}
