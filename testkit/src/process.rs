//! A `shoal` child process: started with exactly the configuration a test gives it,
//! SIGKILLed (and reaped) when dropped.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use reqwest::{Client, StatusCode};

use crate::wait::{PATIENCE, POLL};

/// The `shoal` binary of this build. Cargo builds a package's binaries before its
/// integration tests and puts them beside the `deps/` folder the test binary runs
/// from (`target/debug/shoal`); `CARGO_BIN_EXE_shoal` exists only in the test
/// crates themselves, so the kit finds it the way assert_cmd does.
pub fn shoal_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("SHOAL_TEST_BIN") {
        return PathBuf::from(bin);
    }
    let exe = std::env::current_exe().expect("the test binary's path");
    let deps = exe.parent().expect("target/debug/deps");
    let dir = if deps.ends_with("deps") {
        deps.parent().expect("target/debug")
    } else {
        deps
    };
    dir.join(format!("shoal{}", std::env::consts::EXE_SUFFIX))
}

/// A process environment with none of Shoal's keys but `env`: every Shoal key of the
/// test process's own environment is removed first, so nothing leaks in.
pub fn command(program: impl AsRef<std::ffi::OsStr>, env: &[(String, String)]) -> Command {
    let mut cmd = Command::new(program);
    for key in shoal::config::keys().map(|k| k.name) {
        cmd.env_remove(key);
    }
    cmd.env_remove("SHOAL_CONFIG");
    cmd.envs(env.iter().map(|(k, v)| (k, v)));
    cmd
}

/// One `shoal` child process, SIGKILLed (and reaped) when dropped.
pub struct Node {
    /// Its `INSTANCE_ID`.
    pub id: String,
    /// Its `PORT` (0 for a command that serves nothing).
    pub port: u16,
    /// `http://127.0.0.1:{port}`.
    pub base: String,
    child: Option<Child>,
    /// Its stderr (the JSON log and any start-up error).
    log: PathBuf,
}

impl Node {
    /// Starts `shoal` (`serve`) with exactly `env` as its configuration (`PORT`
    /// required; see [`command`]); the working directory is `cwd` so that no
    /// `shoal.toml` of the checkout is picked up.
    pub fn spawn(id: &str, env: &[(String, String)], cwd: &Path, logs: &Path) -> Node {
        assert!(env.iter().any(|(k, _)| k == "PORT"), "PORT is required");
        Node::run(id, &[], env, cwd, logs)
    }

    /// Runs `shoal {args}` (a worker, a CLI command) with exactly `env` as its
    /// configuration and `id` as its `INSTANCE_ID` unless `env` names one.
    pub fn run(id: &str, args: &[&str], env: &[(String, String)], cwd: &Path, logs: &Path) -> Node {
        let log = logs.join(format!("{id}.stderr.log"));
        let stderr = File::create(&log).expect("create a log file");
        let mut cmd = command(shoal_bin(), env);
        if !env.iter().any(|(k, _)| k == "INSTANCE_ID") {
            cmd.env("INSTANCE_ID", id);
        }
        cmd.args(args)
            .current_dir(cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(stderr));
        let child = cmd.spawn().expect("spawn the shoal binary");
        let port: u16 = env
            .iter()
            .find(|(k, _)| k == "PORT")
            .map(|(_, v)| v.parse().expect("a numeric PORT"))
            .unwrap_or_default();
        Node {
            id: id.to_owned(),
            port,
            base: format!("http://127.0.0.1:{port}"),
            child: Some(child),
            log,
        }
    }

    /// `{base}{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Everything the process wrote to stderr so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The exit status, if the process has ended.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().expect("poll the child"))
    }

    /// Its process id while it runs.
    pub fn pid(&self) -> Option<Pid> {
        self.child
            .as_ref()
            .map(|c| Pid::from_raw(i32::try_from(c.id()).expect("pid fits i32")))
    }

    /// SIGKILL and reap: the process is gone when this returns.
    pub fn kill(&mut self) {
        if let Some(pid) = self.pid() {
            let _ = kill(pid, Signal::SIGKILL);
        }
        if let Some(mut c) = self.child.take() {
            let _ = c.wait();
        }
    }

    /// SIGTERM: the graceful shutdown starts.
    pub fn terminate(&self) {
        if let Some(pid) = self.pid() {
            kill(pid, Signal::SIGTERM).expect("send SIGTERM");
        }
    }

    /// Waits (bounded) for the process to exit and returns its status.
    pub async fn wait_exit(&mut self) -> ExitStatus {
        let id = self.id.clone();
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.exited() {
                self.child = None;
                return status;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "instance {id} did not exit"
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits (bounded by [`PATIENCE`]) for a short-lived command to exit 0; panics
    /// with its log otherwise.
    pub async fn success(mut self) {
        let status = self.wait_exit().await;
        assert!(
            status.success(),
            "shoal {} failed ({status}): {}",
            self.id,
            self.log_text()
        );
    }

    /// Waits (bounded by [`PATIENCE`]) until `/health/ready` answers 200; panics with the
    /// log if the process exits or the bound passes first.
    pub async fn wait_ready(&mut self, http: &Client) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.exited() {
                panic!(
                    "instance {} exited ({status}) before ready; log:\n{}",
                    self.id,
                    self.log_text()
                );
            }
            if let Ok(r) = http.get(self.url("/health/ready")).send().await
                && r.status() == StatusCode::OK
            {
                return;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!("instance {} not ready; log:\n{}", self.id, self.log_text());
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}
