//! A PostgreSQL server a test starts itself, for settings the shared server must not
//! be given (its own TLS certificates, say). It runs Debian's server binaries as the
//! `postgres` user (PostgreSQL refuses to run as root) on a free port, with a data
//! directory of its own, and is stopped when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use nix::sys::signal::{Signal, kill};
use nix::unistd::{Pid, User, chown};

use crate::services::{free_port, missing_service};
use crate::tls::TestCerts;
use crate::wait::{PATIENCE, POLL};

/// A running PostgreSQL server on 127.0.0.1 (trust authentication, user `postgres`).
pub struct OwnPostgres {
    /// Its port.
    pub port: u16,
    child: Option<Child>,
    dir: tempfile::TempDir,
}

/// The newest installed server binaries (`/usr/lib/postgresql/N/bin`).
fn server_bin_dir() -> Option<PathBuf> {
    let mut versions: Vec<u32> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    versions.sort_unstable();
    let dir = PathBuf::from(format!("/usr/lib/postgresql/{}/bin", versions.pop()?));
    dir.join("initdb").is_file().then_some(dir)
}

/// `cmd` run as the `postgres` user when this process is root (as here and in CI).
pub(crate) fn as_postgres(program: &Path) -> Command {
    if nix::unistd::geteuid().is_root() {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", "postgres", "--"]).arg(program);
        cmd
    } else {
        Command::new(program)
    }
}

/// Waits (bounded by [`PATIENCE`]) until something listens on `127.0.0.1:{port}`;
/// panics with `log()` otherwise.
pub(crate) async fn wait_listening(port: u16, what: &str, log: impl Fn() -> String) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        if tokio::time::Instant::now() >= deadline {
            panic!("{what} did not start:\n{}", log());
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Stops a server started by [`as_postgres`]: `signal` to its own pid (the child may
/// be `runuser`), which must be gone before its directory is removed (SIGKILL after
/// [`PATIENCE`]), then the child is killed and reaped.
pub(crate) fn stop(server: Option<Pid>, signal: Signal, child: Option<Child>) {
    if let Some(pid) = server {
        let _ = kill(pid, signal);
        let deadline = std::time::Instant::now() + PATIENCE;
        while kill(pid, None).is_ok() && std::time::Instant::now() < deadline {
            std::thread::sleep(POLL);
        }
        let _ = kill(pid, Signal::SIGKILL);
    }
    if let Some(mut child) = child {
        let pid = Pid::from_raw(i32::try_from(child.id()).expect("pid fits i32"));
        let _ = kill(pid, Signal::SIGKILL);
        let _ = child.wait();
    }
}

impl OwnPostgres {
    /// Initialises and starts a server with the stock settings (`max_connections`
    /// 100), or `None` (after saying so) when the server binaries cannot run here.
    pub async fn start() -> Option<OwnPostgres> {
        Self::start_with(None).await
    }

    /// Initialises and starts a server with `ssl = on` and the certificate of
    /// `certs`, or `None` (after saying so) when the server binaries cannot run here.
    pub async fn start_tls(certs: &TestCerts) -> Option<OwnPostgres> {
        Self::start_with(Some(certs)).await
    }

    async fn start_with(certs: Option<&TestCerts>) -> Option<OwnPostgres> {
        let Some(bin) = server_bin_dir() else {
            missing_service("PostgreSQL's server binaries are not installed (postgresql)");
            return None;
        };
        let dir = tempfile::tempdir().expect("temp dir");
        let data = dir.path().join("data");
        // The server runs as `postgres`: it must own its directories and key.
        let owner = User::from_name("postgres").ok().flatten();
        let give = |path: &Path| {
            if let Some(u) = &owner {
                chown(path, Some(u.uid), Some(u.gid)).expect("chown to postgres");
            }
        };
        give(dir.path());
        let mut tls_args: Vec<String> = Vec::new();
        if let Some(certs) = certs {
            let key = dir.path().join("server.key");
            let cert = dir.path().join("server.pem");
            std::fs::copy(&certs.key, &key).expect("copy the key");
            std::fs::copy(&certs.cert, &cert).expect("copy the certificate");
            {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600))
                    .expect("key mode 0600");
            }
            give(&key);
            give(&cert);
            tls_args = vec![
                "-c".into(),
                "ssl=on".into(),
                "-c".into(),
                format!("ssl_cert_file={}", cert.display()),
                "-c".into(),
                format!("ssl_key_file={}", key.display()),
            ];
        }
        let init = as_postgres(&bin.join("initdb"))
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-D"])
            .arg(&data)
            .output();
        match init {
            Ok(out) if out.status.success() => {}
            Ok(out) => {
                missing_service(&format!(
                    "initdb failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                ));
                return None;
            }
            Err(e) => {
                missing_service(&format!("initdb cannot run ({e})"));
                return None;
            }
        }
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("postgres.log")).expect("log file");
        give(&dir.path().join("postgres.log"));
        let child = as_postgres(&bin.join("postgres"))
            .arg("-D")
            .arg(&data)
            .args(["-p", &port.to_string(), "-c", "listen_addresses=127.0.0.1"])
            .arg("-c")
            .arg(format!("unix_socket_directories={}", dir.path().display()))
            .args(["-c", "fsync=off"])
            .args(&tls_args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start postgres");
        let server = OwnPostgres {
            port,
            child: Some(child),
            dir,
        };
        wait_listening(port, "own PostgreSQL", || server.log_text()).await;
        // Listening is not yet accepting sessions: wait for the first one to work.
        let url = server.url(
            "postgres",
            if certs.is_some() {
                "sslmode=require"
            } else {
                "sslmode=disable"
            },
        );
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            use sqlx::Connection;
            if let Ok(conn) = sqlx::PgConnection::connect(&url).await {
                let _ = conn.close().await;
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!("own PostgreSQL accepts no session:\n{}", server.log_text());
            }
            tokio::time::sleep(POLL).await;
        }
        Some(server)
    }

    /// `postgres://postgres@127.0.0.1:{port}/{db}?{query}`.
    pub fn url(&self, db: &str, query: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}?{query}", self.port)
    }

    /// `postgres://postgres@127.0.0.1:{port}/postgres`, for creating databases.
    pub fn admin_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// The directory the server's files live in (its socket, its log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// What the server logged.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("postgres.log")).unwrap_or_default()
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        // SIGINT is PostgreSQL's fast shutdown.
        let server = std::fs::read_to_string(self.dir.path().join("data/postmaster.pid"))
            .ok()
            .and_then(|t| t.lines().next()?.trim().parse::<i32>().ok())
            .map(Pid::from_raw);
        stop(server, Signal::SIGINT, self.child.take());
    }
}
