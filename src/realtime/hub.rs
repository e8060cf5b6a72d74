//! The hub: the one subscriber per instance that turns what arrives on
//! [`CHANNEL`](super::events::CHANNEL) into emits to this instance's sockets, and the
//! presence refresher.

use std::time::Duration;

use futures::StreamExt;
use socketioxide::SocketIo;
use socketioxide::extract::SocketRef;
use tokio_util::sync::CancellationToken;

use super::Ctx;
use super::events::{CHANNEL, Envelope, ServerEvent};
use super::handlers::refresh_presence;
use super::resume::{self, Offer};
use crate::pubsub::{Delivery, Subscription};

/// Consumes the subscription until `stop`; after a [`Delivery::Gap`] (or a lost
/// subscription, re-made here) every joined workspace of every local socket is
/// repaired from the database.
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
                match serde_json::from_slice::<Envelope>(&payload) {
                    Ok(envelope) => dispatch(&ctx, &io, envelope),
                    Err(e) => tracing::warn!(error = %e, "undecodable realtime event dropped"),
                }
            }
            Some(Delivery::Gap) => {
                tracing::info!(
                    "realtime pub/sub gap: repairing every joined workspace from the database"
                );
                repair_all(&ctx, &io);
            }
            None => {
                tracing::warn!("realtime subscription ended; subscribing again");
                match resubscribe(&ctx, &stop).await {
                    Some(s) => subscription = s,
                    None => return,
                }
                repair_all(&ctx, &io);
            }
        }
    }
}

async fn resubscribe(ctx: &Ctx, stop: &CancellationToken) -> Option<Subscription> {
    let mut delay = Duration::from_millis(100);
    loop {
        match ctx.state.pubsub.subscribe(CHANNEL).await {
            Ok(s) => return Some(s),
            Err(e) => tracing::warn!(error = %e, "realtime resubscribe failed"),
        }
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = stop.cancelled() => return None,
        }
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

/// Emits one event to the local sockets of its room.
fn dispatch(ctx: &Ctx, io: &SocketIo, envelope: Envelope) {
    let sockets = io.to(envelope.room).sockets();
    if let ServerEvent::MessageNew(message) = &envelope.event {
        for socket in sockets {
            let Some(conn) = conn_of(&socket) else {
                continue;
            };
            match conn.offer(&socket, message) {
                Offer::Done => {}
                Offer::CatchUp(generation) => {
                    resume::spawn_repair(
                        ctx,
                        socket,
                        conn,
                        message.workspace_id,
                        generation,
                        resume::REORDER_GRACE,
                    );
                }
                Offer::Failed => {
                    // Its buffer is full: better a reconnect + resume than a hole.
                    tracing::warn!(sid = %socket.id, "socket too slow for message:new; disconnecting it");
                    let _ = socket.disconnect();
                }
            }
        }
        return;
    }
    for socket in sockets {
        if envelope.except.as_deref() == Some(socket.id.as_str()) {
            continue;
        }
        // Ephemeral and state events are at-most-once: a full buffer drops them.
        let _ = envelope.event.emit(&socket);
    }
}

fn conn_of(socket: &SocketRef) -> Option<std::sync::Arc<resume::Conn>> {
    socket.extensions.get::<std::sync::Arc<resume::Conn>>()
}

fn repair_all(ctx: &Ctx, io: &SocketIo) {
    for socket in io.sockets() {
        let Some(conn) = conn_of(&socket) else {
            continue;
        };
        for workspace in conn.joined() {
            if let Some(generation) = conn.begin_repair(workspace) {
                resume::spawn_repair(
                    ctx,
                    socket.clone(),
                    conn.clone(),
                    workspace,
                    generation,
                    std::time::Duration::ZERO,
                );
            }
        }
    }
}

/// Refreshes the presence entry of every joined workspace of every local socket each
/// third of `REALTIME_PRESENCE_TTL`, so that entries live exactly while their
/// connection (and its instance) does.
pub(crate) async fn refresh_presence_loop(ctx: Ctx, io: SocketIo, stop: CancellationToken) {
    let mut ticker = tokio::time::interval(ctx.state.config.realtime_presence_ttl / 3);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = stop.cancelled() => return,
        }
        for socket in io.sockets() {
            let Some(conn) = conn_of(&socket) else {
                continue;
            };
            for workspace in conn.joined() {
                refresh_presence(&ctx, &conn, workspace).await;
            }
        }
    }
}
