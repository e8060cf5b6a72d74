//! Real `shoal` processes for one test: one embedded instance (SQLite under its own
//! `DATA_DIR`), or several sharing a fresh PostgreSQL database and a Redis prefix of
//! their own. Every child is killed when the cluster is dropped; on a panic the log
//! of every process is printed first, because that is where the reason usually is.

use reqwest::{Client, RequestBuilder, StatusCode};

use crate::process::Node;
use crate::rest::{self, Account, Login, SECRETS, plain_client};
use crate::services::{PrefixCleanup, Services, TestDb, free_port, token};

/// What a test changes about the default distributed cluster.
#[derive(Debug, Clone, Default)]
pub struct Spec {
    /// How many instances to start (and wait for).
    pub instances: usize,
    /// Configuration on top of the defaults.
    pub env: Vec<(String, String)>,
    /// A Redis other than the shared one (a `redis-server` the test owns).
    pub redis_url: Option<String>,
    /// A Redis Cluster (seed URLs) instead of a single Redis.
    pub redis_cluster: Option<Vec<String>>,
    /// Parameters added to the test database's URL (`sslmode=require`).
    pub database_query: Option<String>,
    /// Sentinels (addresses) and the master's name instead of a fixed Redis.
    pub sentinels: Option<(Vec<String>, String)>,
}

impl Spec {
    /// `instances` instances with the defaults.
    pub fn new(instances: usize) -> Spec {
        Spec {
            instances,
            ..Spec::default()
        }
    }

    /// Sets one configuration key for every instance.
    pub fn with(mut self, key: &str, value: impl ToString) -> Spec {
        self.env.push((key.to_owned(), value.to_string()));
        self
    }

    /// Sets several keys.
    pub fn with_all(mut self, overrides: &[(&str, &str)]) -> Spec {
        for (key, value) in overrides {
            self = self.with(key, value);
        }
        self
    }

    /// Uses this Redis instead of the shared one.
    pub fn redis(mut self, url: String) -> Spec {
        self.redis_url = Some(url);
        self
    }

    /// Finds Redis through these Sentinels (`REDIS_SENTINELS`, `REDIS_SENTINEL_MASTER`)
    /// instead of the shared Redis.
    pub fn sentinels(mut self, addresses: Vec<String>, master: &str) -> Spec {
        self.sentinels = Some((addresses, master.to_owned()));
        self
    }

    /// Adds `query` to the test database's `DATABASE_URL` (`sslmode=require`, …).
    pub fn database_query(mut self, query: &str) -> Spec {
        self.database_query = Some(query.to_owned());
        self
    }

    /// Uses this Redis Cluster (`REDIS_CLUSTER_NODES`) instead of the shared Redis.
    pub fn redis_cluster(mut self, nodes: Vec<String>) -> Spec {
        self.redis_cluster = Some(nodes);
        self
    }
}

/// Replaces or adds `overrides` in `env`.
pub fn apply<K: AsRef<str>, V: AsRef<str>>(env: &mut Vec<(String, String)>, overrides: &[(K, V)]) {
    for (key, value) in overrides {
        env.retain(|(k, _)| k != key.as_ref());
        env.push((key.as_ref().to_owned(), value.as_ref().to_owned()));
    }
}

/// The configuration every test instance starts from: loopback, JSON logs, a fast
/// registry heartbeat, budgets that do not bite (they are the subject of their own
/// tests), the shared secrets.
pub fn base_env() -> Vec<(String, String)> {
    [
        ("HOST", "127.0.0.1"),
        ("LOG_FORMAT", "json"),
        ("LOG_LEVEL", "info"),
        ("REGISTRY_HEARTBEAT", "1"),
        ("HEALTH_CHECK_TIMEOUT", "500"),
        ("SHUTDOWN_TIMEOUT", "10"),
        ("RATE_LIMIT_AUTH_PER_MIN", "100000"),
        ("RATE_LIMIT_LOGIN_PER_ACCOUNT_PER_MIN", "100000"),
        ("RATE_LIMIT_IP_PER_MIN", "100000"),
        ("RATE_LIMIT_USER_PER_MIN", "100000"),
    ]
    .iter()
    .chain(SECRETS.iter())
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect()
}

/// The instances of one test.
pub struct Cluster {
    /// The instances, in start order. Declared first: dropped (killed) first.
    pub nodes: Vec<Node>,
    /// The test's database (distributed mode).
    pub db: Option<TestDb>,
    /// The Redis the instances use (distributed mode).
    pub redis_url: String,
    /// Their `REDIS_KEY_PREFIX`.
    pub prefix: String,
    /// A client without a cookie store and without a proxy.
    pub http: Client,
    /// The configuration every instance shares (overrides applied).
    env: Vec<(String, String)>,
    embedded: bool,
    _cleanup: Option<PrefixCleanup>,
    /// Data dirs and logs; dropped last.
    dir: tempfile::TempDir,
}

impl Cluster {
    /// One embedded instance (SQLite under its own `DATA_DIR`, everything in-process).
    pub async fn embedded(overrides: &[(&str, &str)]) -> Cluster {
        let mut env = base_env();
        apply(&mut env, overrides);
        let mut cluster = Cluster {
            nodes: Vec::new(),
            db: None,
            redis_url: String::new(),
            prefix: format!("t{}", token()),
            http: plain_client(),
            env,
            embedded: true,
            _cleanup: None,
            dir: tempfile::tempdir().expect("temp dir"),
        };
        cluster.start_node().await;
        cluster
    }

    /// `n` instances on a fresh PostgreSQL database and Redis prefix, on `redis_url`
    /// or the shared Redis.
    pub async fn distributed(
        services: &Services,
        redis_url: Option<String>,
        n: usize,
        overrides: &[(&str, &str)],
    ) -> Cluster {
        let mut spec = Spec::new(n).with_all(overrides);
        spec.redis_url = redis_url;
        Cluster::start(services, spec).await
    }

    /// A fresh database and prefix, `spec.instances` instances started and ready.
    pub async fn start(services: &Services, spec: Spec) -> Cluster {
        let mut cluster = Cluster::prepare(services, &spec).await;
        for _ in 0..spec.instances {
            cluster.spawn_node();
        }
        cluster.wait_all_ready().await;
        cluster
    }

    /// A fresh database and prefix, no instance started yet.
    pub async fn prepare(services: &Services, spec: &Spec) -> Cluster {
        let db = TestDb::create(&services.admin_url).await;
        let prefix = format!("t{}", token());
        let redis_url = spec
            .redis_url
            .clone()
            .unwrap_or_else(|| services.redis_url.clone());
        let database_url = match &spec.database_query {
            Some(query) => format!("{}?{query}", db.url),
            None => db.url.clone(),
        };
        let mut env = base_env();
        apply(
            &mut env,
            &[
                ("DATABASE_URL", database_url.as_str()),
                ("REDIS_URL", redis_url.as_str()),
                ("REDIS_KEY_PREFIX", prefix.as_str()),
                // Tests run in parallel against one PostgreSQL (max_connections 100).
                ("DB_POOL_MIN", "1"),
                ("DB_POOL_MAX", "3"),
            ],
        );
        apply(&mut env, &spec.env);
        if let Some(nodes) = &spec.redis_cluster {
            env.retain(|(k, _)| k != "REDIS_URL");
            env.push(("REDIS_CLUSTER_NODES".into(), nodes.join(",")));
        }
        if let Some((addresses, master)) = &spec.sentinels {
            env.retain(|(k, _)| k != "REDIS_URL");
            env.push(("REDIS_SENTINELS".into(), addresses.join(",")));
            env.push(("REDIS_SENTINEL_MASTER".into(), master.clone()));
        }
        // A test's own Redis (or cluster) dies with it; the shared one is cleaned up.
        let shared =
            spec.redis_url.is_none() && spec.redis_cluster.is_none() && spec.sentinels.is_none();
        let cleanup = shared.then(|| PrefixCleanup {
            redis_url: redis_url.clone(),
            prefix: prefix.clone(),
        });
        Cluster {
            nodes: Vec::new(),
            db: Some(db),
            redis_url,
            prefix,
            http: plain_client(),
            env,
            embedded: false,
            _cleanup: cleanup,
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    /// The test's database; panics in embedded mode.
    pub fn db(&self) -> &TestDb {
        self.db
            .as_ref()
            .expect("a distributed cluster has a database")
    }

    /// The value this cluster's instances get for `key` (DATABASE_URL, REDIS_KEY_PREFIX, …).
    pub fn env_value(&self, key: &str) -> Option<String> {
        self.env
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
    }

    /// Sets `key` for the instances started from now on (`DATABASE_URL` through a
    /// pooler in front of the test's database, say).
    pub fn set_env(&mut self, key: &str, value: &str) {
        apply(&mut self.env, &[(key, value)]);
    }

    /// Starts one more instance (`{prefix}-{n}`) on a free port, without waiting for
    /// it; returns its index.
    pub fn spawn_node(&mut self) -> usize {
        assert!(
            !self.embedded || self.nodes.is_empty(),
            "embedded mode runs one instance"
        );
        let index = self.nodes.len();
        let id = format!("{}-{}", self.prefix, index + 1);
        let data_dir = self.dir.path().join(&id);
        std::fs::create_dir_all(&data_dir).expect("create a data dir");
        let mut env = self.env.clone();
        env.push(("PORT".into(), free_port().to_string()));
        env.push(("INSTANCE_ID".into(), id.clone()));
        env.push(("DATA_DIR".into(), data_dir.display().to_string()));
        self.nodes
            .push(Node::spawn(&id, &env, &data_dir, self.dir.path()));
        index
    }

    /// Starts one more instance and waits until it is ready; returns its index.
    pub async fn start_node(&mut self) -> usize {
        let index = self.spawn_node();
        let http = self.http.clone();
        self.nodes[index].wait_ready(&http).await;
        index
    }

    /// Waits until every instance is ready.
    pub async fn wait_all_ready(&mut self) {
        let http = self.http.clone();
        for node in &mut self.nodes {
            node.wait_ready(&http).await;
        }
    }

    /// The `i`-th instance (0-based).
    pub fn node(&self, i: usize) -> &Node {
        &self.nodes[i]
    }

    /// `http://127.0.0.1:{port}` of instance `i`.
    pub fn base(&self, i: usize) -> String {
        self.nodes[i].base.clone()
    }

    /// `GET /health/ready` status of instance `i`.
    pub async fn ready_status(&self, i: usize) -> Option<StatusCode> {
        self.http
            .get(self.nodes[i].url("/health/ready"))
            .send()
            .await
            .ok()
            .map(|r| r.status())
    }

    /// `GET {path}` on instance `i`.
    pub fn get(&self, i: usize, path: &str) -> RequestBuilder {
        self.http.get(self.nodes[i].url(path))
    }

    /// `POST {path}` on instance `i`.
    pub fn post(&self, i: usize, path: &str) -> RequestBuilder {
        self.http.post(self.nodes[i].url(path))
    }

    /// `PATCH {path}` on instance `i`.
    pub fn patch(&self, i: usize, path: &str) -> RequestBuilder {
        self.http.patch(self.nodes[i].url(path))
    }

    /// Registers a new user through instance `i`.
    pub async fn register(&self, i: usize, display_name: &str) -> Account {
        rest::register(&self.http, &self.nodes[i].base, display_name).await
    }

    /// Logs `account` in through instance `i`.
    pub async fn login(&self, i: usize, account: &Account) -> Login {
        rest::login(&self.http, &self.nodes[i].base, account).await
    }

    /// A new user, registered on instance `register_on` and logged in on `login_on`.
    pub async fn user(&self, register_on: usize, login_on: usize) -> (Account, Login) {
        let account = self.register(register_on, "Ada").await;
        let login = self.login(login_on, &account).await;
        (account, login)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for node in &self.nodes {
                eprintln!(
                    "======== log of instance {} ({}) ========\n{}",
                    node.id,
                    node.base,
                    node.log_text()
                );
            }
        }
    }
}
