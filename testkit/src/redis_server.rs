//! A `redis-server` (or a Sentinel) that a test owns: started on a free port with no
//! persistence, so a restart loses everything, and SIGKILLed when dropped.

use std::fs::File;
use std::process::{Child, Command, Stdio};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::services::{free_port, missing_service, probe_redis};
use crate::tls::TestCerts;
use crate::wait::{PATIENCE, POLL};

/// A `redis-server` child process on its own port.
pub struct OwnRedis {
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// Arguments after `redis-server`, without the port.
    args: Vec<String>,
    child: Option<Child>,
    /// Holds the log and a Sentinel's (writable) configuration file.
    dir: tempfile::TempDir,
    /// Serves TLS only (`rediss://`), on `port`; ready once its log has this line
    /// (the kit's own client speaks no TLS, so it cannot ask with `PING`).
    tls: Option<&'static str>,
}

/// A server on 127.0.0.1 with no persistence: a restart loses everything.
const PLAIN: [&str; 6] = ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"];

impl OwnRedis {
    /// Starts a server on a free port, or `None` (after saying so) when
    /// `redis-server` cannot run here.
    pub async fn start() -> Option<OwnRedis> {
        let dir = tempfile::tempdir().expect("temp dir");
        Self::launch(dir, PLAIN.iter().map(|a| (*a).to_owned()).collect()).await
    }

    /// Starts a Sentinel that monitors the master `mymaster` at `master_port`.
    pub async fn start_sentinel(master_port: u16) -> Option<OwnRedis> {
        let dir = tempfile::tempdir().expect("temp dir");
        let conf = dir.path().join("sentinel.conf");
        std::fs::write(
            &conf,
            format!("sentinel monitor mymaster 127.0.0.1 {master_port} 1\n"),
        )
        .expect("write sentinel.conf");
        let args = vec![conf.display().to_string(), "--sentinel".into()];
        Self::launch(dir, args).await
    }

    /// Starts a replica of the server at `master_port` (no persistence, like the
    /// master).
    pub async fn start_replica(master_port: u16) -> Option<OwnRedis> {
        let master = master_port.to_string();
        let replica = ["--replicaof", "127.0.0.1", &master];
        let dir = tempfile::tempdir().expect("temp dir");
        let args = PLAIN.iter().chain(&replica).map(|a| (*a).to_owned());
        Self::launch(dir, args.collect()).await
    }

    /// Starts one of several Sentinels that watch the master `mymaster` at
    /// `master_port`: `quorum` of them must agree it is down, which they may say after
    /// `down_after` without an answer; they then promote a replica.
    pub async fn start_sentinel_of(
        master_port: u16,
        quorum: u32,
        down_after: std::time::Duration,
    ) -> Option<OwnRedis> {
        let dir = tempfile::tempdir().expect("temp dir");
        let conf = dir.path().join("sentinel.conf");
        let ms = down_after.as_millis();
        std::fs::write(
            &conf,
            format!(
                "sentinel monitor mymaster 127.0.0.1 {master_port} {quorum}\n\
                 sentinel down-after-milliseconds mymaster {ms}\n\
                 sentinel failover-timeout mymaster {}\n\
                 sentinel parallel-syncs mymaster 1\n",
                ms * 5
            ),
        )
        .expect("write sentinel.conf");
        let args = vec![conf.display().to_string(), "--sentinel".into()];
        Self::launch(dir, args).await
    }

    /// Starts a server that speaks only TLS (`rediss://`), with the certificate and
    /// CA of `certs`; clients are not asked for certificates of their own.
    pub async fn start_tls(certs: &TestCerts) -> Option<OwnRedis> {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut args: Vec<String> = PLAIN.iter().map(|a| (*a).to_owned()).collect();
        args.extend(tls_args(certs));
        Self::launch_as(dir, args, Some("Ready to accept connections")).await
    }

    /// Starts a Sentinel that speaks only TLS and monitors the TLS master `mymaster` at
    /// `master_port` (replication and its own connections over TLS too).
    pub async fn start_sentinel_tls(master_port: u16, certs: &TestCerts) -> Option<OwnRedis> {
        let dir = tempfile::tempdir().expect("temp dir");
        let conf = dir.path().join("sentinel.conf");
        std::fs::write(
            &conf,
            format!("tls-replication yes\nsentinel monitor mymaster 127.0.0.1 {master_port} 1\n"),
        )
        .expect("write sentinel.conf");
        let mut args = vec![conf.display().to_string(), "--sentinel".into()];
        args.extend(tls_args(certs));
        Self::launch_as(dir, args, Some("+monitor master")).await
    }

    /// Starts a node for a Redis Cluster (see [`crate::redis_cluster::OwnRedisCluster`]):
    /// its cluster state is kept in its directory, so a restarted node comes back with
    /// its slots; its cluster bus port is chosen here, not left at port + 10000.
    pub async fn start_cluster_node() -> Option<OwnRedis> {
        let dir = tempfile::tempdir().expect("temp dir");
        let bus = free_port().to_string();
        let cluster = [
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
            "--cluster-node-timeout",
            "5000",
            "--cluster-port",
            &bus,
        ];
        let args = PLAIN.iter().chain(&cluster).map(|a| (*a).to_owned());
        Self::launch(dir, args.collect()).await
    }

    async fn launch(dir: tempfile::TempDir, args: Vec<String>) -> Option<OwnRedis> {
        Self::launch_as(dir, args, None).await
    }

    async fn launch_as(
        dir: tempfile::TempDir,
        args: Vec<String>,
        tls: Option<&'static str>,
    ) -> Option<OwnRedis> {
        let mut server = OwnRedis {
            port: free_port(),
            args,
            child: None,
            dir,
            tls,
        };
        match server.restart().await {
            Ok(()) => Some(server),
            Err(e) => {
                missing_service(&format!("cannot run redis-server ({e})"));
                None
            }
        }
    }

    /// `redis://127.0.0.1:{port}` (`rediss://` for a TLS server).
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// Starts the server (again) on its port and waits until it answers `PING`.
    pub async fn restart(&mut self) -> Result<(), String> {
        let log_path = self.dir.path().join("redis.log");
        let log = File::create(&log_path).map_err(|e| e.to_string())?;
        let port = self.port.to_string();
        let ports: Vec<&str> = if self.tls.is_some() {
            vec!["--port", "0", "--tls-port", &port]
        } else {
            vec!["--port", &port]
        };
        let child = Command::new("redis-server")
            .args(&self.args)
            .args(ports)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| e.to_string())?;
        self.child = Some(child);
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            // A TLS server is ready when it says so (the kit's own client speaks no
            // TLS); a plain one when it answers PING.
            let ready = if let Some(line) = self.tls {
                std::fs::read_to_string(&log_path).is_ok_and(|l| l.contains(line))
            } else {
                probe_redis(&self.url()).await.is_ok()
            };
            if ready {
                return Ok(());
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                return Err(format!("redis-server exited ({status})"));
            }
            if tokio::time::Instant::now() >= deadline {
                self.kill();
                return Err("redis-server did not answer PING".into());
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// SIGSTOP: the server keeps its data and its connections but answers nothing,
    /// as behind a network partition; [`OwnRedis::thaw`] ends it.
    pub fn freeze(&self) {
        if let Some(child) = &self.child {
            let pid = Pid::from_raw(i32::try_from(child.id()).expect("pid fits i32"));
            kill(pid, Signal::SIGSTOP).expect("SIGSTOP redis-server");
        }
    }

    /// SIGCONT: a frozen server answers again, with everything it had.
    pub fn thaw(&self) {
        if let Some(child) = &self.child {
            let pid = Pid::from_raw(i32::try_from(child.id()).expect("pid fits i32"));
            kill(pid, Signal::SIGCONT).expect("SIGCONT redis-server");
        }
    }

    /// SIGKILL and reap: the server is gone (with all its data) when this returns.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = Pid::from_raw(i32::try_from(child.id()).expect("pid fits i32"));
            let _ = kill(pid, Signal::SIGKILL);
            let _ = child.wait();
        }
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `redis-server` flags for TLS with the certificate and CA of `certs`.
fn tls_args(certs: &TestCerts) -> Vec<String> {
    let mut args = Vec::new();
    for (flag, file) in [
        ("--tls-cert-file", &certs.cert),
        ("--tls-key-file", &certs.key),
        ("--tls-ca-cert-file", &certs.ca),
    ] {
        args.push(flag.to_owned());
        args.push(file.display().to_string());
    }
    args.extend(["--tls-auth-clients".into(), "no".into()]);
    args
}
