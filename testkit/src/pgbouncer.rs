//! A PgBouncer (Debian's `pgbouncer`) a test starts in front of a PostgreSQL, in
//! transaction pooling mode, with a configuration the test writes. It runs as the
//! `postgres` user (PgBouncer refuses to run as root) and is stopped when dropped.

use std::path::Path;
use std::process::{Child, Stdio};

use nix::sys::signal::Signal;
use nix::unistd::{Pid, User, chown};

use crate::own_postgres::{as_postgres, stop, wait_listening};
use crate::services::{free_port, missing_service};

/// A running PgBouncer on 127.0.0.1 that lends every database of one PostgreSQL.
pub struct PgBouncer {
    /// Its port.
    pub port: u16,
    child: Option<Child>,
    dir: tempfile::TempDir,
}

impl PgBouncer {
    /// Starts PgBouncer in front of the PostgreSQL at `127.0.0.1:{upstream_port}`
    /// (trust authentication, user `postgres`), lending at most `pool_size` server
    /// connections per database; `None` (after saying so) when it is not installed.
    pub async fn start(upstream_port: u16, pool_size: u32) -> Option<PgBouncer> {
        let bin = Path::new("/usr/sbin/pgbouncer");
        if !bin.is_file() {
            missing_service("PgBouncer is not installed (apt-get install pgbouncer)");
            return None;
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let ini = dir.path().join("pgbouncer.ini");
        let users = dir.path().join("userlist.txt");
        let log = dir.path().join("pgbouncer.log");
        // What Shoal needs from a transaction pooler, and nothing else:
        // `ignore_startup_parameters = extra_float_digits` because sqlx sends it
        // (PgBouncer 1.18 refuses unknown startup parameters), transaction pooling,
        // and enough client slots for every instance's pool.
        std::fs::write(
            &ini,
            format!(
                "[databases]\n\
                 * = host=127.0.0.1 port={upstream_port}\n\
                 [pgbouncer]\n\
                 listen_addr = 127.0.0.1\n\
                 listen_port = {port}\n\
                 unix_socket_dir =\n\
                 auth_type = trust\n\
                 auth_file = {users}\n\
                 admin_users = postgres\n\
                 pool_mode = transaction\n\
                 default_pool_size = {pool_size}\n\
                 max_client_conn = 2000\n\
                 ignore_startup_parameters = extra_float_digits\n\
                 logfile = {log}\n\
                 pidfile = {pid}\n",
                users = users.display(),
                log = log.display(),
                pid = dir.path().join("pgbouncer.pid").display(),
            ),
        )
        .expect("write pgbouncer.ini");
        std::fs::write(&users, "\"postgres\" \"\"\n").expect("write userlist.txt");
        if let Ok(Some(u)) = User::from_name("postgres") {
            for path in [dir.path(), &ini, &users] {
                chown(path, Some(u.uid), Some(u.gid)).expect("chown to postgres");
            }
        }
        let child = as_postgres(bin)
            .arg(&ini)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start pgbouncer");
        let bouncer = PgBouncer {
            port,
            child: Some(child),
            dir,
        };
        wait_listening(port, "PgBouncer", || bouncer.log_text()).await;
        Some(bouncer)
    }

    /// `postgres://postgres@127.0.0.1:{port}/{db}`: database `db` through PgBouncer.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// What PgBouncer logged.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("pgbouncer.log")).unwrap_or_default()
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        // SIGTERM is PgBouncer's immediate shutdown (SIGINT would wait for clients).
        let pid = std::fs::read_to_string(self.dir.path().join("pgbouncer.pid"))
            .ok()
            .and_then(|t| t.trim().parse::<i32>().ok())
            .map(Pid::from_raw);
        stop(pid, Signal::SIGTERM, self.child.take());
    }
}
