//! The fan-out scenario (same method as `../shared/bench/fanout.js`).
//!
//! C receivers and P publishers, round-robin over the URLs, all join the state's
//! workspace. Message `n` (0 ≤ n < R·T) is sent by publisher `n % P` at `start + n/R`
//! with `client_id = "{prefix}-{n}"`, so the map client_id → send instant is a vector
//! indexed by `n` that receivers read without locking. Each receiver keeps its own
//! seen-bitmap and latencies (no shared hot state); they are merged at the end.

use crate::client::{Conn, Incoming, Target};
use crate::util::{State, percentile, round, self_cpu_seconds, us_to_ms};
use anyhow::{Context, Result, anyhow, bail};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::{Semaphore, mpsc, watch};

#[derive(Debug, clap::Args)]
pub(crate) struct FanoutArgs {
    /// State file written by ../shared/bench/setup.js.
    #[arg(long)]
    state: std::path::PathBuf,
    /// Base URL of an instance (repeat for several); 127.0.0.1 or localhost only.
    #[arg(long = "url", required = true)]
    urls: Vec<String>,
    /// Receiver connections.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=20_000))]
    clients: u32,
    /// Publisher connections.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=1_000))]
    publishers: u32,
    /// Messages per second, all publishers together.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=20_000))]
    rate: u32,
    /// Seconds of sending.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=120))]
    duration: u32,
    /// Seconds to wait after the last send before counting what is missing as lost.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(0..=60))]
    settle: u32,
    /// Connections being opened at once.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=1_000))]
    connect_concurrency: u32,
    /// Seconds a publisher waits for a `message:send` ack.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=60))]
    ack_timeout: u32,
    /// Seconds allowed for connecting and joining all clients.
    #[arg(long, default_value_t = 120, value_parser = clap::value_parser!(u32).range(1..=600))]
    connect_time_limit: u32,
    /// Receivers let their kernel delay TCP ACKs (Linux `TCP_QUICKACK` off), as most
    /// non-Linux clients do: by default Linux acknowledges every small segment a
    /// reader drains, a second loopback segment per delivery on these shared cores.
    #[arg(long)]
    delayed_acks: bool,
}

/// Bounds the deliveries one run tracks (memory: a bit and a latency per delivery).
const MAX_DELIVERIES: u64 = 100_000_000;
/// How often a receiver turns `TCP_QUICKACK` off again with `--delayed-acks`: Linux
/// leaves that mode by itself whenever a delayed ACK times out (a pause in the
/// traffic), so one call at the start would not last through the run.
const DELAYED_ACKS_REARM: Duration = Duration::from_millis(50);
/// Per-socket event budget of Shoal (`EVENTS_PER_SECOND` in src/realtime/handlers.rs).
const SERVER_EVENTS_PER_SOCKET: u32 = 20;

struct Shared {
    base: Instant,
    prefix: String,
    /// Send instant of message n as nanoseconds since `base`, plus 1 (0 = not sent).
    sent_at: Vec<AtomicU64>,
    acked: Vec<AtomicBool>,
    /// First-seen deliveries so far, for the early end of the settle phase.
    delivered: AtomicU64,
    sent: AtomicU64,
    ack_done: AtomicU64,
}

impl Shared {
    fn message_index(&self, client_id: &str) -> Option<usize> {
        let n: usize = client_id
            .strip_prefix(&self.prefix)?
            .strip_prefix('-')?
            .parse()
            .ok()?;
        (n < self.sent_at.len()).then_some(n)
    }
}

#[derive(Default)]
struct ReceiverStats {
    url_idx: usize,
    seen: Vec<u64>,
    /// Delivery latencies by the second (of the send phase) the message was sent in.
    latencies_us: Vec<Vec<u32>>,
    /// The latencies of messages published through another instance than this
    /// receiver's (also in `latencies_us`).
    cross_latencies_us: Vec<u32>,
    duplicates: u64,
    stray: u64,
    error: Option<String>,
}

#[derive(Default)]
struct PublisherStats {
    sent: u64,
    acked: u64,
    ack_latencies_us: Vec<u32>,
    ack_errors: BTreeMap<String, u64>,
    error: Option<String>,
}

#[derive(Serialize)]
struct SendPayload<'a> {
    workspace_id: &'a str,
    body: String,
    client_id: String,
    sent_at_ms: u128,
}

/// The `client_id` of a `message:new` array, found by its key rather than by decoding
/// the message: this loop runs once per delivery (100,000 times a second) on the same
/// two cores as the servers it measures, and a JSON parse plus copies per frame were
/// a visible share of them. Sound for Shoal's messages: a `"client_id":"` inside a
/// string value would be escaped (`\"client_id\":\"`) and cannot match, and the tool's
/// own client ids need no escaping. `None` (counted as stray) for anything else.
fn client_id_of(json: &str) -> Option<&str> {
    static KEY: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new(br#""client_id":""#));
    let at = KEY.find(json.as_bytes())? + KEY.needle().len();
    let rest = json.get(at..)?;
    let end = rest.find(['"', '\\'])?;
    (rest.as_bytes()[end] == b'"').then(|| &rest[..end])
}

#[derive(Serialize)]
struct CrossInstance {
    expected: u64,
    delivered: u64,
}

#[derive(Serialize)]
struct Report {
    clients: u32,
    publishers: u32,
    rate: u32,
    duration_s: u32,
    sent: u64,
    acked: u64,
    expected_deliveries: u64,
    delivered: u64,
    lost: u64,
    duplicates: u64,
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
    max_ms: Option<f64>,
    ack_p50_ms: Option<f64>,
    ack_p99_ms: Option<f64>,
    cross_instance: Option<CrossInstance>,
    instance_ids: Vec<String>,
    p90_ms: Option<f64>,
    p999_ms: Option<f64>,
    ack_errors: u64,
    ack_error_codes: BTreeMap<String, u64>,
    stray_messages: u64,
    send_wall_s: f64,
    achieved_rate: f64,
    deliveries_per_s: f64,
    urls: Vec<String>,
    receivers_per_url: Vec<u64>,
    connect_ms: u128,
    connection_errors: Vec<String>,
    bench_client_cpu_pct: Option<f64>,
    /// p99 of the messages sent in each second of the send phase: a stall shows as one
    /// bad second, steady queueing as all of them.
    p99_ms_per_second: Vec<Option<f64>>,
    /// Deliveries to a receiver on the publisher's own instance, and through the
    /// broker to the other instance(s), apart.
    same_instance_p50_ms: Option<f64>,
    same_instance_p99_ms: Option<f64>,
    cross_instance_p50_ms: Option<f64>,
    cross_instance_p99_ms: Option<f64>,
}

fn join_payload(wid: &str) -> serde_json::Value {
    serde_json::json!({ "workspace_id": wid })
}

async fn connect_and_join(
    target: &Target,
    token: &str,
    wid: &str,
    timeout: Duration,
) -> Result<Conn> {
    let work = async {
        let mut conn = Conn::connect(target, token, None).await?;
        let ack = conn
            .call("workspace:join", &join_payload(wid), timeout)
            .await?;
        if ack.get("ok").and_then(serde_json::Value::as_bool) != Some(true) {
            bail!("workspace:join refused: {ack}");
        }
        Ok(conn)
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| anyhow!("connect+join timed out after {timeout:?}"))?
        .with_context(|| target.origin.clone())
}

/// `all` minus the values of `part` (a sub-multiset of it), both sorted.
fn without(all: &[u32], part: &[u32]) -> Vec<u32> {
    let mut out = Vec::with_capacity(all.len().saturating_sub(part.len()));
    let mut rest = part.iter().peekable();
    for &v in all {
        if rest.peek() == Some(&&v) {
            rest.next();
        } else {
            out.push(v);
        }
    }
    out
}

fn mark(seen: &mut [u64], n: usize) -> bool {
    let (w, b) = (n / 64, 1u64 << (n % 64));
    let fresh = seen[w] & b == 0;
    seen[w] |= b;
    fresh
}

fn is_set(seen: &[u64], n: usize) -> bool {
    seen[n / 64] & (1u64 << (n % 64)) != 0
}

struct Plan {
    targets: Vec<Target>,
    wid: String,
    tokens: Vec<String>,
    publishers: usize,
    rate: u32,
    messages: usize,
    ack_timeout: Duration,
    connect_timeout: Duration,
    delayed_acks: bool,
}

impl Plan {
    fn publisher_url(&self, n: usize) -> usize {
        (n % self.publishers) % self.targets.len()
    }
}

async fn receiver(
    plan: Arc<Plan>,
    shared: Arc<Shared>,
    idx: usize,
    gate: Arc<Semaphore>,
    ready: mpsc::Sender<Result<(), String>>,
    mut stop: watch::Receiver<bool>,
) -> ReceiverStats {
    let url_idx = idx % plan.targets.len();
    let mut stats = ReceiverStats {
        url_idx,
        seen: vec![0; plan.messages.div_ceil(64)],
        latencies_us: vec![Vec::new(); plan.messages.div_ceil(plan.rate as usize)],
        ..ReceiverStats::default()
    };
    let token = &plan.tokens[idx % plan.tokens.len()];
    let conn = {
        let _permit = gate.acquire().await;
        connect_and_join(
            &plan.targets[url_idx],
            token,
            &plan.wid,
            plan.connect_timeout,
        )
        .await
    };
    let mut conn = match conn {
        Ok(c) => {
            let _ = ready.send(Ok(())).await;
            c
        }
        Err(e) => {
            let msg = format!("receiver {idx}: {e:#}");
            let _ = ready.send(Err(msg.clone())).await;
            stats.error = Some(msg);
            return stats;
        }
    };
    drop(ready);
    // One `changed` future for the whole loop: making one per received event cost
    // this client a lock and a waker registration each time.
    let stopped = stop.changed();
    tokio::pin!(stopped);
    let mut acks_deferred_at: Option<Instant> = None;
    loop {
        if plan.delayed_acks && acks_deferred_at.is_none_or(|t| t.elapsed() >= DELAYED_ACKS_REARM) {
            if let Err(e) = conn.defer_acks() {
                stats.error = Some(format!("receiver {idx}: TCP_QUICKACK: {e}"));
                break;
            }
            acks_deferred_at = Some(Instant::now());
        }
        tokio::select! {
            _ = &mut stopped => break,
            got = conn.recv() => match got {
                Ok(Incoming::Event(event)) => {
                    let now = Instant::now();
                    let json = event.json();
                    if crate::proto::event_name(json) != Some("message:new") {
                        continue;
                    }
                    let Some(n) = client_id_of(json).and_then(|c| shared.message_index(c)) else {
                        stats.stray += 1;
                        continue;
                    };
                    if !mark(&mut stats.seen, n) {
                        stats.duplicates += 1;
                        continue;
                    }
                    shared.delivered.fetch_add(1, Ordering::Relaxed);
                    let t0 = shared.sent_at[n].load(Ordering::Acquire);
                    if t0 > 0 {
                        let sent = shared.base + Duration::from_nanos(t0 - 1);
                        let us = now.saturating_duration_since(sent).as_micros();
                        let us = u32::try_from(us).unwrap_or(u32::MAX);
                        stats.latencies_us[n / plan.rate as usize].push(us);
                        if plan.publisher_url(n) != url_idx {
                            stats.cross_latencies_us.push(us);
                        }
                    }
                }
                Ok(Incoming::Ack(..)) => {}
                Ok(Incoming::Closed) => {
                    stats.error = Some(format!("receiver {idx}: closed by the server"));
                    break;
                }
                Err(e) => {
                    stats.error = Some(format!("receiver {idx}: {e:#}"));
                    break;
                }
            }
        }
    }
    conn.close().await;
    stats
}

#[allow(clippy::too_many_arguments)]
async fn publisher(
    plan: Arc<Plan>,
    shared: Arc<Shared>,
    j: usize,
    gate: Arc<Semaphore>,
    ready: mpsc::Sender<Result<(), String>>,
    mut start: watch::Receiver<Option<Instant>>,
    mut stop: watch::Receiver<bool>,
) -> PublisherStats {
    let mut stats = PublisherStats::default();
    let url_idx = j % plan.targets.len();
    let token = &plan.tokens[(plan.tokens.len() - 1) - (j % plan.tokens.len())];
    let conn = {
        let _permit = gate.acquire().await;
        connect_and_join(
            &plan.targets[url_idx],
            token,
            &plan.wid,
            plan.connect_timeout,
        )
        .await
    };
    let mut conn = match conn {
        Ok(c) => {
            let _ = ready.send(Ok(())).await;
            c
        }
        Err(e) => {
            let msg = format!("publisher {j}: {e:#}");
            let _ = ready.send(Err(msg.clone())).await;
            stats.error = Some(msg);
            return stats;
        }
    };
    drop(ready);
    // Wait for the common start (reading meanwhile so that pings are answered).
    let t_start = loop {
        if let Some(t) = *start.borrow_and_update() {
            break Some(t);
        }
        tokio::select! {
            changed = start.changed() => if changed.is_err() { break None },
            _ = stop.changed() => break None,
            got = conn.recv() => if !matches!(got, Ok(Incoming::Event(_) | Incoming::Ack(..))) {
                stats.error = Some(format!("publisher {j}: closed before the start"));
                return stats;
            },
        }
    };
    let Some(t_start) = t_start else {
        conn.close().await;
        return stats;
    };
    // ack id -> (message index, send instant)
    let mut pending: HashMap<u64, (usize, Instant)> = HashMap::new();
    let mut n = j;
    let bump = |stats: &mut PublisherStats, code: &str| {
        *stats.ack_errors.entry(code.to_owned()).or_default() += 1;
        shared.ack_done.fetch_add(1, Ordering::Relaxed);
    };
    loop {
        let due = (n < plan.messages)
            .then(|| t_start + Duration::from_secs_f64(n as f64 / f64::from(plan.rate)));
        tokio::select! {
            biased;
            _ = tokio::time::sleep_until(due.unwrap_or(t_start).into()), if due.is_some() => {
                let client_id = format!("{}-{n}", shared.prefix);
                let payload = SendPayload {
                    workspace_id: &plan.wid,
                    body: format!("fanout message {n}"),
                    client_id,
                    sent_at_ms: SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0),
                };
                let t0 = Instant::now();
                let nanos = u64::try_from(t0.duration_since(shared.base).as_nanos()).unwrap_or(u64::MAX - 1);
                shared.sent_at[n].store(nanos + 1, Ordering::Release);
                match conn.emit_with_ack("message:send", &payload).await {
                    Ok(id) => {
                        pending.insert(id, (n, t0));
                        stats.sent += 1;
                        shared.sent.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        stats.error = Some(format!("publisher {j}: send failed: {e:#}"));
                        break;
                    }
                }
                n += plan.publishers;
            }
            _ = stop.changed() => break,
            got = conn.recv() => match got {
                Ok(Incoming::Ack(id, json)) => {
                    let Some((m, t0)) = pending.remove(&id) else { continue };
                    let ack: serde_json::Value = serde_json::from_str::<Vec<serde_json::Value>>(&json)
                        .ok()
                        .and_then(|mut v| (!v.is_empty()).then(|| v.swap_remove(0)))
                        .unwrap_or_default();
                    let elapsed = t0.elapsed();
                    if elapsed > plan.ack_timeout {
                        bump(&mut stats, "ack_timeout");
                    } else if ack.get("ok").and_then(serde_json::Value::as_bool) != Some(false)
                        && ack.get("id").is_some()
                        && ack.get("seq").is_some()
                    {
                        // docs/realtime.md: the ack is `{id, seq}` (Shoal adds `ok: true`); the
                        // kit's fanout.js counts the same.
                        shared.acked[m].store(true, Ordering::Release);
                        stats.acked += 1;
                        stats.ack_latencies_us.push(u32::try_from(elapsed.as_micros()).unwrap_or(u32::MAX));
                        shared.ack_done.fetch_add(1, Ordering::Relaxed);
                    } else {
                        let code = ack.pointer("/error/code").and_then(|c| c.as_str()).unwrap_or("bad_ack").to_owned();
                        bump(&mut stats, &code);
                    }
                }
                Ok(Incoming::Event(_)) => {}
                Ok(Incoming::Closed) => {
                    stats.error = Some(format!("publisher {j}: closed by the server"));
                    break;
                }
                Err(e) => {
                    stats.error = Some(format!("publisher {j}: {e:#}"));
                    break;
                }
            }
        }
    }
    for _ in pending.drain() {
        bump(&mut stats, "ack_timeout");
    }
    conn.close().await;
    stats
}

pub(crate) async fn run(args: FanoutArgs) -> Result<()> {
    let targets = args
        .urls
        .iter()
        .map(|u| Target::parse(u))
        .collect::<Result<Vec<_>>>()?;
    let state = State::load(&args.state)?;
    let messages = u64::from(args.rate) * u64::from(args.duration);
    if messages * u64::from(args.clients) > MAX_DELIVERIES {
        bail!("clients x rate x duration is too large for one run (> {MAX_DELIVERIES} deliveries)");
    }
    let per_pub = args.rate.div_ceil(args.publishers);
    if per_pub > SERVER_EVENTS_PER_SOCKET {
        eprintln!(
            "fanout: warning: {per_pub} msg/s per publisher exceeds Shoal's per-socket budget of \
             {SERVER_EVENTS_PER_SOCKET} events/s; expect rate_limited acks (use --publishers >= {})",
            args.rate.div_ceil(SERVER_EVENTS_PER_SOCKET)
        );
    }
    let messages = usize::try_from(messages)?;
    let clients = args.clients as usize;
    let publishers = args.publishers as usize;
    let mut instance_ids = Vec::new();
    for t in &targets {
        instance_ids.push(match t.instance_id().await {
            Ok(id) => id,
            Err(e) => format!("unreachable: {e:#}"),
        });
    }
    eprintln!("fanout: instances {instance_ids:?}");
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let shared = Arc::new(Shared {
        base: Instant::now(),
        prefix: format!("fan-{:x}{:x}", nanos & 0xffff_ffff, std::process::id()),
        sent_at: (0..messages).map(|_| AtomicU64::new(0)).collect(),
        acked: (0..messages).map(|_| AtomicBool::new(false)).collect(),
        delivered: AtomicU64::new(0),
        sent: AtomicU64::new(0),
        ack_done: AtomicU64::new(0),
    });
    let plan = Arc::new(Plan {
        targets,
        wid: state.workspace_id.clone(),
        tokens: state.users.into_iter().map(|u| u.access_token).collect(),
        publishers,
        rate: args.rate,
        messages,
        ack_timeout: Duration::from_secs(args.ack_timeout.into()),
        connect_timeout: Duration::from_secs(30),
        delayed_acks: args.delayed_acks,
    });
    let cpu0 = self_cpu_seconds();
    let t_conn = Instant::now();
    let gate = Arc::new(Semaphore::new(args.connect_concurrency as usize));
    let (ready_tx, mut ready_rx) = mpsc::channel(1024);
    let (stop_tx, stop_rx) = watch::channel(false);
    let (start_tx, start_rx) = watch::channel(None);
    let mut recv_tasks = Vec::with_capacity(clients);
    for i in 0..clients {
        recv_tasks.push(tokio::spawn(receiver(
            plan.clone(),
            shared.clone(),
            i,
            gate.clone(),
            ready_tx.clone(),
            stop_rx.clone(),
        )));
    }
    let mut pub_tasks = Vec::with_capacity(publishers);
    for j in 0..publishers {
        pub_tasks.push(tokio::spawn(publisher(
            plan.clone(),
            shared.clone(),
            j,
            gate.clone(),
            ready_tx.clone(),
            start_rx.clone(),
            stop_rx.clone(),
        )));
    }
    drop(ready_tx);
    drop(start_rx);
    // Every connection reports once; bounded by the connect time limit.
    let mut connection_errors = Vec::new();
    let connect_deadline =
        tokio::time::Instant::now() + Duration::from_secs(args.connect_time_limit.into());
    let mut reported = 0usize;
    while reported < clients + publishers {
        match tokio::time::timeout_at(connect_deadline, ready_rx.recv()).await {
            Ok(Some(Ok(()))) => reported += 1,
            Ok(Some(Err(e))) => {
                reported += 1;
                connection_errors.push(e);
            }
            Ok(None) => break,
            Err(_) => {
                connection_errors.push(format!(
                    "only {reported} of {} connections ready within {} s",
                    clients + publishers,
                    args.connect_time_limit
                ));
                break;
            }
        }
    }
    let connect_ms = t_conn.elapsed().as_millis();
    if !connection_errors.is_empty() {
        let _ = stop_tx.send(true);
        for e in connection_errors.iter().take(5) {
            eprintln!("fanout: {e}");
        }
        bail!(
            "{} connection(s) failed; not measuring",
            connection_errors.len()
        );
    }
    eprintln!(
        "fanout: {clients} receivers + {publishers} publishers connected and joined in {connect_ms} ms; \
         sending {} msg/s for {} s",
        args.rate, args.duration
    );

    // Send phase: publishers follow the shared schedule from `start`.
    let start = Instant::now() + Duration::from_millis(50);
    let _ = start_tx.send(Some(start));
    let send_end = start + Duration::from_secs(args.duration.into());
    let messages_u64 = messages as u64;
    loop {
        if shared.sent.load(Ordering::Relaxed) >= messages_u64
            || Instant::now() >= send_end + Duration::from_secs(2)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let send_wall = start.elapsed().as_secs_f64().max(0.001);
    let sent_total = shared.sent.load(Ordering::Relaxed);

    // Settle: wait for outstanding acks and deliveries, at most `settle` s.
    let settle_end = Instant::now() + Duration::from_secs(args.settle.into());
    while Instant::now() < settle_end {
        let done = shared.ack_done.load(Ordering::Relaxed) >= sent_total;
        let acked = shared
            .acked
            .iter()
            .filter(|a| a.load(Ordering::Relaxed))
            .count() as u64;
        if done && shared.delivered.load(Ordering::Relaxed) >= acked * clients as u64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = stop_tx.send(true);
    let cpu = match (cpu0, self_cpu_seconds()) {
        (Some(a), Some(b)) => Some(round(100.0 * (b - a) / t_conn.elapsed().as_secs_f64(), 1)),
        _ => None,
    };

    let mut receivers = Vec::with_capacity(clients);
    for t in recv_tasks {
        receivers.push(t.await.map_err(|e| anyhow!("receiver task: {e}"))?);
    }
    let mut pubs = Vec::with_capacity(publishers);
    for t in pub_tasks {
        pubs.push(t.await.map_err(|e| anyhow!("publisher task: {e}"))?);
    }

    // Merge.
    let acked_flags: Vec<bool> = shared
        .acked
        .iter()
        .map(|a| a.load(Ordering::Acquire))
        .collect();
    let acked = acked_flags.iter().filter(|a| **a).count() as u64;
    let nurls = plan.targets.len();
    let mut receivers_per_url = vec![0u64; nurls];
    for r in &receivers {
        receivers_per_url[r.url_idx] += 1;
    }
    let (mut delivered, mut cross_expected, mut cross_delivered) = (0u64, 0u64, 0u64);
    let acked_idx: Vec<usize> = (0..acked_flags.len()).filter(|&n| acked_flags[n]).collect();
    for &n in &acked_idx {
        cross_expected += clients as u64 - receivers_per_url[plan.publisher_url(n)];
    }
    let seconds = messages.div_ceil(plan.rate as usize);
    let mut per_second: Vec<Vec<u32>> = vec![Vec::new(); seconds];
    let (mut duplicates, mut stray) = (0u64, 0u64);
    let mut cross_lat: Vec<u32> = Vec::new();
    let mut errors: Vec<String> = Vec::new();
    for r in &mut receivers {
        for &n in &acked_idx {
            if is_set(&r.seen, n) {
                delivered += 1;
                if plan.publisher_url(n) != r.url_idx {
                    cross_delivered += 1;
                }
            }
        }
        cross_lat.append(&mut r.cross_latencies_us);
        for (all, mine) in per_second.iter_mut().zip(&mut r.latencies_us) {
            all.append(mine);
        }
        duplicates += r.duplicates;
        stray += r.stray;
        errors.extend(r.error.take());
    }
    let mut ack_lat: Vec<u32> = Vec::new();
    let mut ack_error_codes: BTreeMap<String, u64> = BTreeMap::new();
    for p in &mut pubs {
        ack_lat.append(&mut p.ack_latencies_us);
        for (k, v) in &p.ack_errors {
            *ack_error_codes.entry(k.clone()).or_default() += v;
        }
        errors.extend(p.error.take());
    }
    let p99_ms_per_second = per_second
        .iter_mut()
        .map(|l| {
            l.sort_unstable();
            us_to_ms(percentile(l, 99.0))
        })
        .collect();
    let mut latencies: Vec<u32> = per_second.concat();
    latencies.sort_unstable();
    cross_lat.sort_unstable();
    let same_lat = without(&latencies, &cross_lat);
    ack_lat.sort_unstable();
    let expected = acked * clients as u64;
    let all_delivered = latencies.len() as u64;
    let report = Report {
        clients: args.clients,
        publishers: args.publishers,
        rate: args.rate,
        duration_s: args.duration,
        sent: sent_total,
        acked,
        expected_deliveries: expected,
        delivered,
        lost: expected - delivered,
        duplicates,
        p50_ms: us_to_ms(percentile(&latencies, 50.0)),
        p99_ms: us_to_ms(percentile(&latencies, 99.0)),
        max_ms: us_to_ms(latencies.last().copied()),
        ack_p50_ms: us_to_ms(percentile(&ack_lat, 50.0)),
        ack_p99_ms: us_to_ms(percentile(&ack_lat, 99.0)),
        cross_instance: (nurls > 1).then_some(CrossInstance {
            expected: cross_expected,
            delivered: cross_delivered,
        }),
        instance_ids,
        p90_ms: us_to_ms(percentile(&latencies, 90.0)),
        p999_ms: us_to_ms(percentile(&latencies, 99.9)),
        ack_errors: ack_error_codes.values().sum(),
        ack_error_codes,
        stray_messages: stray,
        send_wall_s: round(send_wall, 2),
        achieved_rate: round(sent_total as f64 / send_wall, 1),
        deliveries_per_s: round(all_delivered as f64 / send_wall, 0),
        urls: plan.targets.iter().map(|t| t.origin.clone()).collect(),
        receivers_per_url,
        connect_ms,
        connection_errors: errors.into_iter().take(20).collect(),
        bench_client_cpu_pct: cpu,
        p99_ms_per_second,
        same_instance_p50_ms: us_to_ms(percentile(&same_lat, 50.0)),
        same_instance_p99_ms: us_to_ms(percentile(&same_lat, 99.0)),
        cross_instance_p50_ms: us_to_ms(percentile(&cross_lat, 50.0)),
        cross_instance_p99_ms: us_to_ms(percentile(&cross_lat, 99.0)),
    };
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seen_bitmap() {
        let mut seen = vec![0u64; 2];
        assert!(mark(&mut seen, 0));
        assert!(mark(&mut seen, 127));
        assert!(!mark(&mut seen, 127));
        assert!(is_set(&seen, 0) && is_set(&seen, 127) && !is_set(&seen, 64));
    }

    #[test]
    fn sorted_multiset_difference() {
        assert_eq!(without(&[1, 2, 2, 3, 5], &[2, 5]), vec![1, 2, 3]);
        assert_eq!(without(&[1, 2], &[]), vec![1, 2]);
        assert_eq!(without(&[4, 4], &[4, 4]), Vec::<u32>::new());
    }

    #[test]
    fn client_id_is_found_by_its_key() {
        let frame = r#"["message:new",{"id":"a","body":"say \"client_id\":\"x\"","client_id":"fan-ab-3","seq":4}]"#;
        assert_eq!(client_id_of(frame), Some("fan-ab-3"));
        assert_eq!(client_id_of(r#"["message:new",{"client_id":null}]"#), None);
        assert_eq!(
            client_id_of(r#"["message:new",{"client_id":"a\"b"}]"#),
            None
        );
        assert_eq!(
            client_id_of(r#"["message:new",{"client_id":"unterminated"#),
            None
        );
    }

    #[test]
    fn client_ids_map_to_indices() {
        let shared = Shared {
            base: Instant::now(),
            prefix: "fan-ab".into(),
            sent_at: (0..10).map(|_| AtomicU64::new(0)).collect(),
            acked: Vec::new(),
            delivered: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            ack_done: AtomicU64::new(0),
        };
        assert_eq!(shared.message_index("fan-ab-3"), Some(3));
        assert_eq!(shared.message_index("fan-ab-10"), None);
        assert_eq!(shared.message_index("fan-cd-3"), None);
        assert_eq!(shared.message_index("fan-ab3"), None);
    }
}
