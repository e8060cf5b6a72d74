//! Through nginx: the API and Socket.IO as against one instance, the client IP that
//! rate limiting sees, a rolling restart with no failed request and no lost acked
//! message, and `kill -9` of one instance.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::harness::{
    LocalCluster, PATIENCE, User, api, eventually, follow, join_through, post_message, rest_seqs,
    user, workspace,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_api_and_socketio_work_through_nginx_and_forwarded_for_cannot_be_spoofed() {
    let Some(lc) = LocalCluster::up(2, &[("RATE_LIMIT_IP_PER_MIN", "5")]).await else {
        return;
    };
    let base = lc.base();
    let (ada, bob) = (user(&lc.http, &base).await, user(&lc.http, &base).await);
    let wid = workspace(&lc.http, &base, &ada, &[&bob]).await;

    // least_conn spreads requests over both instances, and each answers correctly.
    let mut seen = BTreeSet::new();
    for _ in 0..40 {
        let r = lc
            .http
            .get(format!("{base}/api/me"))
            .bearer_auth(&ada.token)
            .send()
            .await
            .expect("GET /api/me through nginx");
        assert_eq!(r.status(), StatusCode::OK);
        seen.insert(
            r.headers()["x-instance-id"]
                .to_str()
                .expect("id")
                .to_owned(),
        );
        assert_eq!(
            r.json::<Value>().await.expect("json")["id"],
            ada.id.as_str()
        );
    }
    let both: BTreeSet<String> = (0..2).map(|i| lc.instance_id(i)).collect();
    assert_eq!(seen, both, "requests through nginx reach every instance");

    // One request id from the edge to the instance: nginx makes one (32 hex digits)
    // when the client sent none, and passes the client's own on.
    let r = lc
        .http
        .get(format!("{base}/health/live"))
        .send()
        .await
        .expect("through nginx");
    let id = r.headers()["x-request-id"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(
        id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "nginx's $request_id reaches Shoal: {id}"
    );
    let r = lc
        .http
        .get(format!("{base}/health/live"))
        .header("x-request-id", "trace-from-the-client")
        .send()
        .await
        .expect("through nginx");
    assert_eq!(r.headers()["x-request-id"], "trace-from-the-client");

    // Operator endpoints (instance addresses, backend errors, every metric) do not
    // exist on the public server; nginx's operator server has them. Readiness and
    // liveness stay public for load balancers.
    let operator = lc.operator_base();
    for path in [
        "/metrics",
        "/dashboard",
        "/health",
        "/health/",
        "/health/cluster",
        "/health/backend",
        "/api/health",
    ] {
        let public = lc
            .http
            .get(format!("{base}{path}"))
            .send()
            .await
            .expect("through nginx");
        assert_eq!(public.status(), StatusCode::NOT_FOUND, "public {path}");
        let body = public.text().await.unwrap_or_default();
        assert!(
            !body.contains("127.0.0.1:") && !body.contains("shoal_"),
            "public {path} shows nothing of the instances: {body}"
        );
    }
    for path in ["/metrics", "/dashboard", "/health", "/health/cluster"] {
        let r = lc
            .http
            .get(format!("{operator}{path}"))
            .send()
            .await
            .expect("through nginx's operator server");
        assert_eq!(r.status(), StatusCode::OK, "operator {path}");
    }
    for path in ["/health/ready", "/health/live"] {
        let r = lc
            .http
            .get(format!("{base}{path}"))
            .send()
            .await
            .expect("through nginx");
        assert_eq!(r.status(), StatusCode::OK, "public {path}");
    }

    // Socket.IO over WebSocket through nginx: chat both ways, REST → socket events.
    let (a, _) = join_through(&base, &ada.token, &wid, None).await;
    let (mut b, _) = join_through(&base, &bob.token, &wid, None).await;
    let seq = a
        .try_send(&wid, "hello through nginx", "h1")
        .await
        .expect("acked");
    let got = b
        .try_next_where(|r| r.event == "message:new" && r.data["seq"] == seq)
        .await
        .expect("message:new through nginx");
    assert_eq!(got.data["body"], "hello through nginx");
    let (status, task) = api(
        &lc.http,
        Method::POST,
        format!("{base}/api/workspaces/{wid}/tasks"),
        &ada,
        Some(json!({ "title": "via nginx" })),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{task}");
    let created = b
        .try_next_where(|r| r.event == "task:created")
        .await
        .expect("task:created through nginx");
    assert_eq!(created.data["id"], task["id"]);
    a.close().await;
    b.close().await;

    // A client that sends its own X-Forwarded-For still has one IP budget: nginx
    // replaces the header with the peer address, which is what Shoal believes.
    let mut limited = None;
    for i in 0..20 {
        let r = lc
            .http
            .get(format!("{base}/api/me"))
            .header("x-forwarded-for", format!("203.0.113.{i}"))
            .header("x-real-ip", format!("198.51.100.{i}"))
            .send()
            .await
            .expect("anonymous GET");
        if r.status() == StatusCode::TOO_MANY_REQUESTS {
            limited = Some(i);
            break;
        }
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
    let i = limited.expect("a spoofed X-Forwarded-For escaped the per-IP rate limit");
    assert!(i <= 6, "limited only after {i} requests with a budget of 5");
}

/// What a traffic loop saw.
#[derive(Debug, Default)]
struct Traffic {
    ok: u64,
    failures: Vec<String>,
}

/// GET `/api/me` and POST a task through nginx, alternately, until `stop`; counts
/// every answer that is not a success (or no answer at all) as a failure. `done`
/// counts successes for whoever wants to know that traffic flows.
async fn traffic(
    http: reqwest::Client,
    base: String,
    user: User,
    wid: String,
    stop: CancellationToken,
    done: Arc<AtomicU64>,
) -> Traffic {
    let mut seen = Traffic::default();
    let mut i = 0u64;
    // Bounded: the roll takes seconds; this is far more than it needs.
    while !stop.is_cancelled() && i < 1_000_000 {
        i += 1;
        let get = i.is_multiple_of(2);
        let req = if get {
            http.get(format!("{base}/api/me"))
        } else {
            http.post(format!("{base}/api/workspaces/{wid}/tasks"))
                .json(&json!({ "title": format!("t{i}") }))
        };
        let (what, result) = (
            if get { "GET" } else { "POST" },
            req.bearer_auth(&user.token).send().await,
        );
        match result {
            Ok(r) if r.status().is_success() => {
                seen.ok += 1;
                done.fetch_add(1, Ordering::Relaxed);
            }
            Ok(r) => {
                let instance = r
                    .headers()
                    .get("x-instance-id")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("nginx")
                    .to_owned();
                let status = r.status();
                let body = r.text().await.unwrap_or_default();
                seen.failures
                    .push(format!("{what} → {status} from {instance}: {body}"));
            }
            Err(e) => seen.failures.push(format!("{what} → {e}")),
        }
    }
    seen
}

/// Sends chat messages through nginx until `stop`; reconnects (through nginx) when
/// its instance goes away and retries with the same `client_id`. Returns the acked seqs.
async fn chatter(base: String, user: User, wid: String, stop: CancellationToken) -> Vec<i64> {
    let (mut chat, _) = join_through(&base, &user.token, &wid, None).await;
    let mut acked = Vec::new();
    let mut i = 0;
    while !stop.is_cancelled() && i < 100_000 {
        let client_id = format!("c{i}");
        match chat.try_send(&wid, &format!("m{i}"), &client_id).await {
            Some(seq) => {
                acked.push(seq);
                i += 1;
            }
            None => {
                chat.close().await;
                chat = join_through(&base, &user.token, &wid, None).await.0;
            }
        }
    }
    chat.close().await;
    acked
}

/// Waits until every `acked` seq came out of `rx`; returns what was received.
async fn receive_all(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<i64>,
    acked: &[i64],
) -> BTreeSet<i64> {
    let want: BTreeSet<i64> = acked.iter().copied().collect();
    let mut got = BTreeSet::new();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !want.is_subset(&got) {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(seq)) => {
                got.insert(seq);
            }
            _ => break,
        }
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rolling_restart_through_nginx_fails_no_request_and_loses_no_acked_message() {
    let Some(lc) = LocalCluster::up(3, &[]).await else {
        return;
    };
    let base = lc.base();
    let (ada, bob) = (user(&lc.http, &base).await, user(&lc.http, &base).await);
    let wid = workspace(&lc.http, &base, &ada, &[&bob]).await;
    let pids_before: Vec<_> = (0..3).map(|i| lc.pid(i)).collect();

    let (chat, _) = join_through(&base, &bob.token, &wid, None).await;
    let follow_stop = CancellationToken::new();
    let (mut seqs, follower) = follow(
        base.clone(),
        bob.token.clone(),
        wid.clone(),
        chat,
        follow_stop.clone(),
    );
    let stop = CancellationToken::new();
    let done = Arc::new(AtomicU64::new(0));
    // The traffic client keeps its connections to nginx alive, as real clients do:
    // the roll never reloads nginx, so nothing resets them, and instances drain
    // their upstream keep-alive connections without a race (docs/scaling.md).
    let kept_alive = reqwest::Client::builder()
        .no_proxy()
        .timeout(std::time::Duration::from_secs(40))
        .build()
        .expect("build the traffic client");
    let loops: Vec<_> = (0..2)
        .map(|_| {
            tokio::spawn(traffic(
                kept_alive.clone(),
                base.clone(),
                ada.clone(),
                wid.clone(),
                stop.clone(),
                done.clone(),
            ))
        })
        .collect();
    let sender = tokio::spawn(chatter(
        base.clone(),
        ada.clone(),
        wid.clone(),
        stop.clone(),
    ));
    eventually("traffic flows before the roll", || {
        let done = done.clone();
        async move { (done.load(Ordering::Relaxed) >= 20).then_some(()) }
    })
    .await;

    let mut roll = lc.script(&["roll"]);
    let out = tokio::task::spawn_blocking(move || roll.output())
        .await
        .expect("join")
        .expect("run local-cluster.sh roll");
    let roll_log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "roll failed: {roll_log}");
    stop.cancel();

    let mut failures = Vec::new();
    let mut ok = 0;
    for l in loops {
        let t = l.await.expect("traffic loop");
        ok += t.ok;
        failures.extend(t.failures);
    }
    let acked = sender.await.expect("chatter");
    for (i, before) in pids_before.iter().enumerate() {
        assert_ne!(lc.pid(i), *before, "instance {i} was restarted");
    }
    assert!(
        ok > 0 && !acked.is_empty(),
        "traffic flowed during the roll"
    );
    assert!(
        failures.is_empty(),
        "{} of {} requests failed during the roll:\n{}\nroll:\n{roll_log}",
        failures.len(),
        ok as usize + failures.len(),
        failures.join("\n")
    );

    let received = receive_all(&mut seqs, &acked).await;
    follow_stop.cancel();
    let reconnects = follower.await.expect("follower");
    let lost: Vec<i64> = acked
        .iter()
        .filter(|s| !received.contains(s))
        .copied()
        .collect();
    assert!(
        lost.is_empty(),
        "{} of {} acked messages never reached the receiver ({reconnects} reconnects): {lost:?}",
        lost.len(),
        acked.len()
    );
    let stored: BTreeSet<i64> = rest_seqs(&lc.http, &base, &ada, &wid)
        .await
        .into_iter()
        .collect();
    assert!(
        acked.iter().all(|s| stored.contains(s)),
        "every acked message is stored"
    );
    eprintln!(
        "roll: {ok} requests ok, 0 failed; {} messages acked, all received ({reconnects} receiver reconnects)",
        acked.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_of_one_instance_costs_at_most_the_requests_in_flight_and_clients_resume() {
    let Some(lc) = LocalCluster::up(2, &[]).await else {
        return;
    };
    let base = lc.base();
    let (ada, bob) = (user(&lc.http, &base).await, user(&lc.http, &base).await);
    let wid = workspace(&lc.http, &base, &ada, &[&bob]).await;
    let (chat, _) = join_through(&base, &bob.token, &wid, None).await;
    // The victim: the instance holding bob's WebSocket (from the registry).
    let operator = lc.operator_base();
    let victim = eventually("the registry shows bob's WebSocket", || async {
        let r = lc
            .http
            .get(format!("{operator}/health/cluster"))
            .send()
            .await
            .ok()?;
        let cluster: Value = r.json().await.ok()?;
        let holder = cluster["instances"]
            .as_array()?
            .iter()
            .find(|i| i["ws_connections"].as_u64() >= Some(1))?["id"]
            .as_str()?
            .to_owned();
        (0..2).find(|&i| lc.instance_id(i) == holder)
    })
    .await;
    let stop_follow = CancellationToken::new();
    let (mut seqs, follower) = follow(
        base.clone(),
        bob.token.clone(),
        wid.clone(),
        chat,
        stop_follow.clone(),
    );
    let first = post_message(&lc.http, &base, &ada, &wid, "before").await;
    let mut acked = vec![first["seq"].as_i64().expect("seq")];

    const CONCURRENCY: usize = 2;
    let stop = CancellationToken::new();
    let done = Arc::new(AtomicU64::new(0));
    let loops: Vec<_> = (0..CONCURRENCY)
        .map(|_| {
            tokio::spawn(traffic(
                lc.http.clone(),
                base.clone(),
                ada.clone(),
                wid.clone(),
                stop.clone(),
                done.clone(),
            ))
        })
        .collect();
    eventually("traffic flows before the kill", || {
        let done = done.clone();
        async move { (done.load(Ordering::Relaxed) >= 20).then_some(()) }
    })
    .await;
    lc.kill9(victim).await;
    // Requests after the kill reach the survivor: nginx retries a refused connection on
    // it (a POST too: it never reached the dead instance). A POST that nginx had just
    // written on a kept-alive connection to the dead instance, before it saw that
    // connection close, is answered 502 and not retried by nginx (it cannot know the
    // request went nowhere); the client retries it with its `client_id`, as an app
    // does, and it is stored once.
    for i in 0..3 {
        let body = json!({ "body": format!("after {i}"), "client_id": format!("after-{i}") });
        let msg = eventually("a message posted after the kill", || {
            let (http, base, ada, wid, body) = (&lc.http, &base, &ada, &wid, body.clone());
            async move {
                let (status, msg) = api(
                    http,
                    Method::POST,
                    format!("{base}/api/workspaces/{wid}/messages"),
                    ada,
                    Some(body),
                )
                .await;
                status.is_success().then_some(msg)
            }
        })
        .await;
        acked.push(msg["seq"].as_i64().expect("seq"));
    }
    let after = done.load(Ordering::Relaxed);
    eventually("traffic keeps flowing after the kill", || {
        let done = done.clone();
        async move { (done.load(Ordering::Relaxed) >= after + 50).then_some(()) }
    })
    .await;
    stop.cancel();
    let mut failures = Vec::new();
    for l in loops {
        failures.extend(l.await.expect("traffic loop").failures);
    }
    assert!(
        failures.len() <= CONCURRENCY,
        "more failures than requests in flight at the kill ({CONCURRENCY}):\n{}",
        failures.join("\n")
    );

    // Bob's client reconnected through nginx to the survivor and resumed by seq.
    let received = receive_all(&mut seqs, &acked).await;
    stop_follow.cancel();
    let reconnects = follower.await.expect("follower");
    assert!(
        reconnects >= 1,
        "the client noticed the dead instance and reconnected"
    );
    let lost: Vec<i64> = acked
        .iter()
        .filter(|s| !received.contains(s))
        .copied()
        .collect();
    assert!(lost.is_empty(), "messages lost across the kill: {lost:?}");
    let stored = rest_seqs(&lc.http, &base, &ada, &wid).await;
    assert!(acked.iter().all(|s| stored.contains(s)));
}
