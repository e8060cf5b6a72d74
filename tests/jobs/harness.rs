//! The harness: a database per test on the chosen engine, an in-process app on it,
//! and `shoal` child processes on it (SIGKILLed on drop).

use std::path::{Path, PathBuf};

use shoal::config::Config;
use shoal::db::Db;
use shoal::db::jobs::{self as job_rows, JobRow};
use uuid::Uuid;

pub(crate) use shoal_testkit::{InProcessApp, Node, PATIENCE, eventually};
use shoal_testkit::{Services, TestDb};

/// The database engine of a test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Engine {
    Sqlite,
    Postgres,
}

/// A database of one test, removed at the end.
pub(crate) struct TestDatabase {
    /// `DATABASE_URL`.
    pub(crate) url: String,
    /// A scratch directory (DATA_DIR, logs, files jobs append to).
    pub(crate) dir: tempfile::TempDir,
    _pg: Option<TestDb>,
}

impl TestDatabase {
    /// A fresh database, or `None` after a loud skip (PostgreSQL unreachable).
    pub(crate) async fn create(engine: Engine) -> Option<TestDatabase> {
        let dir = tempfile::TempDir::new().expect("temp dir");
        match engine {
            Engine::Sqlite => Some(TestDatabase {
                url: format!("sqlite://{}/shoal.db", dir.path().display()),
                dir,
                _pg: None,
            }),
            Engine::Postgres => {
                let admin = Services::postgres().await?;
                let pg = TestDb::create(&admin).await;
                Some(TestDatabase {
                    url: pg.url.clone(),
                    dir,
                    _pg: Some(pg),
                })
            }
        }
    }

    /// The test configuration: loopback, port 0, fast polling, zero backoff, test
    /// handlers on; `overrides` win.
    pub(crate) fn env(&self, overrides: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut pairs: Vec<(String, String)> = vec![
            ("PORT".into(), "0".into()),
            ("HOST".into(), "127.0.0.1".into()),
            ("DATA_DIR".into(), self.dir.path().display().to_string()),
            ("DATABASE_URL".into(), self.url.clone()),
            ("QUEUE_POLL_INTERVAL".into(), "50".into()),
            ("QUEUE_BACKOFF_BASE".into(), "0".into()),
            ("QUEUE_TEST_HANDLERS".into(), "true".into()),
            ("RATE_LIMIT_AUTH_PER_MIN".into(), "100000".into()),
            (
                "RATE_LIMIT_LOGIN_PER_ACCOUNT_PER_MIN".into(),
                "100000".into(),
            ),
            ("RATE_LIMIT_IP_PER_MIN".into(), "100000".into()),
            ("RATE_LIMIT_USER_PER_MIN".into(), "100000".into()),
            ("LOG_LEVEL".into(), "warn".into()),
        ];
        for (key, value) in overrides {
            pairs.retain(|(k, _)| k != key);
            pairs.push(((*key).to_owned(), (*value).to_owned()));
        }
        pairs
    }

    /// A configuration over this database.
    pub(crate) fn config(&self, overrides: &[(&str, &str)]) -> Config {
        Config::from_pairs(self.env(overrides)).expect("a valid test configuration")
    }

    /// A migrated connection pool of the test's own (reads what the apps wrote).
    pub(crate) async fn db(&self) -> (Db, Config) {
        let config = self.config(&[]);
        let db = Db::connect(&config).await.expect("connect");
        db.migrate().await.expect("migrate");
        (db, config)
    }

    /// A file path under the scratch directory.
    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// An application running in this process over the test's database.
pub(crate) type TestApp = InProcessApp;

/// Builds and runs an app over `db` with `overrides`.
pub(crate) async fn spawn_app(db: &TestDatabase, overrides: &[(&str, &str)]) -> TestApp {
    InProcessApp::start(db.config(overrides))
        .await
        .unwrap_or_else(|e| panic!("the app builds: {e}"))
}

/// The job, read from `db`.
pub(crate) async fn job(db: &Db, id: Uuid) -> JobRow {
    job_rows::get(db.pool(), id)
        .await
        .expect("read")
        .expect("the job exists")
}

/// Waits until job `id` is in stored state `state`.
pub(crate) async fn until_state(db: &Db, id: Uuid, state: &str) -> JobRow {
    eventually(&format!("job {id} to be {state}"), || async {
        let j = job(db, id).await;
        (j.state == state).then_some(j)
    })
    .await
}

/// Enqueues `kind` with `payload` in its own committed transaction.
pub(crate) async fn enqueue(
    db: &Db,
    config: &Config,
    kind: &str,
    payload: serde_json::Value,
    options: shoal::jobs::Enqueue,
) -> Uuid {
    let mut tx = db.begin().await.expect("begin");
    let job = shoal::jobs::enqueue_raw(&mut tx, config, kind, payload.to_string(), options)
        .await
        .expect("enqueue");
    tx.commit().await.expect("commit");
    job.id
}

/// `shoal {args}` (a worker, a CLI command) with its working directory and log in
/// `dir`, SIGKILLed on drop.
pub(crate) fn run_shoal(args: &[&str], env: &[(String, String)], dir: &Path, name: &str) -> Node {
    Node::run(name, args, env, dir, dir)
}
