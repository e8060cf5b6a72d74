//! Certificates a test makes for itself with `openssl`: a CA, and a server certificate
//! for 127.0.0.1 signed by it, so that a client can verify the server fully
//! (`verify-full`, `rediss://` with a CA file) against a CA nobody else trusts.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::services::missing_service;

/// A CA and one server certificate (`CN=127.0.0.1`, SAN `IP:127.0.0.1`,
/// `DNS:localhost`), as PEM files in a directory of their own.
pub struct TestCerts {
    /// The CA certificate: what a client trusts.
    pub ca: PathBuf,
    /// The server certificate, signed by the CA.
    pub cert: PathBuf,
    /// The server's private key.
    pub key: PathBuf,
    dir: tempfile::TempDir,
}

impl TestCerts {
    /// Makes a fresh CA and server certificate, or `None` (after saying so) without
    /// `openssl`.
    pub fn make() -> Option<TestCerts> {
        let dir = tempfile::tempdir().expect("temp dir");
        let p = |name: &str| dir.path().join(name);
        let ext = p("san.ext");
        std::fs::write(
            &ext,
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n",
        )
        .expect("write the extension file");
        let steps: [Vec<String>; 3] = [
            args(&[
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            ])
            .chain(args(&["-subj", "/CN=Shoal test CA", "-keyout"]))
            .chain([path(&p("ca.key")), "-out".into(), path(&p("ca.pem"))])
            .collect(),
            args(&[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                "/CN=127.0.0.1",
            ])
            .chain(["-keyout".into(), path(&p("server.key"))])
            .chain(["-out".into(), path(&p("server.csr"))])
            .collect(),
            args(&["x509", "-req", "-days", "2", "-in"])
                .chain([path(&p("server.csr")), "-CA".into(), path(&p("ca.pem"))])
                .chain([
                    "-CAkey".into(),
                    path(&p("ca.key")),
                    "-CAcreateserial".into(),
                ])
                .chain(["-extfile".into(), path(&ext), "-out".into()])
                .chain([path(&p("server.pem"))])
                .collect(),
        ];
        for step in steps {
            match Command::new("openssl").args(&step).output() {
                Ok(out) if out.status.success() => {}
                Ok(out) => panic!(
                    "openssl {step:?} failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                ),
                Err(e) => {
                    missing_service(&format!("openssl cannot run ({e})"));
                    return None;
                }
            }
        }
        Some(TestCerts {
            ca: p("ca.pem"),
            cert: p("server.pem"),
            key: p("server.key"),
            dir,
        })
    }

    /// The directory holding the files.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

fn args(list: &[&str]) -> impl Iterator<Item = String> {
    list.iter()
        .map(|s| (*s).to_owned())
        .collect::<Vec<_>>()
        .into_iter()
}

fn path(p: &Path) -> String {
    p.display().to_string()
}
