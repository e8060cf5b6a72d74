//! `shoal serve --workers N` (or `CLUSTER_WORKERS=N`): one supervisor process runs N
//! worker processes of this same binary on one port (docs/operations.md).
//!
//! The workers bind the port with SO_REUSEPORT and the kernel spreads new
//! connections over them; each is an ordinary instance (its own id, registry entry,
//! pools), so nothing else in Shoal knows about the supervisor. The supervisor holds
//! no listener and no connections: it starts the workers, restarts one that dies
//! after `CLUSTER_RESTART_DELAY` — unless `CLUSTER_MAX_RESTARTS` restarts already
//! happened within `CLUSTER_RESTART_WINDOW`, then it stops everything and exits 1
//! (a crash loop is for the orchestrator to see, not to hide) — and forwards SIGTERM
//! and SIGINT to every worker, then waits for all of them to drain.
//!
//! Why processes and not threads: a worker that crashes or leaks takes only itself
//! down, and a restart gives a fresh one while the others keep serving.

use std::collections::VecDeque;
use std::process::ExitStatus;

use anyhow::Context;
use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::process::{Child, Command};
use tokio::time::Instant;

use crate::config::Config;

/// The environment variable that tells a process it is worker `i` of a supervisor
/// (not a configuration key: only the supervisor sets it).
pub const WORKER_ENV: &str = "SHOAL_WORKER";

enum Event {
    /// Worker `i` exited.
    Exited(usize, std::io::Result<ExitStatus>),
    /// Worker `i`'s restart delay passed.
    Restart(usize),
}

/// The supervisor's view of its workers.
struct Workers {
    /// How each worker is started (`shoal serve` with the worker environment).
    program: std::path::PathBuf,
    /// The port every worker binds (resolved when `PORT=0`).
    port: u16,
    /// `INSTANCE_ID` given to the supervisor, made unique per worker (`{id}-w{i}`).
    instance_id: Option<String>,
    /// Whether workers run job workers: `serve --no-workers` is a flag of the
    /// supervisor's own command line, which the workers do not see, so it travels as
    /// `QUEUE_WORKERS`.
    queue_workers: bool,
    /// Live worker pids, by index.
    pids: Vec<Option<Pid>>,
}

impl Workers {
    fn spawn(&mut self, i: usize) -> anyhow::Result<BoxFuture<'static, Event>> {
        let mut cmd = Command::new(&self.program);
        cmd.arg("serve")
            .env(WORKER_ENV, i.to_string())
            .env("CLUSTER_WORKERS", "1")
            .env("PORT", self.port.to_string())
            .env("QUEUE_WORKERS", self.queue_workers.to_string())
            .kill_on_drop(false);
        match &self.instance_id {
            Some(id) => cmd.env("INSTANCE_ID", format!("{id}-w{i}")),
            None => cmd.env_remove("INSTANCE_ID"),
        };
        let mut child: Child = cmd.spawn().context("start a worker process")?;
        let pid = child
            .id()
            .and_then(|p| i32::try_from(p).ok())
            .map(Pid::from_raw);
        self.pids[i] = pid;
        tracing::info!(worker = i, pid = ?pid.map(Pid::as_raw), port = self.port, "worker started");
        Ok(Box::pin(
            async move { Event::Exited(i, child.wait().await) },
        ))
    }

    fn signal_all(&self, signal: Signal) {
        for pid in self.pids.iter().flatten() {
            let _ = kill(*pid, signal);
        }
    }
}

/// Runs `config.cluster_workers` workers until a signal (exit code 0 when every
/// worker drained cleanly) or a crash loop (exit code 1).
pub async fn run(config: &Config) -> anyhow::Result<std::process::ExitCode> {
    let n = config.cluster.workers as usize;
    // PORT=0: pick one port for all of them and keep it reserved meanwhile.
    let (_reservation, port) = if config.server.port == 0 {
        let (socket, port) = crate::listener::reserve_port(config.server.host)
            .context("reserve a port for the workers")?;
        (Some(socket), port)
    } else {
        (None, config.server.port)
    };
    let mut workers = Workers {
        program: std::env::current_exe().context("find the shoal binary")?,
        port,
        instance_id: std::env::var("INSTANCE_ID").ok(),
        queue_workers: config.queue.workers,
        pids: vec![None; n],
    };
    let mut events: FuturesUnordered<BoxFuture<'static, Event>> = FuturesUnordered::new();
    for i in 0..n {
        events.push(workers.spawn(i)?);
    }
    tracing::info!(workers = n, port, "supervisor running");

    let mut restarts: VecDeque<Instant> = VecDeque::new();
    let mut stopping = false;
    let mut failed = false;
    let mut signals = std::pin::pin!(crate::shutdown::wait_for_signal());
    loop {
        tokio::select! {
            () = &mut signals => {
                // Every signal is forwarded: the first starts each worker's drain, a
                // second one makes them exit at once (their own double-signal rule).
                tracing::info!("signal received: stopping the workers");
                stopping = true;
                workers.signal_all(Signal::SIGTERM);
                signals.set(crate::shutdown::wait_for_signal());
            }
            event = events.next() => match event {
                None => break,
                Some(Event::Exited(i, status)) => {
                    workers.pids[i] = None;
                    let ok = status.as_ref().is_ok_and(ExitStatus::success);
                    if stopping {
                        // Killed by our own SIGTERM before it had installed its
                        // handler (still starting up) is a clean stop too.
                        let terminated = status.as_ref().is_ok_and(|s| {
                            std::os::unix::process::ExitStatusExt::signal(s)
                                == Some(Signal::SIGTERM as i32)
                        });
                        failed |= !(ok || terminated);
                        tracing::info!(worker = i, ?status, "worker stopped");
                        continue;
                    }
                    let now = Instant::now();
                    while restarts
                        .front()
                        .is_some_and(|t| now.duration_since(*t) > config.cluster.restart_window)
                    {
                        restarts.pop_front();
                    }
                    if restarts.len() >= config.cluster.max_restarts as usize {
                        tracing::error!(
                            worker = i,
                            ?status,
                            restarts = restarts.len(),
                            window_secs = config.cluster.restart_window.as_secs(),
                            "worker keeps dying: giving up, stopping the others"
                        );
                        stopping = true;
                        failed = true;
                        workers.signal_all(Signal::SIGTERM);
                        continue;
                    }
                    restarts.push_back(now);
                    tracing::warn!(
                        worker = i,
                        ?status,
                        delay_ms = config.cluster.restart_delay.as_millis() as u64,
                        "worker died; restarting it"
                    );
                    let delay = config.cluster.restart_delay;
                    events.push(Box::pin(async move {
                        tokio::time::sleep(delay).await;
                        Event::Restart(i)
                    }));
                }
                Some(Event::Restart(i)) => {
                    if !stopping {
                        events.push(workers.spawn(i)?);
                    }
                }
            }
        }
    }
    // Every worker has exited (their own SHUTDOWN_TIMEOUT bounds the drain).
    tracing::info!(failed, "supervisor stopped");
    Ok(if failed {
        std::process::ExitCode::FAILURE
    } else {
        std::process::ExitCode::SUCCESS
    })
}
