//! A Redis Cluster of three masters on free ports, started once per test binary (the
//! first test that asks for it) and stopped when the test process exits; and
//! [`OwnRedisCluster`], one a test owns and may restart nodes of.
//!
//! Each node runs under `sh -c 'redis-server … & p=$!; cat >/dev/null; kill $p'` with
//! its stdin a pipe this process holds: when the test process exits, however it ends,
//! the pipe closes, `cat` returns and the node is killed. A static cannot be dropped,
//! so this is what keeps a test run from leaving servers behind.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::tls::TestCerts;

/// The cluster, or why it could not start.
static CLUSTER: Mutex<Option<Result<Vec<u16>, String>>> = Mutex::new(None);

/// A started TLS cluster: its ports and its certificates (kept for the process's life).
type TlsCluster = (Vec<u16>, TestCerts);

/// The cluster that speaks only TLS, or why it could not start.
static TLS_CLUSTER: Mutex<Option<Result<TlsCluster, String>>> = Mutex::new(None);

/// The nodes' processes; never read, kept so their stdin pipes stay open.
static NODES: Mutex<Vec<Child>> = Mutex::new(Vec::new());

/// The seed URLs of the test cluster (`redis://127.0.0.1:{port}` of each master),
/// starting it on first use; `Err` says why `redis-server` could not make one here.
pub fn redis_cluster_nodes() -> Result<Vec<String>, String> {
    let mut cluster = CLUSTER.lock().unwrap_or_else(|p| p.into_inner());
    if cluster.is_none() {
        *cluster = Some(start(None));
    }
    match cluster.as_ref() {
        Some(Ok(ports)) => Ok(ports
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}"))
            .collect()),
        Some(Err(e)) => Err(e.clone()),
        None => Err("the cluster did not start".into()),
    }
}

/// The seed URLs (`rediss://127.0.0.1:{port}`) of a second test cluster whose nodes
/// speak only TLS (clients, cluster bus and replication), and the CA file that signed
/// their certificate; started on first use.
pub fn redis_tls_cluster_nodes() -> Result<(Vec<String>, PathBuf), String> {
    let mut cluster = TLS_CLUSTER.lock().unwrap_or_else(|p| p.into_inner());
    if cluster.is_none() {
        *cluster = Some(match TestCerts::make() {
            Some(certs) => start(Some(&certs)).map(|ports| (ports, certs)),
            None => Err("openssl cannot make certificates here".into()),
        });
    }
    match cluster.as_ref() {
        Some(Ok((ports, certs))) => Ok((
            ports
                .iter()
                .map(|p| format!("rediss://127.0.0.1:{p}"))
                .collect(),
            certs.ca.clone(),
        )),
        Some(Err(e)) => Err(e.clone()),
        None => Err("the cluster did not start".into()),
    }
}

/// A three-master Redis Cluster that one test owns: its nodes can be killed and
/// restarted (each comes back with its slots), and all of them stop when it is dropped.
pub struct OwnRedisCluster {
    /// The masters.
    pub nodes: Vec<crate::OwnRedis>,
}

impl OwnRedisCluster {
    /// Starts three nodes and makes them a cluster, or `None` (after saying why) when
    /// `redis-server` cannot make one here.
    pub async fn start() -> Option<OwnRedisCluster> {
        let mut nodes = Vec::new();
        for _ in 0..3 {
            nodes.push(crate::OwnRedis::start_cluster_node().await?);
        }
        let ports: Vec<u16> = nodes.iter().map(|n| n.port).collect();
        let made = tokio::task::spawn_blocking(move || create_cluster(None, &ports))
            .await
            .expect("redis-cli task");
        match made {
            Ok(()) => Some(OwnRedisCluster { nodes }),
            Err(e) => {
                crate::missing_service(&format!("cannot make a Redis Cluster here ({e})"));
                None
            }
        }
    }

    /// The seed URLs of every node.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(crate::OwnRedis::url).collect()
    }
}

/// A free port below the kernel's ephemeral range (32768–60999 by default), where the
/// test instances' ports (`bind :0`) come from: a node and its cluster bus port must
/// never be taken by an instance starting beside it, nor the other way round.
fn free_low_port(taken: &[u16]) -> Result<u16, String> {
    for _ in 0..1000 {
        let port = rand::random_range(20_000..32_000);
        if !taken.contains(&port) && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    Err("no free port below 32000".into())
}

fn start(tls: Option<&TestCerts>) -> Result<Vec<u16>, String> {
    let kind = if tls.is_some() {
        "tls-cluster"
    } else {
        "cluster"
    };
    let dir = std::env::temp_dir().join(format!("shoal-redis-{kind}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("cluster dir: {e}"))?;
    // Each node's port and its cluster bus port (by default port + 10000, which could
    // land anywhere, hence chosen explicitly).
    let mut taken = Vec::new();
    for _ in 0..6 {
        let port = free_low_port(&taken)?;
        taken.push(port);
    }
    let ports: Vec<u16> = taken[..3].to_vec();
    let listen = |port: u16| match tls {
        None => format!("--port {port}"),
        Some(c) => format!(
            "--port 0 --tls-port {port} --tls-cluster yes --tls-replication yes \
             --tls-auth-clients no --tls-cert-file '{}' --tls-key-file '{}' \
             --tls-ca-cert-file '{}'",
            c.cert.display(),
            c.key.display(),
            c.ca.display()
        ),
    };
    for (port, bus) in ports.iter().zip(&taken[3..]) {
        let script = format!(
            "redis-server {} --cluster-port {bus} --bind 127.0.0.1 \
             --cluster-enabled yes \
             --cluster-config-file nodes-{port}.conf --cluster-node-timeout 5000 \
             --save '' --appendonly no --logfile redis-{port}.log & p=$!; \
             cat >/dev/null; kill $p",
            listen(*port)
        );
        let child = Command::new("sh")
            .args(["-c", &script])
            .current_dir(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot run sh/redis-server: {e}"))?;
        NODES.lock().unwrap_or_else(|p| p.into_inner()).push(child);
    }
    for port in &ports {
        wait_for(&format!("node :{port} to answer PING"), || {
            cli(tls, *port, &["PING"]).is_ok_and(|out| out.trim() == "PONG")
        })?;
    }
    create_cluster(tls, &ports)?;
    // Keep the handles (and their stdin) alive for the rest of the process.
    for child in NODES.lock().unwrap_or_else(|p| p.into_inner()).iter_mut() {
        if let Some(stdin) = child.stdin.as_mut() {
            let _ = stdin.flush();
        }
    }
    Ok(ports)
}

/// Makes the running nodes at `ports` one cluster of masters, and waits until each
/// of them says it is ok.
fn create_cluster(tls: Option<&TestCerts>, ports: &[u16]) -> Result<(), String> {
    let mut create = Command::new("redis-cli");
    create.args(tls_flags(tls)).arg("--cluster").arg("create");
    for port in ports {
        create.arg(format!("127.0.0.1:{port}"));
    }
    let out = create
        .args(["--cluster-replicas", "0", "--cluster-yes"])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run redis-cli --cluster create: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "redis-cli --cluster create failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    for port in ports {
        wait_for(&format!("node :{port} to see the cluster ok"), || {
            cli(tls, *port, &["CLUSTER", "INFO"]).is_ok_and(|out| out.contains("cluster_state:ok"))
        })?;
    }
    Ok(())
}

/// `redis-cli`'s flags to speak TLS to the nodes.
fn tls_flags(tls: Option<&TestCerts>) -> Vec<String> {
    match tls {
        None => Vec::new(),
        Some(c) => vec![
            "--tls".into(),
            "--cacert".into(),
            c.ca.display().to_string(),
        ],
    }
}

fn cli(tls: Option<&TestCerts>, port: u16, args: &[&str]) -> Result<String, String> {
    let out = Command::new("redis-cli")
        .args(tls_flags(tls))
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| e.to_string())?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Polls `ready` (bounded): these are child processes starting, which tell us nothing
/// we could await.
fn wait_for(what: &str, mut ready: impl FnMut() -> bool) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ready() {
        if Instant::now() >= deadline {
            return Err(format!("timed out waiting for {what}"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}
