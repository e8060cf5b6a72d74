//! The idle-connections scenario (same method as `../shared/bench/connections.js`):
//! open N authenticated Socket.IO connections, hold them idle, read the server's RSS
//! (the process and its descendants) before, while held, and after closing them.

use crate::client::{Conn, Incoming, Target};
use crate::util::{State, open_files_limit, round, tree_rss_kb};
use anyhow::{Result, bail};
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{Semaphore, mpsc, watch};

#[derive(Debug, clap::Args)]
pub(crate) struct ConnectionsArgs {
    /// State file written by ../shared/bench/setup.js.
    #[arg(long)]
    state: std::path::PathBuf,
    /// Base URL of the instance; 127.0.0.1 or localhost only.
    #[arg(long)]
    url: String,
    /// Connections to open.
    #[arg(short = 'n', default_value_t = 2000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    n: u32,
    /// Server process whose RSS (with its descendants) is read from /proc.
    #[arg(long)]
    pid: Option<u32>,
    /// Seconds to hold the connections idle before reading the RSS.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(0..=600))]
    hold: u32,
    /// Seconds allowed for opening the connections (the rest are not attempted).
    #[arg(long, default_value_t = 120, value_parser = clap::value_parser!(u32).range(1..=1800))]
    time_limit: u32,
    /// Connections being opened at once.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=2_000))]
    in_flight: u32,
    /// Seconds one connection may take to open and authenticate.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=120))]
    connect_timeout: u32,
    /// Loopback source addresses to bind client sockets to, round-robin
    /// (each gives its own ~28k ephemeral ports), e.g. 127.0.0.1,127.0.0.2.
    #[arg(long, value_delimiter = ',')]
    source_ips: Vec<IpAddr>,
}

#[derive(Serialize)]
struct Report {
    url: String,
    target: u32,
    opened: u64,
    failed: u64,
    rss_before_kb: Option<u64>,
    rss_with_kb: Option<u64>,
    rss_after_kb: Option<u64>,
    rss_per_conn_kb: Option<f64>,
    open_ms: u128,
    still_open_after_hold: u64,
    errors: BTreeMap<String, u64>,
    stopped_by_time_limit: bool,
    connect_rate_per_s: f64,
    source_ips: Vec<IpAddr>,
    pid: Option<u32>,
}

/// Error messages carry per-connection details (addresses); keep a short class.
fn error_class(e: &anyhow::Error) -> String {
    let s = format!("{e:#}");
    s.chars().take(120).collect()
}

pub(crate) async fn run(args: ConnectionsArgs) -> Result<()> {
    let target = Arc::new(Target::parse(&args.url)?);
    for ip in &args.source_ips {
        if !ip.is_loopback() || !ip.is_ipv4() {
            bail!("--source-ips must be IPv4 loopback addresses (127.x.y.z), got {ip}");
        }
    }
    let state = State::load(&args.state)?;
    let tokens: Arc<Vec<String>> =
        Arc::new(state.users.into_iter().map(|u| u.access_token).collect());
    let n = args.n as usize;
    if let Some(limit) = open_files_limit()
        && (n as u64) + 64 > limit
    {
        eprintln!(
            "connections: warning: {n} connections need more than the open-files limit of {limit} \
             (raise it with `ulimit -n`, for the server too)"
        );
    }
    let rss_before = args.pid.and_then(tree_rss_kb);
    let gate = Arc::new(Semaphore::new(args.in_flight as usize));
    let (result_tx, mut result_rx) = mpsc::channel::<Result<(), String>>(1024);
    let (stop_tx, stop_rx) = watch::channel(false);
    let open_now = Arc::new(AtomicU64::new(0));
    let connect_timeout = Duration::from_secs(args.connect_timeout.into());
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs(args.time_limit.into());
    let mut tasks = Vec::with_capacity(n);
    let mut attempted = 0usize;
    let mut opened = 0u64;
    let mut failed = 0u64;
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    let mut last_log = Instant::now();
    let mut tally = |r: Result<(), String>, opened: &mut u64, failed: &mut u64| match r {
        Ok(()) => *opened += 1,
        Err(e) => {
            *failed += 1;
            *errors.entry(e).or_default() += 1;
        }
    };
    while attempted < n && Instant::now() < deadline {
        // A permit per connection being opened; wait for one, tallying results meanwhile.
        let permit = tokio::select! {
            p = gate.clone().acquire_owned() => p?,
            _ = tokio::time::sleep_until(deadline.into()) => break,
        };
        while let Ok(r) = result_rx.try_recv() {
            tally(r, &mut opened, &mut failed);
        }
        let i = attempted;
        attempted += 1;
        let bind =
            (!args.source_ips.is_empty()).then(|| args.source_ips[i % args.source_ips.len()]);
        let (target, tokens, tx, mut stop, open_now) = (
            target.clone(),
            tokens.clone(),
            result_tx.clone(),
            stop_rx.clone(),
            open_now.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let token = &tokens[i % tokens.len()];
            let res = tokio::time::timeout(connect_timeout, Conn::connect(&target, token, bind)).await;
            drop(permit);
            let mut conn = match res {
                Ok(Ok(c)) => c,
                Ok(Err(e)) => {
                    let _ = tx.send(Err(error_class(&e))).await;
                    return;
                }
                Err(_) => {
                    let _ = tx.send(Err("connect timeout".to_owned())).await;
                    return;
                }
            };
            open_now.fetch_add(1, Ordering::Relaxed);
            let _ = tx.send(Ok(())).await;
            drop(tx);
            // Idle: answer pings, drop whatever arrives, until told to stop.
            loop {
                tokio::select! {
                    _ = stop.changed() => break,
                    got = conn.recv() => if !matches!(got, Ok(Incoming::Event(_) | Incoming::Ack(..))) { break },
                }
            }
            open_now.fetch_sub(1, Ordering::Relaxed);
            conn.close().await;
        }));
        if last_log.elapsed() > Duration::from_secs(2) {
            last_log = Instant::now();
            eprintln!("connections: {opened} open, {failed} failed, {attempted} attempted");
        }
    }
    drop(result_tx);
    // Every started attempt reports within its connect timeout.
    let collect_deadline = tokio::time::Instant::now() + connect_timeout + Duration::from_secs(5);
    while let Ok(Some(r)) = tokio::time::timeout_at(collect_deadline, result_rx.recv()).await {
        tally(r, &mut opened, &mut failed);
    }
    let open_ms = t0.elapsed().as_millis();
    let stopped_by_time_limit = attempted < n;
    eprintln!(
        "connections: {opened} open, {failed} failed in {open_ms} ms; holding {} s",
        args.hold
    );
    tokio::time::sleep(Duration::from_secs(args.hold.into())).await;
    let still_open = open_now.load(Ordering::Relaxed);
    let rss_with = args.pid.and_then(tree_rss_kb);

    let _ = stop_tx.send(true);
    let close_deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    for t in tasks {
        if tokio::time::timeout_at(close_deadline, t).await.is_err() {
            break;
        }
    }
    tokio::time::sleep(Duration::from_secs(u64::from(args.hold.min(3)))).await;
    let rss_after = args.pid.and_then(tree_rss_kb);

    let report = Report {
        url: target.origin.clone(),
        target: args.n,
        opened,
        failed,
        rss_before_kb: rss_before,
        rss_with_kb: rss_with,
        rss_after_kb: rss_after,
        rss_per_conn_kb: match (rss_before, rss_with) {
            (Some(b), Some(w)) if opened > 0 => {
                Some(round((w as f64 - b as f64) / opened as f64, 2))
            }
            _ => None,
        },
        open_ms,
        still_open_after_hold: still_open,
        errors,
        stopped_by_time_limit,
        connect_rate_per_s: round(opened as f64 / (open_ms.max(1) as f64 / 1000.0), 1),
        source_ips: args.source_ips,
        pid: args.pid,
    };
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}
