//! Live fan-out of `message:new`: one cursor per workspace room on this instance, not
//! one per socket.
//!
//! # Why a room cursor
//!
//! Every socket of a room that is caught up has seen exactly the same messages, so
//! they can share one position: the room's `head`. A message with `seq = head + 1` is
//! serialised once ([`ChatMessage`]) and emitted to every *live* socket of the room
//! with no per-socket bookkeeping; a hole (`seq > head + 1`, two instances published
//! their commits in the other order, or the broker lost something) is repaired once
//! for the room — one database read, not one per socket. Measured under fan-out load,
//! the per-socket cursors this replaces spent most of the hub's time in per-socket
//! locks, extension look-ups and serialisation, and a reordering made every socket of
//! the room read PostgreSQL.
//!
//! # Joining sockets
//!
//! A socket that joins (or re-joins, or is being repaired after its own hole) is
//! *joining*: it has its own cursor ([`super::resume::Conn`]), catches up from the
//! database, and is offered every live message meanwhile (parked, then flushed in
//! order). It goes live — merges into the room — only when it is caught up and its
//! cursor equals the room's `head`, under the room lock, so no message can fall
//! between the two cursors:
//!
//! - a message the hub processed before the socket registered was committed before it
//!   was published, so the socket's database read (after registering) contains it;
//! - a message processed after registering is offered to the socket;
//! - a socket ahead of the room (its read saw commits the hub has not received yet)
//!   waits: those messages reach the room later, are dropped for the socket as
//!   already seen, and the cursors meet.
//!
//! The room lock is a tokio mutex held while emitting; per-socket cursors are taken
//! under it (lock order: room, then socket), never the other way round.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::value::RawValue;
use socketioxide::SendError;
use socketioxide::extract::SocketRef;
use socketioxide::socket::Sid;
use uuid::Uuid;

use super::Ctx;
use super::protocol::Resync;
use super::resume::{self, Conn, Offer, REPLAY_LIMIT};
use crate::db::messages::{self, Message};

/// The Socket.IO event name of a chat message.
pub(crate) const EVENT: &str = "message:new";

/// A `message:new` serialised once per instance, emitted to each socket as
/// pre-encoded JSON (socketioxide copies it verbatim instead of serialising the
/// message again for every socket).
#[derive(Debug)]
pub(crate) struct ChatMessage {
    pub(crate) workspace_id: Uuid,
    pub(crate) seq: i64,
    json: Box<RawValue>,
}

impl ChatMessage {
    /// Serialises `message`; `None` only if serde_json refuses it (it cannot).
    pub(crate) fn encode(message: &Message) -> Option<Arc<Self>> {
        let json = serde_json::value::to_raw_value(message)
            .inspect_err(|e| tracing::error!(error = %e, "cannot serialise a chat message"))
            .ok()?;
        Some(Arc::new(Self {
            workspace_id: message.workspace_id,
            seq: message.seq,
            json,
        }))
    }

    /// Queues the message on one socket; `Err` when its buffer is full or it closed.
    pub(crate) fn emit(&self, socket: &SocketRef) -> Result<(), SendError> {
        socket.emit(EVENT, &*self.json)
    }
}

/// A socket in a room, with its realtime state.
#[derive(Clone)]
pub(crate) struct Member {
    pub(crate) socket: SocketRef,
    pub(crate) conn: Arc<Conn>,
}

/// The chat rooms of this instance (workspaces with at least one joined socket here).
#[derive(Default)]
pub(crate) struct ChatRooms {
    rooms: Mutex<HashMap<Uuid, Arc<Room>>>,
}

struct Room {
    workspace: Uuid,
    state: tokio::sync::Mutex<RoomState>,
}

#[derive(Default)]
struct RoomState {
    /// Removed from [`ChatRooms`]: whoever still holds it must look the room up again.
    closed: bool,
    /// The last `seq` every live socket has been sent; `None` while nobody is live.
    head: Option<i64>,
    /// Messages after a hole in the live stream, by `seq`.
    parked: BTreeMap<i64, Arc<ChatMessage>>,
    /// A room repair task is scheduled or running.
    repairing: bool,
    /// The next repair must read the database even without a visible hole (after a
    /// broker gap, the tail may be missing).
    force_read: bool,
    /// Caught-up sockets: they receive every message at `head + 1` as it comes.
    live: Vec<Member>,
    /// Sockets with their own cursor: catching up, or waiting for the room to meet them.
    joining: Vec<Member>,
}

impl ChatRooms {
    /// The workspaces with at least one socket (joining or live) here.
    pub(crate) fn workspaces(&self) -> Vec<Uuid> {
        self.lock().keys().copied().collect()
    }

    fn room(&self, workspace: Uuid) -> Option<Arc<Room>> {
        self.lock().get(&workspace).cloned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Arc<Room>>> {
        self.rooms.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers `member` as joining `workspace` from `since` (replacing whatever it
    /// was there: a re-join starts over) and returns the cursor generation for
    /// [`resume::sync`]. Call before reading the database.
    pub(crate) async fn enter(&self, workspace: Uuid, member: Member, since: i64) -> u64 {
        loop {
            let room = self
                .lock()
                .entry(workspace)
                .or_insert_with(|| {
                    Arc::new(Room {
                        workspace,
                        state: tokio::sync::Mutex::default(),
                    })
                })
                .clone();
            let mut st = room.state.lock().await;
            if st.closed {
                continue;
            }
            st.remove(member.socket.id);
            let generation = member.conn.begin(workspace, since);
            st.joining.push(member);
            return generation;
        }
    }

    /// After a joining socket caught up: merges it into the live group if it met the
    /// room's head.
    pub(crate) async fn settle(&self, ctx: &Ctx, workspace: Uuid) {
        let Some(room) = self.room(workspace) else {
            return;
        };
        let mut st = room.state.lock().await;
        if !st.closed {
            st.merge_ready(ctx, workspace);
        }
    }

    /// Removes socket `sid` from `workspace` (leave, disconnect); drops the room when
    /// it was the last one.
    pub(crate) async fn leave(&self, workspace: Uuid, sid: Sid) {
        let Some(room) = self.room(workspace) else {
            return;
        };
        let mut st = room.state.lock().await;
        if st.closed {
            return;
        }
        st.remove(sid);
        if st.live.is_empty() && st.joining.is_empty() {
            st.closed = true;
            let mut rooms = self.lock();
            if rooms.get(&workspace).is_some_and(|r| Arc::ptr_eq(r, &room)) {
                rooms.remove(&workspace);
            }
        }
    }

    /// Live delivery of one message that arrived from the broker.
    pub(crate) async fn deliver(&self, ctx: &Ctx, message: Arc<ChatMessage>) {
        let Some(room) = self.room(message.workspace_id) else {
            return;
        };
        let mut st = room.state.lock().await;
        if st.closed {
            return;
        }
        if let Some(head) = st.head {
            if message.seq == head + 1 {
                st.emit_live(&message);
                st.head = Some(message.seq);
                st.flush_parked();
            } else if message.seq > head + 1 {
                st.parked
                    .entry(message.seq)
                    .or_insert_with(|| message.clone());
                if !st.repairing {
                    st.repairing = true;
                    spawn_room_repair(ctx, room.clone(), resume::REORDER_GRACE);
                }
            }
        }
        for member in &st.joining {
            match member.conn.offer(&member.socket, &message) {
                Offer::Done => {}
                Offer::CatchUp(generation) => resume::spawn_repair(
                    ctx,
                    member.clone(),
                    message.workspace_id,
                    generation,
                    resume::REORDER_GRACE,
                ),
                Offer::Failed => {
                    tracing::warn!(sid = %member.socket.id, "socket too slow for message:new; disconnecting it");
                    let _ = member.socket.clone().disconnect();
                }
            }
        }
        st.merge_ready(ctx, message.workspace_id);
    }

    /// After a broker gap: every room reads the database once, and every joining
    /// socket repairs its own cursor.
    pub(crate) async fn repair_all(&self, ctx: &Ctx) {
        let rooms: Vec<Arc<Room>> = self.lock().values().cloned().collect();
        for room in rooms {
            let mut st = room.state.lock().await;
            if st.closed {
                continue;
            }
            if st.head.is_some() {
                st.force_read = true;
                if !st.repairing {
                    st.repairing = true;
                    spawn_room_repair(ctx, room.clone(), Duration::ZERO);
                }
            }
            for member in &st.joining {
                if let Some(generation) = member.conn.begin_repair(room.workspace) {
                    resume::spawn_repair(
                        ctx,
                        member.clone(),
                        room.workspace,
                        generation,
                        Duration::ZERO,
                    );
                }
            }
        }
    }
}

impl RoomState {
    fn remove(&mut self, sid: Sid) {
        self.live.retain(|m| m.socket.id != sid);
        self.joining.retain(|m| m.socket.id != sid);
        if self.live.is_empty() {
            self.head = None;
            self.parked.clear();
            self.force_read = false;
        }
    }

    /// Sends `message` to every live socket; one whose buffer is full or closed is
    /// disconnected (its client resumes) rather than left with a hole.
    fn emit_live(&mut self, message: &ChatMessage) {
        self.live.retain(|member| match message.emit(&member.socket) {
            Ok(()) => true,
            Err(_) => {
                tracing::warn!(sid = %member.socket.id, "socket too slow for message:new; disconnecting it");
                let _ = member.socket.clone().disconnect();
                false
            }
        });
        if self.live.is_empty() {
            self.head = None;
            self.parked.clear();
        }
    }

    /// Emits what became contiguous after `head`.
    fn flush_parked(&mut self) {
        while let Some(entry) = self.parked.first_entry() {
            let Some(head) = self.head else {
                self.parked.clear();
                return;
            };
            let seq = *entry.key();
            if seq <= head {
                entry.remove();
            } else if seq == head + 1 {
                let message = entry.remove();
                self.emit_live(&message);
                if self.head.is_some() {
                    self.head = Some(seq);
                }
            } else {
                return;
            }
        }
    }

    /// Moves every joining socket whose cursor met the head into the live group (or,
    /// with nobody live, makes the first ready one the head). A ready socket behind the
    /// head missed something and repairs itself first.
    fn merge_ready(&mut self, ctx: &Ctx, workspace: Uuid) {
        let mut i = 0;
        while i < self.joining.len() {
            let member = &self.joining[i];
            let Some(at) = member.conn.ready_at(workspace) else {
                i += 1;
                continue;
            };
            match self.head {
                None => self.head = Some(at),
                Some(head) if head == at => {}
                Some(head) if at < head => {
                    if let Some(generation) = member.conn.begin_repair(workspace) {
                        resume::spawn_repair(
                            ctx,
                            member.clone(),
                            workspace,
                            generation,
                            Duration::ZERO,
                        );
                    }
                    i += 1;
                    continue;
                }
                Some(_) => {
                    i += 1;
                    continue;
                }
            }
            member.conn.go_live(workspace);
            let member = self.joining.swap_remove(i);
            self.live.push(member);
        }
    }
}

/// The most messages one room repair delivers, in reads of [`REPLAY_LIMIT`]. A room
/// misses messages for as long as its instance hears nothing from the broker: 60 s of
/// a Redis outage at 10 msg/s is 600 (`scripts/fault-redis.sh`), which a repair capped
/// at one read used to turn into `resync` for every socket. Ten reads cover a long
/// outage of a busy room and keep one repair's work bounded.
pub(crate) const REPAIR_LIMIT: u32 = 10 * REPLAY_LIMIT;

/// Fills a hole in a room's live stream from the database (after `delay`, only if
/// the hole is still open then, or at once after a broker gap), [`REPLAY_LIMIT`]
/// messages per read. If more than [`REPAIR_LIMIT`] are missing, the live sockets get
/// `resync` and the head jumps to the newest message; if the database fails, they are
/// disconnected so that their clients resume.
fn spawn_room_repair(ctx: &Ctx, room: Arc<Room>, delay: Duration) {
    let ctx = ctx.clone();
    ctx.tasks.clone().spawn(async move {
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let mut budget = REPAIR_LIMIT as usize;
        loop {
            let after = {
                let mut st = room.state.lock().await;
                let Some(head) = st.head.filter(|_| !st.closed) else {
                    st.repairing = false;
                    return;
                };
                if st.parked.is_empty() && !st.force_read {
                    st.repairing = false;
                    return;
                }
                st.force_read = false;
                head
            };
            let read = async {
                let pool = ctx.state.db.pool();
                let rows = messages::list_after(pool, room.workspace, after, REPLAY_LIMIT + 1).await?;
                let skip_to = if rows.len() > budget {
                    Some(resume::head_seq(&ctx, room.workspace).await?)
                } else {
                    None
                };
                Ok::<_, crate::db::StoreError>((rows, skip_to))
            };
            let result = read.await;
            let mut st = room.state.lock().await;
            if st.closed {
                return;
            }
            let (rows, skip_to) = match result {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(error = %e, workspace = %room.workspace, "chat room repair failed; disconnecting its live sockets");
                    for member in std::mem::take(&mut st.live) {
                        let _ = member.socket.disconnect();
                    }
                    st.head = None;
                    st.parked.clear();
                    st.repairing = false;
                    return;
                }
            };
            match skip_to {
                Some(newest) => {
                    let head = st.head.unwrap_or(newest).max(newest);
                    for member in &st.live {
                        let _ = member.socket.emit(
                            "resync",
                            &Resync {
                                workspace_id: room.workspace,
                                last_seq: head,
                            },
                        );
                    }
                    if st.head.is_some() {
                        st.head = Some(head);
                    }
                }
                None => {
                    budget -= rows.len();
                    for row in &rows {
                        if st.head.is_some_and(|h| row.seq == h + 1)
                            && let Some(message) = ChatMessage::encode(row)
                        {
                            st.emit_live(&message);
                            if st.head.is_some() {
                                st.head = Some(row.seq);
                            }
                        }
                    }
                    if rows.len() > REPLAY_LIMIT as usize {
                        // More after this read: read on from the new head.
                        st.force_read = true;
                    }
                }
            }
            st.flush_parked();
            if st.parked.is_empty() && !st.force_read {
                st.repairing = false;
                st.merge_ready(&ctx, room.workspace);
                return;
            }
            // Still a hole: a message committed after our read was published before
            // the one parked; read again.
        }
    });
}
