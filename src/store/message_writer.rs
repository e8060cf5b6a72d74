//! Group commit for chat messages.
//!
//! A message takes its workspace's next `seq` under the workspace row's lock, and
//! that lock is held until the commit is durable ([`messages::append_committed`]):
//! one workspace's messages commit strictly one after another, from every instance,
//! so a workspace takes at most 1 / (commit latency) messages a second. When the disk
//! slows down (measured on this project's machine: `fdatasync` at 20–200 ms now
//! and then, against ~0.1 ms usually) that falls below what the users of a
//! busy workspace send, and the queue behind the lock grows for as long as the slow
//! spell lasts. So the messages of one workspace that are waiting on this instance
//! are written together: one statement, one commit, `seq`s `n+1 ..= n+k` in the
//! order they arrived. A batch forms only while a commit is in flight; a message
//! that finds nothing in flight is written alone with exactly the statement it had
//! before (plus a task hand-off). Measured (BENCHMARKS.md): one workspace fell
//! behind between 1,000 and 1,500 msg/s before, and takes 4,000 with it.
//!
//! Written here rather than taken from a crate: what is batched is this schema's
//! counter-and-insert, and the batching is a map and a task.

use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::oneshot;
use uuid::Uuid;

use super::messages::{self, Message};
use super::{Db, StoreError};
use crate::clock;

/// At most this many messages go into one statement: 5 or 7 parameters each, far below
/// the engines' limits, and a bounded statement (16 KiB bodies) however long the
/// queue gets.
pub const MAX_BATCH: usize = 64;

/// The Prometheus histogram of messages per commit.
pub const BATCH_METRIC: &str = "shoal_chat_messages_per_commit";
/// The Prometheus histogram of a message's wait for its commit (queue included).
const COMMIT_METRIC: &str = "shoal_chat_commit_duration_seconds";

/// See the module doc. Cheap to clone (one shared queue map).
#[derive(Clone)]
pub struct MessageWriter {
    db: Db,
    inner: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    /// A workspace is in the map exactly while a writer task runs for it.
    queues: Mutex<HashMap<Uuid, VecDeque<Pending>>>,
    /// Messages queued or being written.
    waiting: AtomicUsize,
}

struct Pending {
    user: Uuid,
    body: String,
    client_id: Option<String>,
    reply: oneshot::Sender<Result<Message, StoreError>>,
}

impl MessageWriter {
    /// A writer over `db`.
    pub fn new(db: Db) -> Self {
        Self {
            db,
            inner: Arc::default(),
        }
    }

    /// Appends a message with the workspace's next `seq` and commits it, as
    /// [`messages::append_committed`] does (same errors: a `client_id` this user
    /// already used is a [`StoreError::Conflict`] and writes nothing).
    pub async fn append(
        &self,
        workspace: Uuid,
        user: Uuid,
        body: &str,
        client_id: Option<&str>,
    ) -> Result<Message, StoreError> {
        let (reply, answer) = oneshot::channel();
        let pending = Pending {
            user,
            body: body.to_owned(),
            client_id: client_id.map(str::to_owned),
            reply,
        };
        let _waiting = Waiting::count(&self.inner.waiting);
        let started = std::time::Instant::now();
        let start_writer = {
            let mut queues = self.lock();
            match queues.get_mut(&workspace) {
                Some(queue) => {
                    queue.push_back(pending);
                    false
                }
                None => {
                    queues.insert(workspace, VecDeque::from([pending]));
                    true
                }
            }
        };
        if start_writer {
            // A task of its own, not the caller's future: an HTTP handler is dropped
            // when its client goes away, and the messages queued behind it must still
            // be written.
            tokio::spawn(self.clone().write_queue(workspace));
        }
        let result = answer
            .await
            .unwrap_or(Err(StoreError::Unavailable(sqlx::Error::WorkerCrashed)));
        metrics::histogram!(COMMIT_METRIC).record(started.elapsed().as_secs_f64());
        result
    }

    /// Messages queued or being written on this instance (a gauge of `/metrics`).
    pub fn waiting(&self) -> usize {
        self.inner.waiting.load(Ordering::Relaxed)
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Uuid, VecDeque<Pending>>> {
        // The critical sections only move values in and out of the map; a panic
        // cannot leave it half-changed.
        self.inner
            .queues
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Writes the workspace's queue batch after batch until it is empty.
    async fn write_queue(self, workspace: Uuid) {
        let mut guard = QueueGuard {
            writer: &self,
            workspace,
            armed: true,
        };
        loop {
            let batch: Vec<Pending> = {
                let mut queues = self.lock();
                let Some(queue) = queues.get_mut(&workspace).filter(|q| !q.is_empty()) else {
                    queues.remove(&workspace);
                    // From here on the workspace may have a new queue and task.
                    guard.armed = false;
                    break;
                };
                let n = queue.len().min(MAX_BATCH);
                queue.drain(..n).collect()
            };
            self.write_batch(workspace, batch).await;
        }
    }

    async fn write_batch(&self, workspace: Uuid, batch: Vec<Pending>) {
        if batch.len() == 1 {
            for p in batch {
                let result = self.append_one(workspace, &p).await;
                let _ = p.reply.send(result);
            }
            return;
        }
        match append_batch(&self.db, workspace, &batch).await {
            Ok(written) => {
                metrics::histogram!(BATCH_METRIC).record(written.len() as f64);
                for (p, message) in batch.into_iter().zip(written) {
                    let _ = p.reply.send(Ok(message));
                }
            }
            // Every message would fail the same way: do not try each of them against
            // a database that is not there.
            Err(e) if e.is_unavailable() => {
                let text = e.to_string();
                let mut replies = batch.into_iter().map(|p| p.reply);
                if let Some(first) = replies.next() {
                    let _ = first.send(Err(e));
                }
                for reply in replies {
                    let again = std::io::Error::other(text.clone());
                    let _ = reply.send(Err(StoreError::Unavailable(sqlx::Error::Io(again))));
                }
            }
            // One message's `client_id` (or anything else about one row) fails the
            // whole statement: each message gets its own answer, written alone.
            Err(_) => {
                for p in batch {
                    let result = self.append_one(workspace, &p).await;
                    let _ = p.reply.send(result);
                }
            }
        }
    }

    async fn append_one(&self, workspace: Uuid, p: &Pending) -> Result<Message, StoreError> {
        let result = messages::append_committed(
            &self.db,
            workspace,
            p.user,
            &p.body,
            p.client_id.as_deref(),
        )
        .await;
        if result.is_ok() {
            metrics::histogram!(BATCH_METRIC).record(1.0);
        }
        result
    }
}

/// Counts a caller in [`Shared::waiting`] for as long as it waits (also when its
/// future is dropped half-way).
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    fn count(counter: &'a AtomicUsize) -> Self {
        counter.fetch_add(1, Ordering::Relaxed);
        Self(counter)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// If a writer task dies (a panic, the runtime shutting down), its queue goes with
/// it: the callers waiting there get an error instead of waiting for ever (their
/// reply senders are dropped), and the workspace's next message starts a new task.
struct QueueGuard<'a> {
    writer: &'a MessageWriter,
    workspace: Uuid,
    armed: bool,
}

impl Drop for QueueGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            let orphans = self.writer.lock().remove(&self.workspace);
            drop(orphans);
        }
    }
}

fn ordinal(i: usize) -> i64 {
    // A batch holds at most MAX_BATCH messages.
    i64::try_from(i).unwrap_or(i64::MAX)
}

/// Appends `batch` (two or more messages) to the workspace's chat in one commit, with
/// consecutive `seq`s in batch order, and returns them in that order. All or nothing.
async fn append_batch(
    db: &Db,
    workspace: Uuid,
    batch: &[Pending],
) -> Result<Vec<Message>, StoreError> {
    let n = ordinal(batch.len());
    let now = clock::now_micros();
    let ids: Vec<Uuid> = batch.iter().map(|_| Uuid::now_v7()).collect();
    let wid = workspace.to_string();
    let base: i64 = if db.dialect().writable_ctes() {
        // One statement, one round trip: the counter UPDATE holds the row lock until
        // the statement's own commit, as for a single message.
        let sql = format!(
            "WITH s AS (UPDATE workspaces SET last_message_seq = last_message_seq + $2 \
             WHERE id = $1 RETURNING last_message_seq - $2 AS base) \
             INSERT INTO messages (id, workspace_id, user_id, body, client_id, seq, created_at) \
             SELECT v.id, $1, v.user_id, v.body, v.client_id, s.base + v.ord, $3 \
             FROM s CROSS JOIN (VALUES {}) AS v(ord, id, user_id, body, client_id) \
             RETURNING seq",
            placeholders(batch.len(), 4, 5)
        );
        let mut query = sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql))
            .bind(wid)
            .bind(n)
            .bind(now);
        for (i, (p, id)) in batch.iter().zip(&ids).enumerate() {
            query = query
                .bind(ordinal(i) + 1)
                .bind(id.to_string())
                .bind(p.user.to_string())
                .bind(p.body.clone())
                .bind(p.client_id.clone());
        }
        let seqs = query.fetch_all(db.writer()).await?;
        // No row: the workspace is gone (as `append_committed` reports it).
        match seqs.iter().min() {
            Some(first) if seqs.len() == batch.len() => first - 1,
            _ => return Err(StoreError::Internal(sqlx::Error::RowNotFound)),
        }
    } else {
        // SQLite: no UPDATE inside WITH, and no column names for a VALUES list; two
        // statements in one transaction (one commit) on the single writer connection.
        let mut tx = db.begin().await?;
        let last: i64 = sqlx::query_scalar(
            "UPDATE workspaces SET last_message_seq = last_message_seq + $2 WHERE id = $1 \
             RETURNING last_message_seq",
        )
        .bind(wid.clone())
        .bind(n)
        .fetch_one(&mut *tx)
        .await?;
        let base = last - n;
        let sql = format!(
            "INSERT INTO messages (id, workspace_id, user_id, body, client_id, seq, created_at) \
             VALUES {}",
            placeholders(batch.len(), 1, 7)
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for (i, (p, id)) in batch.iter().zip(&ids).enumerate() {
            query = query
                .bind(id.to_string())
                .bind(wid.clone())
                .bind(p.user.to_string())
                .bind(p.body.clone())
                .bind(p.client_id.clone())
                .bind(base + ordinal(i) + 1)
                .bind(now);
        }
        query.execute(&mut *tx).await?;
        tx.commit().await?;
        base
    };
    Ok(batch
        .iter()
        .zip(ids)
        .enumerate()
        .map(|(i, (p, id))| Message {
            id,
            workspace_id: workspace,
            user_id: p.user,
            body: p.body.clone(),
            client_id: p.client_id.clone(),
            seq: base + ordinal(i) + 1,
            created_at: clock::rfc3339(now),
        })
        .collect())
}

/// `($first, …), (…), …`: `rows` tuples of `width` numbered placeholders.
fn placeholders(rows: usize, first: usize, width: usize) -> String {
    let mut out = String::new();
    for row in 0..rows {
        out.push_str(if row == 0 { "(" } else { ", (" });
        for col in 0..width {
            let sep = if col == 0 { "" } else { ", " };
            let _ = write!(out, "{sep}${}", first + row * width + col);
        }
        out.push(')');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::placeholders;

    #[test]
    fn placeholders_number_rows_after_the_fixed_parameters() {
        assert_eq!(placeholders(1, 4, 2), "($4, $5)");
        assert_eq!(placeholders(2, 1, 3), "($1, $2, $3), ($4, $5, $6)");
    }
}
