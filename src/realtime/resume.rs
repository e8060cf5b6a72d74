//! Offset recovery for chat messages: per socket and per joined workspace, the `seq`
//! of the last `message:new` delivered while the socket is *joining* (not yet merged
//! into its room's live group, see [`super::fanout`]), and the catch-up from the
//! database that fills any hole (after `workspace:join {since_seq}`, a `seq` jump in
//! its delivery, or a pub/sub [`Gap`](crate::pubsub::Delivery::Gap)).
//!
//! # Why this is gap-free and duplicate-free
//!
//! - Every `message:new` to a joining socket goes through its [`Cursor`] under one
//!   mutex, and only `last_seq + 1` is ever emitted; anything `<= last_seq` is dropped.
//! - While a catch-up runs, the cursor is *pending*: live messages are parked in a
//!   map instead of emitted, and only the catch-up task advances `last_seq`. The
//!   cursor is made pending (and the socket registered in its chat room) BEFORE the
//!   database is read, so a message is either in the query result or parked — never
//!   neither.
//! - `seq` is allocated under the workspace row lock and only published after
//!   commit, so when `seq = n` is visible, every `seq < n` is committed: reading the
//!   database after seeing a jump always finds the missing ones.
//! - A catch-up reads at most [`REPLAY_LIMIT`] messages; beyond that it skips to the
//!   head and reports `recovered: false` so that the client reloads over REST.
//! - Once caught up and level with its room, the socket goes *live*: from then on the
//!   room's one cursor stands for it ([`super::fanout`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use socketioxide::extract::SocketRef;
use uuid::Uuid;

use super::Ctx;
use super::expiry::Lease;
use super::fanout::{ChatMessage, Member};
use super::protocol::Resync;
use crate::db::StoreError;
use crate::db::messages;

/// The most messages one catch-up replays (a `workspace:join {since_seq}` or a repair
/// after a pub/sub gap). Beyond it the client is told `recovered: false`.
pub const REPLAY_LIMIT: u32 = 500;

/// Per-connection realtime state, kept in the socket's extensions.
pub(crate) struct Conn {
    /// The authenticated user.
    pub(crate) user_id: Uuid,
    /// The login (refresh family) it authenticated with: its end closes the socket.
    pub(crate) family_id: Uuid,
    /// This connection's key in the presence backend: `{instance}:{sid}`, unique
    /// across instances.
    pub(crate) presence_key: String,
    /// Joined workspaces and their delivery cursors.
    workspaces: Mutex<HashMap<Uuid, Cursor>>,
    /// Tags each (re)join so a stale catch-up can tell it was superseded.
    generations: AtomicU64,
    /// Until when its credentials hold ([`super::expiry`]).
    pub(crate) lease: Lease,
    /// Events refused for the socket's budget, per window.
    pub(crate) refusals: Refusals,
}

/// How long refused events are counted together.
pub(crate) const REFUSALS_WINDOW: Duration = Duration::from_secs(5);

/// Events refused for a socket's budget in the current [`REFUSALS_WINDOW`].
#[derive(Default)]
pub(crate) struct Refusals(Mutex<Option<(std::time::Instant, u32)>>);

impl Refusals {
    /// Counts one refusal at `now`; how many the window holds with it.
    pub(crate) fn note(&self, now: std::time::Instant) -> u32 {
        let mut window = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let (start, n) = match *window {
            Some((start, n)) if now.duration_since(start) < REFUSALS_WINDOW => (start, n + 1),
            _ => (now, 1),
        };
        *window = Some((start, n));
        n
    }
}

/// Where one socket is in one workspace's chat.
struct Cursor {
    generation: u64,
    /// The last `seq` emitted to the socket (or the head it started from); not kept
    /// up to date once `live` (the room's head is then the socket's position).
    last_seq: i64,
    /// `Some` while a catch-up runs: live messages parked by `seq`.
    pending: Option<BTreeMap<i64, Arc<ChatMessage>>>,
    /// A catch-up (join, repair) is scheduled or running: not ready to merge even
    /// when nothing is parked.
    catching_up: bool,
    /// Merged into the room's live group.
    live: bool,
}

/// What live delivery of one message to one socket did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Offer {
    /// Emitted, parked, or already delivered: nothing to do.
    Done,
    /// A hole before this message: run a catch-up with this generation.
    CatchUp(u64),
    /// The socket's outgoing buffer is full or closed: it must reconnect and resume.
    Failed,
}

/// The outcome of a catch-up.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SyncReport {
    /// Messages emitted from the database.
    pub(crate) replayed: usize,
    /// False when more than [`REPLAY_LIMIT`] were missing and the cursor skipped to
    /// the head.
    pub(crate) recovered: bool,
    /// The cursor after the catch-up.
    pub(crate) last_seq: i64,
}

/// Why a catch-up stopped.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SyncError {
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The socket cannot take more packets (full buffer or closed).
    #[error("socket buffer full or closed")]
    Emit,
    /// The socket left or re-joined the workspace meanwhile.
    #[error("superseded")]
    Superseded,
}

impl Conn {
    pub(crate) fn new(user_id: Uuid, family_id: Uuid, presence_key: String, lease: Lease) -> Self {
        Self {
            user_id,
            family_id,
            presence_key,
            lease,
            refusals: Refusals::default(),
            workspaces: Mutex::new(HashMap::new()),
            generations: AtomicU64::new(0),
        }
    }

    fn cursors(&self) -> MutexGuard<'_, HashMap<Uuid, Cursor>> {
        self.workspaces.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the socket joined `workspace`.
    pub(crate) fn is_joined(&self, workspace: Uuid) -> bool {
        self.cursors().contains_key(&workspace)
    }

    /// The joined workspaces.
    pub(crate) fn joined(&self) -> Vec<Uuid> {
        self.cursors().keys().copied().collect()
    }

    /// Starts (or restarts) following `workspace` after `since`, pending; called by
    /// [`super::fanout::ChatRooms::enter`] under the room lock, before [`sync`] runs with
    /// the returned generation.
    pub(crate) fn begin(&self, workspace: Uuid, since: i64) -> u64 {
        let generation = self.generations.fetch_add(1, Ordering::Relaxed) + 1;
        self.cursors().insert(
            workspace,
            Cursor {
                generation,
                last_seq: since,
                pending: Some(BTreeMap::new()),
                catching_up: true,
                live: false,
            },
        );
        generation
    }

    /// Stops following `workspace`; false when it was not joined.
    pub(crate) fn end(&self, workspace: Uuid) -> bool {
        self.cursors().remove(&workspace).is_some()
    }

    /// Marks `workspace` pending for a repair after a pub/sub gap; `None` when not
    /// joined or a catch-up already runs (it will see the same database).
    pub(crate) fn begin_repair(&self, workspace: Uuid) -> Option<u64> {
        let mut cursors = self.cursors();
        let cursor = cursors.get_mut(&workspace)?;
        if cursor.pending.is_some() || cursor.live {
            return None;
        }
        cursor.pending = Some(BTreeMap::new());
        cursor.catching_up = true;
        Some(cursor.generation)
    }

    /// A scheduled catch-up found nothing left to do (the hole filled meanwhile).
    fn finish_catch_up(&self, workspace: Uuid, generation: u64) {
        let _ = self.with_cursor(workspace, generation, |c| c.catching_up = false);
    }

    /// The position of a joining socket that has nothing to catch up (no catch-up
    /// running, nothing parked): it may merge into the room at this `seq`.
    pub(crate) fn ready_at(&self, workspace: Uuid) -> Option<i64> {
        self.cursors()
            .get(&workspace)
            .filter(|c| !c.live && !c.catching_up && c.pending.is_none())
            .map(|c| c.last_seq)
    }

    /// The socket merged into its room's live group (under the room lock).
    pub(crate) fn go_live(&self, workspace: Uuid) {
        if let Some(c) = self.cursors().get_mut(&workspace) {
            c.live = true;
        }
    }

    /// Whether (`workspace`, `generation`) still waits for a hole to be filled.
    pub(crate) fn is_pending(&self, workspace: Uuid, generation: u64) -> bool {
        self.cursors()
            .get(&workspace)
            .is_some_and(|c| c.generation == generation && c.pending.is_some())
    }

    /// Delivery of `message` to a joining `socket` (see the module doc).
    pub(crate) fn offer(&self, socket: &SocketRef, message: &Arc<ChatMessage>) -> Offer {
        let mut cursors = self.cursors();
        let Some(cursor) = cursors.get_mut(&message.workspace_id) else {
            return Offer::Done;
        };
        if cursor.live || message.seq <= cursor.last_seq {
            return Offer::Done;
        }
        if let Some(pending) = &mut cursor.pending {
            pending.insert(message.seq, message.clone());
            // Usually the hole was only reordering (two instances published their
            // commits in the other order): the late message fills it, and what is now
            // contiguous goes out at once, with no database read.
            while let Some(entry) = pending.first_entry() {
                let seq = *entry.key();
                if seq <= cursor.last_seq {
                    entry.remove();
                } else if seq == cursor.last_seq + 1 {
                    if emit(socket, &entry.remove()).is_err() {
                        return Offer::Failed;
                    }
                    cursor.last_seq = seq;
                } else {
                    break;
                }
            }
            if pending.is_empty() {
                cursor.pending = None;
            }
            return Offer::Done;
        }
        if message.seq == cursor.last_seq + 1 {
            if emit(socket, message).is_err() {
                return Offer::Failed;
            }
            cursor.last_seq = message.seq;
            return Offer::Done;
        }
        let mut pending = BTreeMap::new();
        pending.insert(message.seq, message.clone());
        cursor.pending = Some(pending);
        cursor.catching_up = true;
        Offer::CatchUp(cursor.generation)
    }

    /// Runs `f` on the cursor of `workspace` if it still has `generation`.
    fn with_cursor<T>(
        &self,
        workspace: Uuid,
        generation: u64,
        f: impl FnOnce(&mut Cursor) -> T,
    ) -> Result<T, SyncError> {
        let mut cursors = self.cursors();
        match cursors.get_mut(&workspace) {
            Some(cursor) if cursor.generation == generation => Ok(f(cursor)),
            _ => Err(SyncError::Superseded),
        }
    }
}

fn emit(socket: &SocketRef, message: &ChatMessage) -> Result<(), SyncError> {
    message.emit(socket).map_err(|_| SyncError::Emit)
}

/// The newest `seq` of `workspace` (0 without messages).
pub(crate) async fn head_seq(ctx: &Ctx, workspace: Uuid) -> Result<i64, StoreError> {
    let newest = messages::list_before(ctx.state.db.pool(), workspace, None, 1).await?;
    Ok(newest.first().map_or(0, |m| m.seq))
}

/// Catches the pending cursor of (`socket`, `workspace`, `generation`) up from the
/// database, then flushes what was parked meanwhile and clears the pending state.
/// With `from_head`, the cursor first moves to the newest `seq` (a join without
/// `since_seq`: only messages after the join are delivered).
pub(crate) async fn sync(
    ctx: &Ctx,
    socket: &SocketRef,
    conn: &Conn,
    workspace: Uuid,
    generation: u64,
    from_head: bool,
) -> Result<SyncReport, SyncError> {
    let mut replayed = 0;
    let mut recovered = true;
    if from_head {
        let head = head_seq(ctx, workspace).await?;
        conn.with_cursor(workspace, generation, |c| c.last_seq = c.last_seq.max(head))?;
    }
    let mut first = !from_head;
    loop {
        let after = conn.with_cursor(workspace, generation, |c| c.last_seq)?;
        let rows =
            messages::list_after(ctx.state.db.pool(), workspace, after, REPLAY_LIMIT + 1).await?;
        if std::mem::take(&mut first) && rows.is_empty() {
            // Nothing after the client's `since_seq`: it is the head, or beyond it. A
            // cursor beyond the head would wait for messages that do not exist (and park
            // every live one), so it moves back to the head and the client is told to
            // reload. One more query, on resumes that find nothing only.
            let head = head_seq(ctx, workspace).await?;
            conn.with_cursor(workspace, generation, |c| {
                if c.last_seq > head {
                    c.last_seq = head;
                    recovered = false;
                }
            })?;
        }
        let skip_to = if rows.len() > REPLAY_LIMIT as usize {
            Some(head_seq(ctx, workspace).await?)
        } else {
            None
        };
        let done =
            conn.with_cursor(workspace, generation, |cursor| -> Result<bool, SyncError> {
                match skip_to {
                    Some(head) => {
                        recovered = false;
                        cursor.last_seq = cursor.last_seq.max(head);
                    }
                    None => {
                        for m in &rows {
                            if m.seq == cursor.last_seq + 1 {
                                let Some(encoded) = ChatMessage::encode(m) else {
                                    continue;
                                };
                                emit(socket, &encoded)?;
                                cursor.last_seq = m.seq;
                                replayed += 1;
                            }
                        }
                    }
                }
                let mut parked = cursor.pending.take().unwrap_or_default();
                while let Some(entry) = parked.first_entry() {
                    let seq = *entry.key();
                    if seq <= cursor.last_seq {
                        entry.remove();
                    } else if seq == cursor.last_seq + 1 {
                        emit(socket, &entry.remove())?;
                        cursor.last_seq = seq;
                    } else {
                        break;
                    }
                }
                if parked.is_empty() {
                    Ok(true)
                } else {
                    // Still a hole (a message committed after our read, published before
                    // the parked one arrived): read again.
                    cursor.pending = Some(parked);
                    Ok(false)
                }
            })??;
        if done {
            let last_seq = conn.with_cursor(workspace, generation, |c| {
                c.catching_up = false;
                c.last_seq
            })?;
            return Ok(SyncReport {
                replayed,
                recovered,
                last_seq,
            });
        }
    }
}

/// How long a `seq` hole may stay open before the database is asked. Messages of one
/// workspace committed on different instances reach the hub in publish order, not
/// `seq` order; measured under fan-out load, the late one arrives within a few
/// milliseconds. Without this grace every such reordering made the database be read
/// at once (it was one query per socket before rooms shared a cursor), which took p99
/// delivery latency to seconds. Used for room holes and joining sockets alike.
pub(crate) const REORDER_GRACE: Duration = Duration::from_millis(100);

/// Repairs (`socket`, `workspace`) in the background after a `seq` jump (after
/// `delay`, and only if the hole is still open then) or a pub/sub gap (`delay` zero).
/// A socket that cannot be repaired (database down, buffer full) is disconnected, so
/// that its client reconnects and resumes with `since_seq`.
pub(crate) fn spawn_repair(
    ctx: &Ctx,
    member: Member,
    workspace: Uuid,
    generation: u64,
    delay: Duration,
) {
    let ctx = ctx.clone();
    let Member { socket, conn } = member;
    ctx.tasks.clone().spawn(async move {
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
            if !conn.is_pending(workspace, generation) {
                conn.finish_catch_up(workspace, generation);
                ctx.fanout.settle(&ctx, workspace).await;
                return;
            }
        }
        match sync(&ctx, &socket, &conn, workspace, generation, false).await {
            Ok(report) => {
                if !report.recovered {
                    // Too much was missed while connected: say so, like a join would.
                    let _ = socket.emit(
                        "resync",
                        &Resync {
                            workspace_id: workspace,
                            last_seq: report.last_seq,
                        },
                    );
                }
                ctx.fanout.settle(&ctx, workspace).await;
            }
            Err(SyncError::Superseded) => {}
            Err(e) => {
                tracing::warn!(error = %e, sid = %socket.id, %workspace, "realtime repair failed; disconnecting the socket");
                let _ = socket.disconnect();
            }
        }
    });
}
