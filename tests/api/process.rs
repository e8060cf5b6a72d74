//! The real `shoal` binary as a child process: configuration errors, the CLI,
//! restarts, and SIGTERM with a request in flight (docs/configuration.md, docs/operations.md).

use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;

use shoal_testkit::{Node, free_port};

use crate::helpers::{PASSWORD, PATIENCE, cookie_client, plain_client, unique_email};

const BIN: &str = env!("CARGO_BIN_EXE_shoal");

/// The binary with a clean environment (nothing of ours leaks in) and a working
/// directory of `dir`, so that no `shoal.toml` is picked up by accident.
fn shoal(dir: &Path) -> Command {
    let mut command = Command::new(BIN);
    command.env_clear().current_dir(dir).stdin(Stdio::null());
    command
}

/// Starts `shoal serve` on a fresh port over `data_dir` and waits until it is ready.
async fn start_server(data_dir: &Path) -> Node {
    start_server_with(data_dir, &[]).await
}

/// [`start_server`] with more configuration.
async fn start_server_with(data_dir: &Path, extra: &[(&str, &str)]) -> Node {
    let port = free_port().to_string();
    let dir = data_dir.display().to_string();
    let env: Vec<(String, String)> = [
        ("PORT", port.as_str()),
        ("HOST", "127.0.0.1"),
        ("DATA_DIR", dir.as_str()),
        ("LOG_FORMAT", "json"),
        ("RATE_LIMIT_AUTH_PER_MIN", "1000"),
    ]
    .iter()
    .chain(extra)
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    let mut server = Node::spawn(&format!("shoal-{port}"), &env, data_dir, data_dir);
    server.wait_ready(&fresh_client()).await;
    server
}

/// A client that opens a new connection for every request (no pooled keep-alive
/// connection can hide whether the listener still accepts).
fn fresh_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .build()
        .expect("build a client")
}

/// Runs `shoal args…` with `env` to completion (bounded); returns status, stdout,
/// stderr.
async fn run(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> (ExitStatus, String, String) {
    let mut command = shoal(dir);
    command.args(args).kill_on_drop(true);
    for (k, v) in env {
        command.env(k, v);
    }
    let output = tokio::time::timeout(PATIENCE, command.output())
        .await
        .expect("shoal finishes")
        .expect("run shoal");
    (
        output.status,
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_config_value_exits_2_naming_the_key() {
    let dir = tempfile::TempDir::new().expect("tempdir");
    let data_dir = dir.path().to_str().expect("utf-8 path");

    for (key, value) in [
        ("PORT", "abc"),
        ("DB_POOL_MAX", "0"),
        ("CACHE_PROVIDER", "bogus"),
    ] {
        let (status, _, stderr) =
            run(dir.path(), &[], &[("DATA_DIR", data_dir), (key, value)]).await;
        assert_eq!(status.code(), Some(2), "{key}={value}: {stderr}");
        assert!(
            stderr.contains(key),
            "{key}={value}: stderr should name the key: {stderr}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn config_check_prints_the_configuration_with_secrets_masked() {
    let dir = tempfile::TempDir::new().expect("tempdir");
    let secrets = [
        (
            "SESSION_SECRET",
            "session-secret-0123456789abcdefghijklmnop",
        ),
        (
            "SESSION_ENCRYPTION_KEY",
            "encryption-key-0123456789abcdefghijklmno",
        ),
        (
            "JWT_ACCESS_SECRET",
            "jwt-access-secret-0123456789abcdefghijkl",
        ),
        (
            "JWT_REFRESH_SECRET",
            "jwt-refresh-secret-0123456789abcdefghijk",
        ),
    ];
    let mut env = secrets.to_vec();
    env.push(("PORT", "9999"));
    env.push((
        "DATABASE_URL",
        "postgres://shoal:hunter2hunter2@db.internal/shoal",
    ));

    let (status, stdout, stderr) = run(dir.path(), &["config", "check"], &env).await;

    assert!(status.success(), "{stderr}");
    assert!(stdout.contains("PORT = 9999"), "{stdout}");
    for (key, value) in secrets {
        assert!(
            stdout.contains(&format!("{key} = ********")),
            "{key} masked: {stdout}"
        );
        assert!(!stdout.contains(value), "{key}'s value leaked: {stdout}");
        assert!(!stderr.contains(value), "{key}'s value leaked: {stderr}");
    }
    assert!(
        !stdout.contains("hunter2hunter2"),
        "database password leaked: {stdout}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn migrate_on_a_fresh_data_dir_exits_0_and_creates_the_database() {
    let dir = tempfile::TempDir::new().expect("tempdir");

    let (status, _, stderr) = run(
        dir.path(),
        &["migrate"],
        &[
            ("DATA_DIR", dir.path().to_str().expect("utf-8 path")),
            ("LOG_FORMAT", "json"),
        ],
    )
    .await;

    assert!(status.success(), "{stderr}");
    assert!(
        dir.path().join("shoal.db").is_file(),
        "the database file exists"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn migrate_creates_a_data_dir_that_does_not_exist_yet() {
    let dir = tempfile::TempDir::new().expect("tempdir");
    let data_dir = dir.path().join("fresh").join("data");

    let (status, _, stderr) = run(
        dir.path(),
        &["migrate"],
        &[
            ("DATA_DIR", data_dir.to_str().expect("utf-8 path")),
            ("LOG_FORMAT", "json"),
        ],
    )
    .await;

    assert!(status.success(), "{stderr}");
    assert!(
        data_dir.join("shoal.db").is_file(),
        "the database file exists"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_session_survives_a_restart() {
    let dir = tempfile::TempDir::new().expect("tempdir");
    let mut server = start_server(dir.path()).await;
    let email = unique_email();
    let client = cookie_client();
    let registered = client
        .post(server.url("/api/auth/register"))
        .json(&json!({ "email": email, "password": PASSWORD, "display_name": "Restart" }))
        .send()
        .await
        .expect("register");
    assert_eq!(registered.status(), StatusCode::CREATED);
    let login = client
        .post(server.url("/api/auth/login"))
        .json(&json!({ "email": email, "password": PASSWORD }))
        .send()
        .await
        .expect("login");
    assert_eq!(login.status(), StatusCode::OK);
    let cookie = login
        .headers()
        .get("set-cookie")
        .expect("session cookie")
        .to_str()
        .expect("ascii")
        .split(';')
        .next()
        .expect("name=value")
        .to_owned();
    let body: Value = login.json().await.expect("login body");
    let token = body["access_token"]
        .as_str()
        .expect("access token")
        .to_owned();

    server.terminate();
    let status = server.wait_exit().await;
    assert_eq!(status.code(), Some(0), "clean exit:\n{}", server.log_text());
    drop(server);
    let server = start_server(dir.path()).await;

    let plain = plain_client();
    let by_cookie = plain
        .get(server.url("/api/me"))
        .header("cookie", &cookie)
        .send()
        .await
        .expect("GET /api/me");
    assert_eq!(by_cookie.status(), StatusCode::OK, "cookie after restart");
    let me: Value = by_cookie.json().await.expect("user");
    assert_eq!(me["email"], email.as_str());
    let by_token = plain
        .get(server.url("/api/me"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("GET /api/me");
    assert_eq!(by_token.status(), StatusCode::OK, "token after restart");
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_lets_an_in_flight_request_finish_and_exits_0() {
    let dir = tempfile::TempDir::new().expect("tempdir");
    let mut server = start_server(dir.path()).await;
    let client = plain_client();
    let email = unique_email();
    let registered = client
        .post(server.url("/api/auth/register"))
        .json(&json!({ "email": email, "password": PASSWORD, "display_name": "Slow" }))
        .send()
        .await
        .expect("register");
    assert_eq!(registered.status(), StatusCode::CREATED);
    let login: Value = client
        .post(server.url("/api/auth/login"))
        .json(&json!({ "email": email, "password": PASSWORD }))
        .send()
        .await
        .expect("login")
        .json()
        .await
        .expect("login body");
    let token = login["access_token"].as_str().expect("access token");
    drop(client);

    // A slow client: the headers and half of the body.
    let body = json!({ "name": "Started before SIGTERM" }).to_string();
    let (first, rest) = body.as_bytes().split_at(body.len() / 2);
    let mut slow = tokio::net::TcpStream::connect(("127.0.0.1", server.port))
        .await
        .expect("connect");
    let head = format!(
        "POST /api/workspaces HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        server.port,
        body.len()
    );
    slow.write_all(head.as_bytes())
        .await
        .expect("write headers");
    slow.write_all(first).await.expect("write half the body");
    slow.flush().await.expect("flush");

    // The event to await: the server is inside that request (it and this probe).
    let probe = fresh_client();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let health: Value = probe
            .get(server.url("/health"))
            .send()
            .await
            .expect("GET /health")
            .json()
            .await
            .expect("health body");
        if health["connections"]["in_flight_requests"].as_u64() >= Some(2) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the slow request never arrived: {health}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    server.terminate();

    // New requests are turned away: refused connections, or 503 while draining.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        match probe.get(server.url("/health/ready")).send().await {
            Err(_) => break,
            Ok(r) if r.status() == StatusCode::SERVICE_UNAVAILABLE => break,
            Ok(r) => assert_eq!(r.status(), StatusCode::OK, "readiness is 200 or 503"),
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still ready after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The slow client finishes its request and gets its answer.
    slow.write_all(rest)
        .await
        .expect("write the rest of the body");
    slow.flush().await.expect("flush");
    let mut response = Vec::new();
    tokio::time::timeout(PATIENCE, slow.read_to_end(&mut response))
        .await
        .expect("the response arrives")
        .expect("read the response");
    let response = String::from_utf8_lossy(&response);
    assert!(
        response.starts_with("HTTP/1.1 201"),
        "response: {response}\n{}",
        server.log_text()
    );
    assert!(
        response.contains("Started before SIGTERM"),
        "response: {response}"
    );

    let status = server.wait_exit().await;
    assert_eq!(status.code(), Some(0), "clean exit:\n{}", server.log_text());
}

/// The JSON lines `server` logged until it stopped.
fn json_lines(server: &Node) -> Vec<Value> {
    server
        .log_text()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not a JSON line: {l}")))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn logs_are_flat_json_lines_with_an_access_line_per_request() {
    let dir = tempfile::TempDir::new().expect("tempdir");
    let mut server = start_server(dir.path()).await;
    let response = plain_client()
        .get(server.url("/health/live"))
        .header("x-request-id", "trace-42")
        .send()
        .await
        .expect("GET /health/live");
    let instance = response
        .headers()
        .get("x-instance-id")
        .expect("instance id")
        .to_str()
        .expect("ascii")
        .to_owned();

    server.terminate();
    assert_eq!(server.wait_exit().await.code(), Some(0));

    let lines = json_lines(&server);
    assert!(!lines.is_empty(), "something was logged");
    assert!(
        server.log_text().contains(&instance),
        "the instance id is logged"
    );
    // Flat: log tools index top-level fields; nothing is nested in a span list.
    for line in &lines {
        assert!(
            line.get("spans").is_none() && line.get("span").is_none(),
            "{line}"
        );
        assert!(
            line["timestamp"].is_string() && line["level"].is_string(),
            "{line}"
        );
    }
    let access: Vec<&Value> = lines
        .iter()
        .filter(|l| l["target"] == "shoal::access")
        .collect();
    let line = access
        .iter()
        .find(|l| l["request_id"] == "trace-42")
        .unwrap_or_else(|| panic!("an access line for the request: {access:?}"));
    assert_eq!(line["instance_id"], instance.as_str(), "{line}");
    assert_eq!(line["method"], "GET", "{line}");
    assert_eq!(line["route"], "/health/live", "{line}");
    assert_eq!(line["status"], 200, "{line}");
    assert!(
        line["duration_ms"].as_f64().is_some_and(|d| d >= 0.0),
        "{line}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn log_access_false_turns_the_access_lines_off() {
    let dir = tempfile::TempDir::new().expect("tempdir");
    let mut server = start_server_with(dir.path(), &[("LOG_ACCESS", "false")]).await;
    let response = plain_client()
        .get(server.url("/health/live"))
        .send()
        .await
        .expect("GET /health/live");
    assert_eq!(response.status(), StatusCode::OK);
    server.terminate();
    assert_eq!(server.wait_exit().await.code(), Some(0));
    let lines = json_lines(&server);
    assert!(!lines.is_empty(), "start-up and shutdown are still logged");
    assert!(
        lines.iter().all(|l| l["target"] != "shoal::access"),
        "no access line: {lines:?}"
    );
}

/// One `GET path` on an open keep-alive connection; the status line and headers
/// (lower-cased), or `None` if the server closed the connection instead of answering.
async fn get_on(stream: &mut tokio::net::TcpStream, port: u16, path: &str) -> Option<String> {
    let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .expect("write a request");
    // Small responses: read until the blank line, then the body its length announces.
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(PATIENCE, stream.read(&mut byte))
            .await
            .expect("a response arrives")
            .expect("read");
        if n == 0 {
            return None;
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).await.expect("read the body");
    Some(head)
}

/// What a load balancer's keep-alive pool sees when an instance drains: new
/// connections are refused (retried elsewhere, they never arrived), while a request on
/// a connection opened before is still answered, with `Connection: close`, so that
/// the client — not the instance — closes it; then the process exits cleanly.
#[tokio::test(flavor = "multi_thread")]
async fn a_draining_instance_refuses_new_connections_and_closes_kept_alive_ones_after_an_answer() {
    let dir = tempfile::TempDir::new().expect("tempdir");
    let mut server = start_server(dir.path()).await;
    let mut kept = tokio::net::TcpStream::connect(("127.0.0.1", server.port))
        .await
        .expect("connect");
    let head = get_on(&mut kept, server.port, "/health/live")
        .await
        .expect("an answer");
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(!head.contains("connection: close"), "kept alive: {head}");

    server.terminate();

    // The same connection: every request on it is answered; the first answer given
    // while draining (a 200 whose check began before SIGTERM, or the 503) says
    // `Connection: close`, and then the server closes it.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let Some(head) = get_on(&mut kept, server.port, "/health/ready").await else {
            let status = server.wait_exit().await;
            panic!(
                "the kept-alive connection was closed without an answer ({status:?}):\n{}",
                server.log_text()
            );
        };
        assert!(
            head.starts_with("http/1.1 200") || head.starts_with("http/1.1 503"),
            "{head}"
        );
        if head.contains("connection: close") {
            break;
        }
        assert!(
            head.starts_with("http/1.1 200"),
            "a draining answer closes the connection: {head}"
        );
        assert!(
            tokio::time::Instant::now() < deadline,
            "still ready after SIGTERM"
        );
    }
    let mut rest = Vec::new();
    let n = tokio::time::timeout(PATIENCE, kept.read_to_end(&mut rest))
        .await
        .expect("the server closes the connection after its answer")
        .expect("read to the end");
    assert_eq!(n, 0, "nothing after the last answer");

    // New connections are refused (the listener is closed), until the process exits.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        match tokio::net::TcpStream::connect(("127.0.0.1", server.port)).await {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => break,
            Err(e) => panic!("unexpected connect error: {e}"),
            Ok(_) => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "still accepting connections after SIGTERM"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    let status = server.wait_exit().await;
    assert_eq!(status.code(), Some(0), "clean exit:\n{}", server.log_text());
}
