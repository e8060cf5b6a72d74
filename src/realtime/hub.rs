//! The hub: the one reader per instance of the feed of room channels
//! (src/realtime/channels.rs), which turns what arrives into emits to this instance's
//! sockets, and the presence refresher.

use std::collections::HashMap;
use std::sync::Arc;

use futures::StreamExt;
use socketioxide::operators::BroadcastOperators;
use socketioxide::socket::Sid;
use socketioxide::{BroadcastError, SocketIo};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::Ctx;
use super::fanout::ChatMessage;
use super::handlers::conn_of;
use super::presence::{forget_presence, presence_entry, presence_leave, refresh_presence_many};
use super::resume::Conn;
use crate::events::{Envelope, ServerEvent, SessionEnded};
use crate::pubsub::{Delivery, Subscription};

/// Consumes the feed until `stop`; after a [`Delivery::Gap`] every joined workspace
/// of every local socket is repaired from the database. The feed resubscribes by
/// itself after a broker outage (src/pubsub/redis.rs); it ends only when the broker's
/// task has stopped, which leaves nothing to read.
pub(crate) async fn run(
    ctx: Ctx,
    io: SocketIo,
    mut subscription: Subscription,
    stop: CancellationToken,
) {
    loop {
        let item = tokio::select! {
            item = subscription.next() => item,
            () = stop.cancelled() => return,
        };
        match item {
            Some(Delivery::Message(payload)) => {
                // What per-room channels save: an instance decodes only the events
                // of rooms it has sockets in (docs/realtime.md).
                metrics::counter!("shoal_realtime_events_decoded_total").increment(1);
                match serde_json::from_slice::<Envelope>(&payload) {
                    Ok(envelope) => dispatch(&ctx, &io, envelope).await,
                    Err(e) => tracing::warn!(error = %e, "undecodable realtime event dropped"),
                }
            }
            Some(Delivery::Gap) => {
                tracing::info!(
                    "realtime pub/sub gap: repairing every joined workspace from the database"
                );
                repair_all(&ctx).await;
            }
            None => {
                tracing::error!("the realtime feed ended: its broker task has stopped");
                return;
            }
        }
    }
}

/// Emits one event to the local sockets of its room: a chat message through its
/// room's cursor ([`super::fanout`]), anything else as one broadcast (serialised once),
/// at most once (a full socket buffer drops it).
async fn dispatch(ctx: &Ctx, io: &SocketIo, envelope: Envelope) {
    match &envelope.event {
        ServerEvent::MessageNew(message) => {
            if let Some(encoded) = ChatMessage::encode(message) {
                ctx.fanout.deliver(ctx, encoded).await;
            }
            return;
        }
        ServerEvent::SessionEnded(ended) => {
            close_login(io, &envelope.room, ended);
            return;
        }
        _ => {}
    }
    let removed = match &envelope.event {
        ServerEvent::MemberRemoved(m) => Some((m.workspace_id, m.user_id)),
        _ => None,
    };
    // The typist is skipped only if it is connected here; elsewhere it is not in
    // this instance's rooms anyway.
    let except = envelope
        .except
        .as_deref()
        .and_then(|sid| sid.parse::<Sid>().ok())
        .and_then(|sid| io.get_socket(sid));
    let room = envelope.room;
    let operators = match except {
        Some(socket) => socket.broadcast().to(room.clone()),
        None => io.to(room.clone()),
    };
    let _ = broadcast(&envelope.event, operators).await;
    // After the event (the removed member sees it too), that member's sockets leave
    // the room: nothing of the workspace reaches them afterwards.
    if let Some((workspace, user)) = removed {
        for socket in io.to(room.clone()).sockets() {
            let Some(conn) = conn_of(&socket).filter(|c| c.user_id == user) else {
                continue;
            };
            socket.leave(room.clone());
            if conn.end(workspace) {
                ctx.fanout.leave(workspace, socket.id).await;
                presence_leave(ctx, &conn, workspace).await;
            }
        }
    }
}

/// Closes this instance's sockets of the login that ended, after telling them why
/// (`session:ended`); the user's sockets of other logins stay. Their disconnect
/// handlers leave their rooms, so nothing of a workspace reaches them afterwards.
fn close_login(io: &SocketIo, room: &str, ended: &SessionEnded) {
    for socket in io.to(room.to_owned()).sockets() {
        if conn_of(&socket).is_some_and(|c| c.family_id == ended.family_id) {
            let _ = socket.emit("session:ended", ended);
            let _ = socket.disconnect();
        }
    }
}

async fn repair_all(ctx: &Ctx) {
    ctx.fanout.repair_all(ctx).await;
}

/// Refreshes the presence entry of every joined workspace of every local socket each
/// third of `REALTIME_PRESENCE_TTL`, so that entries live exactly while their
/// connection (and its instance) does. One call per workspace room: with thousands of
/// sockets, one round trip per socket kept the presence store busy for the whole tick.
pub(crate) async fn refresh_presence_loop(ctx: Ctx, io: SocketIo, stop: CancellationToken) {
    let mut ticker = tokio::time::interval(ctx.state.config.realtime.presence_ttl / 3);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = stop.cancelled() => return,
        }
        let mut rooms: HashMap<Uuid, Vec<Arc<Conn>>> = HashMap::new();
        for socket in io.sockets() {
            let Some(conn) = conn_of(&socket) else {
                continue;
            };
            for workspace in conn.joined() {
                rooms.entry(workspace).or_default().push(conn.clone());
            }
        }
        for (workspace, conns) in rooms {
            let entries: Vec<_> = conns.iter().map(|c| presence_entry(c)).collect();
            refresh_presence_many(&ctx, workspace, &entries).await;
            // A socket that left (or disconnected) since the list was made may have
            // been re-added by this refresh after its own leave: remove it again.
            for conn in conns.iter().filter(|c| !c.is_joined(workspace)) {
                forget_presence(&ctx, conn, workspace).await;
            }
        }
    }
}

/// Emits `event` to the local sockets `to` selects, serialised once.
async fn broadcast(event: &ServerEvent, to: BroadcastOperators) -> Result<(), BroadcastError> {
    let name = event.name();
    match event {
        ServerEvent::MessageNew(d) => to.emit(name, d).await,
        ServerEvent::TaskCreated(d) | ServerEvent::TaskUpdated(d) => to.emit(name, d).await,
        ServerEvent::TaskDeleted(d) => to.emit(name, d).await,
        ServerEvent::Notification(d) => to.emit(name, d).await,
        ServerEvent::PresenceUpdate(d) => to.emit(name, d).await,
        ServerEvent::Typing(d) => to.emit(name, d).await,
        ServerEvent::JobCompleted(d) => to.emit(name, d).await,
        ServerEvent::SessionEnded(d) => to.emit(name, d).await,
        ServerEvent::MemberRemoved(d) => to.emit(name, d).await,
        ServerEvent::MemberAdded(d) | ServerEvent::MemberUpdated(d) => to.emit(name, d).await,
        ServerEvent::InvitationReceived(d) | ServerEvent::InvitationAnswered(d) => {
            to.emit(name, d).await
        }
    }
}
