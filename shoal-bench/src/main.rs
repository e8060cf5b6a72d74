//! `shoal-bench`: load tool for Shoal's Socket.IO server, with the method of the
//! neutral Node kit in `../shared/bench` (`fanout.js`, `connections.js`), so that the
//! figures compare. It only targets 127.0.0.1 / localhost, and every loop is
//! bounded in count and in time (plus a hard limit on the whole run).

mod abuse;
mod client;
mod connections;
mod fanout;
mod jobs;
mod proto;
mod util;

use clap::{Parser, Subcommand};
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser)]
#[command(
    version,
    about = "Socket.IO load tool for Shoal (fan-out latency/loss, memory per idle connection)"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// C receivers + P publishers in one workspace; delivery latency, loss, duplicates.
    Fanout(fanout::FanoutArgs),
    /// N idle authenticated connections; the server's RSS per connection.
    Connections(connections::ConnectionsArgs),
    /// No-op jobs through the durable queue on `DATABASE_URL`; rates and start latency.
    Jobs(jobs::JobsArgs),
    /// One account attacks one instance; what it costs another user and the server.
    Abuse(abuse::AbuseArgs),
}

/// No run may take longer than this, whatever its arguments.
const HARD_LIMIT: Duration = Duration::from_secs(45 * 60);

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("shoal-bench: tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = rt.block_on(async {
        let work = async {
            match cli.cmd {
                Cmd::Fanout(a) => fanout::run(a).await,
                Cmd::Connections(a) => connections::run(a).await,
                Cmd::Jobs(a) => jobs::run(a).await,
                Cmd::Abuse(a) => abuse::run(a).await,
            }
        };
        tokio::time::timeout(HARD_LIMIT, work).await
    });
    // Do not wait for stray tasks (e.g. sockets still closing) at exit.
    rt.shutdown_timeout(Duration::from_secs(1));
    match outcome {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(e)) => {
            eprintln!("shoal-bench: {e:#}");
            ExitCode::FAILURE
        }
        Err(_) => {
            eprintln!("shoal-bench: hard time limit of {HARD_LIMIT:?} reached");
            ExitCode::from(3)
        }
    }
}
