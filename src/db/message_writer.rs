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
//! that finds nothing in flight is a batch of one (the same single round trip as
//! before, plus a task hand-off). Measured (BENCHMARKS.md): one workspace fell
//! behind between 1,000 and 1,500 msg/s before, and takes 4,000 with it.
//!
//! Written here rather than taken from a crate: what is batched is this schema's
//! counter-and-insert, and the batching is a map and a task.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::oneshot;
use uuid::Uuid;

use super::messages::{self, Message, NewMessage};
use super::{Db, StoreError};

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
        match self.commit(workspace, &batch).await {
            Ok(written) => {
                for (p, message) in batch.into_iter().zip(written) {
                    let _ = p.reply.send(Ok(message));
                }
            }
            Err(e) if batch.len() == 1 => {
                if let Some(p) = batch.into_iter().next() {
                    let _ = p.reply.send(Err(e));
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
                    let result = self.commit(workspace, std::slice::from_ref(&p)).await;
                    let one = result.and_then(|written| {
                        written
                            .into_iter()
                            .next()
                            .ok_or(StoreError::Internal(sqlx::Error::RowNotFound))
                    });
                    let _ = p.reply.send(one);
                }
            }
        }
    }

    /// One commit of `batch` (see [`messages::append_committed`]), counted.
    async fn commit(&self, workspace: Uuid, batch: &[Pending]) -> Result<Vec<Message>, StoreError> {
        let new: Vec<NewMessage<'_>> = batch
            .iter()
            .map(|p| NewMessage {
                user: p.user,
                body: &p.body,
                client_id: p.client_id.as_deref(),
            })
            .collect();
        let written = messages::append_committed(&self.db, workspace, &new).await?;
        metrics::histogram!(BATCH_METRIC).record(written.len() as f64);
        Ok(written)
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
