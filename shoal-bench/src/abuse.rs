//! Abuse scenarios: one account (`users[0]` of the state file) attacks one instance
//! while another (`users[1]`) goes on working, and the report says what the attack
//! cost the other user and the server. The victim reads `GET /api/me` and sends chat
//! messages in the state file's workspace at a fixed pace; the attacker works in a
//! workspace of its own, so that what the victim sees is the server's load, not the
//! attacker's messages. Every loop is bounded by `--seconds`.
//!
//! Scenarios: `quiet` (no attack, the reference), `sockets` (as many connections as
//! the account can get), `handshakes` (connect and drop in a loop), `replay` (joins
//! asking for the whole history, or a `since_seq` that is absurd, again and again),
//! `flood` (`message:send` as fast as acks come, on every socket it can open),
//! `logins` (wrong passwords for its own account), `exports` (exports in a loop).

use crate::client::{Conn, Target};
use crate::util::{cpu_seconds, percentile, round, tree_rss_kb};
use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken as Stop;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Scenario {
    Quiet,
    Sockets,
    Handshakes,
    Replay,
    Flood,
    Logins,
    Exports,
}

#[derive(Debug, clap::Args)]
pub(crate) struct AbuseArgs {
    /// What the attacker does.
    #[arg(value_enum)]
    scenario: Scenario,
    /// State file written by ../shared/bench/setup.js (at least 2 users).
    #[arg(long)]
    state: std::path::PathBuf,
    /// Base URL of the instance; 127.0.0.1 or localhost only.
    #[arg(long)]
    url: String,
    /// The server process (CPU and RSS are read from /proc).
    #[arg(long)]
    pid: Option<u32>,
    /// How long the attack (and the victim's measurement) lasts.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..=600))]
    seconds: u32,
    /// Connections the attacker tries to hold (sockets, flood, replay).
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=5_000))]
    sockets: u32,
    /// The attacker's source address (e.g. 127.0.0.2), so that a proxy in front tells
    /// it from the victim, who comes from the default address.
    #[arg(long)]
    attacker_ip: Option<std::net::IpAddr>,
}

#[derive(Debug, Deserialize)]
struct StateFile {
    workspace_id: String,
    users: Vec<StateUser>,
}

#[derive(Debug, Deserialize)]
struct StateUser {
    email: String,
    access_token: String,
}

/// What the attacker's requests got, by outcome (`ok`, an error code, `http_429`…).
#[derive(Default)]
struct Tally(Mutex<BTreeMap<String, u64>>);

impl Tally {
    fn add(&self, outcome: impl Into<String>) {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        *map.entry(outcome.into()).or_default() += 1;
    }
    fn snapshot(&self) -> BTreeMap<String, u64> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

#[derive(Serialize)]
struct Report {
    scenario: Scenario,
    url: String,
    seconds: u32,
    attacker: BTreeMap<String, u64>,
    victim_me: Latency,
    victim_send: Latency,
    server_cpu_percent: Option<f64>,
    /// This tool's own CPU (attacker, victim and sampler), on the same cores.
    load_generator_cpu_percent: Option<f64>,
    server_rss_max_mb: Option<f64>,
    db_pool_in_use_max: Option<f64>,
}

#[derive(Serialize)]
struct Latency {
    ok: usize,
    failed: usize,
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
    max_ms: Option<f64>,
}

impl Latency {
    fn of(mut samples: Vec<Duration>, failed: usize) -> Self {
        samples.sort();
        let ms = |d: Option<Duration>| d.map(|d| round(d.as_secs_f64() * 1000.0, 2));
        Self {
            ok: samples.len(),
            failed,
            p50_ms: ms(percentile(&samples, 50.0)),
            p99_ms: ms(percentile(&samples, 99.0)),
            max_ms: ms(samples.last().copied()),
        }
    }
}

pub(crate) async fn run(args: AbuseArgs) -> Result<()> {
    let target = Target::parse(&args.url)?;
    let text = std::fs::read_to_string(&args.state)
        .with_context(|| format!("read {}", args.state.display()))?;
    let state: StateFile = serde_json::from_str(&text).context("not a setup.js state file")?;
    let [attacker, victim, ..] = state.users.as_slice() else {
        bail!("the state file needs at least 2 users (setup.js --users 2)");
    };
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()?;
    let base = target.origin.clone();
    let attacker_http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .local_address(args.attacker_ip)
        .build()?;

    // The attacker's own workspace (its traffic stays out of the victim's room).
    let own: Value = http
        .post(format!("{base}/api/workspaces"))
        .bearer_auth(&attacker.access_token)
        .json(&json!({ "name": "abuse" }))
        .send()
        .await?
        .json()
        .await?;
    let own = own["id"]
        .as_str()
        .context("the attacker could not create a workspace")?
        .to_owned();
    if args.scenario == Scenario::Replay {
        seed_history(&target, &attacker.access_token, &own, 600).await?;
    }

    let stop = Stop::default();
    let tally = Arc::new(Tally::default());
    let window = Duration::from_secs(u64::from(args.seconds));
    let cpu_before = args.pid.and_then(|p| cpu_seconds(&p.to_string()));
    let own_cpu_before = cpu_seconds("self");
    let started = Instant::now();

    let sampler = tokio::spawn(sample_server(
        http.clone(),
        base.clone(),
        args.pid,
        stop.clone(),
    ));
    let victim_me = tokio::spawn(victim_reads(
        http.clone(),
        base.clone(),
        victim.access_token.clone(),
        stop.clone(),
    ));
    let victim_send = tokio::spawn(victim_sends(
        target.clone(),
        victim.access_token.clone(),
        state.workspace_id.clone(),
        stop.clone(),
    ));
    let attack = tokio::spawn(attack(
        args.scenario,
        Attack {
            target: target.clone(),
            http: attacker_http,
            bind: args.attacker_ip,
            token: attacker.access_token.clone(),
            email: attacker.email.clone(),
            workspace: own,
            sockets: args.sockets,
            tally: tally.clone(),
            stop: stop.clone(),
        },
    ));
    tokio::time::sleep(window).await;
    stop.cancel();
    let elapsed = started.elapsed().as_secs_f64();
    let _ = tokio::time::timeout(Duration::from_secs(15), attack).await;
    let (me, me_failed) = victim_me.await.unwrap_or_default();
    let (send, send_failed) = victim_send.await.unwrap_or_default();
    let (rss_max, pool_max) = sampler.await.unwrap_or_default();
    let cpu = match (
        cpu_before,
        args.pid.and_then(|p| cpu_seconds(&p.to_string())),
    ) {
        (Some(a), Some(b)) => Some(round((b - a) / elapsed * 100.0, 1)),
        _ => None,
    };
    let report = Report {
        scenario: args.scenario,
        url: target.origin,
        seconds: args.seconds,
        attacker: tally.snapshot(),
        victim_me: Latency::of(me, me_failed),
        victim_send: Latency::of(send, send_failed),
        server_cpu_percent: cpu,
        load_generator_cpu_percent: own_cpu_before
            .zip(cpu_seconds("self"))
            .map(|(a, b)| round((b - a) / elapsed * 100.0, 1)),
        server_rss_max_mb: rss_max.map(|kb| round(kb as f64 / 1024.0, 1)),
        db_pool_in_use_max: pool_max,
    };
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

/// Everything an attack loop needs.
#[derive(Clone)]
struct Attack {
    target: Target,
    http: reqwest::Client,
    bind: Option<std::net::IpAddr>,
    token: String,
    email: String,
    workspace: String,
    sockets: u32,
    tally: Arc<Tally>,
    stop: Stop,
}

async fn attack(scenario: Scenario, a: Attack) {
    match scenario {
        Scenario::Quiet => {}
        Scenario::Sockets => hold_sockets(&a).await,
        Scenario::Handshakes => churn_handshakes(&a).await,
        Scenario::Replay => replay(&a).await,
        Scenario::Flood => flood(&a).await,
        Scenario::Logins => wrong_logins(&a).await,
        Scenario::Exports => exports(&a).await,
    }
}

/// The reason of a failed connect, as a tally key.
fn refusal(e: &anyhow::Error) -> String {
    let text = format!("{e:#}");
    match text.split_once("connect_error: ") {
        Some((_, reason)) => format!("connect_error:{reason}"),
        None if text.contains("429") => "http_429".into(),
        None => "connect_failed".into(),
    }
}

/// Opens up to `sockets` connections and holds them until the end.
async fn hold_sockets(a: &Attack) {
    let mut held = Vec::new();
    for _ in 0..a.sockets {
        if a.stop.is_cancelled() {
            break;
        }
        match Conn::connect(&a.target, &a.token, a.bind).await {
            Ok(c) => {
                a.tally.add("connected");
                held.push(c);
            }
            Err(e) => a.tally.add(refusal(&e)),
        }
    }
    while !a.stop.is_cancelled() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for c in held {
        c.close().await;
    }
}

/// Connects and drops, 20 at a time, until the end.
async fn churn_handshakes(a: &Attack) {
    let loops = (0..20).map(|_| {
        let a = a.clone();
        async move {
            while !a.stop.is_cancelled() {
                match Conn::connect(&a.target, &a.token, a.bind).await {
                    Ok(c) => {
                        a.tally.add("connected");
                        c.close().await;
                    }
                    Err(e) => a.tally.add(refusal(&e)),
                }
            }
        }
    });
    futures::future::join_all(loops).await;
}

/// Sockets that join the attacker's workspace asking for the whole history (or an
/// absurd `since_seq`), again and again.
async fn replay(a: &Attack) {
    let asks = [json!(0), json!(i64::MAX), json!(-5), json!("x"), json!(1)];
    socket_loops(a, a.sockets.min(40), "workspace:join", move |a, i, n| {
        let since = asks[(u64::from(i) + n) as usize % asks.len()].clone();
        json!({ "workspace_id": a.workspace, "since_seq": since })
    })
    .await;
}

/// `message:send` as fast as acks come, on as many sockets as the account gets.
async fn flood(a: &Attack) {
    socket_loops(a, a.sockets.min(64), "message:send", |a, i, n| {
        json!({ "workspace_id": a.workspace, "body": "flood", "client_id": format!("f{i}-{n}") })
    })
    .await;
}

/// `sockets` connections, each sending `event` with `payload(attack, socket, n)` as
/// soon as the previous ack came, until the end (or until the server drops it); every
/// ack tallied by its error code.
async fn socket_loops(
    a: &Attack,
    sockets: u32,
    event: &'static str,
    payload: impl Fn(&Attack, u32, u64) -> Value + Clone,
) {
    let loops = (0..sockets).map(|i| {
        let a = a.clone();
        let payload = payload.clone();
        async move {
            let mut c = match Conn::connect(&a.target, &a.token, a.bind).await {
                Ok(c) => c,
                Err(e) => {
                    a.tally.add(refusal(&e));
                    return;
                }
            };
            let mut n = 0u64;
            while !a.stop.is_cancelled() {
                n += 1;
                match c
                    .call(event, &payload(&a, i, n), Duration::from_secs(10))
                    .await
                {
                    Ok(ack) => a.tally.add(outcome(&ack)),
                    Err(_) => {
                        a.tally.add("no_ack");
                        break;
                    }
                }
            }
            c.close().await;
        }
    });
    futures::future::join_all(loops).await;
}

/// Wrong passwords for the attacker's own account, 20 at a time.
async fn wrong_logins(a: &Attack) {
    request_loops(a, 20, |a, i, n| {
        a.http
            .post(format!("{}/api/auth/login", a.target.origin))
            .json(&json!({ "email": a.email, "password": format!("wrong-{i}-{n}") }))
    })
    .await;
}

/// Exports of the attacker's workspace, 10 at a time.
async fn exports(a: &Attack) {
    request_loops(a, 10, |a, _, _| {
        a.http
            .post(format!(
                "{}/api/workspaces/{}/exports",
                a.target.origin, a.workspace
            ))
            .bearer_auth(&a.token)
    })
    .await;
}

/// `loops` concurrent loops sending `request(attack, loop, n)` until the end, each
/// answer tallied by status.
async fn request_loops(
    a: &Attack,
    loops: u32,
    request: impl Fn(&Attack, u32, u64) -> reqwest::RequestBuilder + Copy,
) {
    let loops = (0..loops).map(|i| {
        let a = a.clone();
        async move {
            let mut n = 0u64;
            while !a.stop.is_cancelled() {
                n += 1;
                let status = request(&a, i, n).send().await.map(|r| r.status().as_u16());
                a.tally.add(match status {
                    Ok(s) => format!("http_{s}"),
                    Err(_) => "failed".into(),
                });
            }
        }
    });
    futures::future::join_all(loops).await;
}

/// `ok`, or the ack's error code.
fn outcome(ack: &Value) -> String {
    if ack["ok"] == true {
        "ok".into()
    } else {
        ack["error"]["code"].as_str().unwrap_or("error").to_owned()
    }
}

/// `count` chat messages in `workspace`, so that joins have a history to replay.
async fn seed_history(target: &Target, token: &str, workspace: &str, count: u32) -> Result<()> {
    let mut c = Conn::connect(target, token, None).await?;
    for n in 0..count {
        let req =
            json!({ "workspace_id": workspace, "body": "history", "client_id": format!("h{n}") });
        let ack = c
            .call("message:send", &req, Duration::from_secs(10))
            .await?;
        if ack["ok"] != true {
            // The per-socket budget (20 events/s): wait for it and go on.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    c.close().await;
    Ok(())
}

/// The victim's `GET /api/me`, ten a second.
async fn victim_reads(
    http: reqwest::Client,
    base: String,
    token: String,
    stop: Stop,
) -> (Vec<Duration>, usize) {
    let mut samples = Vec::new();
    let mut failed = 0;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut warm_up = WARM_UP;
    while !stop.is_cancelled() {
        tick.tick().await;
        let t = Instant::now();
        let answer = http
            .get(format!("{base}/api/me"))
            .bearer_auth(&token)
            .send()
            .await;
        if warm_up > 0 {
            warm_up -= 1;
            continue;
        }
        match answer {
            Ok(r) if r.status().is_success() => samples.push(t.elapsed()),
            _ => failed += 1,
        }
    }
    (samples, failed)
}

/// Requests of the victim's that are not counted: the first ones open connections and
/// warm caches, in every scenario alike.
const WARM_UP: u32 = 10;

/// The victim's `message:send` (to its ack), five a second, over one socket.
async fn victim_sends(
    target: Target,
    token: String,
    workspace: String,
    stop: Stop,
) -> (Vec<Duration>, usize) {
    let mut samples = Vec::new();
    let mut failed = 0;
    let Ok(mut c) = Conn::connect(&target, &token, None).await else {
        return (samples, 1);
    };
    let join = json!({ "workspace_id": workspace });
    if c.call("workspace:join", &join, Duration::from_secs(10))
        .await
        .is_err()
    {
        return (samples, 1);
    }
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    let mut n = 0u64;
    while !stop.is_cancelled() {
        tick.tick().await;
        n += 1;
        let req =
            json!({ "workspace_id": workspace, "body": "victim", "client_id": format!("v{n}") });
        let t = Instant::now();
        let answer = c.call("message:send", &req, Duration::from_secs(10)).await;
        if n <= u64::from(WARM_UP) {
            continue;
        }
        match answer {
            Ok(ack) if ack["ok"] == true => samples.push(t.elapsed()),
            _ => failed += 1,
        }
    }
    c.close().await;
    (samples, failed)
}

/// The server's RSS (with descendants) and database pool in use, once a second; the
/// maxima.
async fn sample_server(
    http: reqwest::Client,
    base: String,
    pid: Option<u32>,
    stop: Stop,
) -> (Option<u64>, Option<f64>) {
    let (mut rss, mut pool) = (None::<u64>, None::<f64>);
    while !stop.is_cancelled() {
        if let Some(kb) = pid.and_then(tree_rss_kb) {
            rss = Some(rss.map_or(kb, |m| m.max(kb)));
        }
        if let Ok(r) = http.get(format!("{base}/metrics")).send().await
            && let Ok(text) = r.text().await
            && let Some(v) = text
                .lines()
                .find(|l| l.starts_with("shoal_db_pool_connections{") && l.contains("in_use"))
                .and_then(|l| l.rsplit(' ').next())
                .and_then(|v| v.parse::<f64>().ok())
        {
            pool = Some(pool.map_or(v, |m| m.max(v)));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    (rss, pool)
}
