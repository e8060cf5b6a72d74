//! Presence of this instance's sockets in workspace rooms: entries added at join,
//! refreshed by the hub's presence loop, removed at leave; `presence:update` goes out
//! only when a user comes online in a workspace (first connection on any instance)
//! or goes offline (last one).

use uuid::Uuid;

use super::Ctx;
use super::resume::Conn;
use crate::events::{self, PresenceUpdate, Room, ServerEvent};
use crate::presence::Entry;

fn presence_room(workspace: Uuid) -> String {
    Room::Workspace(workspace).to_string()
}

/// Distinct users with a live connection in `workspace`, in a stable order (the
/// backend's: sorted ids).
pub(crate) async fn online_users(
    ctx: &Ctx,
    workspace: Uuid,
) -> Result<Vec<Uuid>, crate::backend_error::BackendError> {
    let users = ctx.state.presence.list(&presence_room(workspace)).await?;
    Ok(users.iter().filter_map(|u| u.parse().ok()).collect())
}

/// The presence entry of `conn`.
pub(crate) fn presence_entry(conn: &Conn) -> Entry {
    Entry {
        user: conn.user_id.to_string(),
        conn: conn.presence_key.clone(),
    }
}

/// Refreshes the presence entries of several connections of this instance in
/// `workspace` at once (one round trip per room, not one per connection).
pub(crate) async fn refresh_presence_many(ctx: &Ctx, workspace: Uuid, entries: &[Entry]) {
    let ttl = ctx.state.config.realtime.presence_ttl;
    if let Err(e) = ctx
        .state
        .presence
        .join_many(&presence_room(workspace), entries, ttl)
        .await
    {
        tracing::warn!(error = %e, "presence refresh failed");
    }
}

/// Adds this connection's presence entry in `workspace`; `presence:update` goes out
/// only when its user was not online there before (not for every tab).
pub(crate) async fn presence_join(ctx: &Ctx, conn: &Conn, workspace: Uuid) {
    let ttl = ctx.state.config.realtime.presence_ttl;
    let user = conn.user_id.to_string();
    match ctx
        .state
        .presence
        .join(&presence_room(workspace), &user, &conn.presence_key, ttl)
        .await
    {
        Ok(true) => publish_presence(ctx, conn.user_id, workspace, true).await,
        Ok(false) => {}
        Err(e) => tracing::warn!(error = %e, "presence join failed"),
    }
}

/// Removes this connection's presence entry in `workspace`; `Some(true)` when its
/// user has no live connection left there, `None` if the backend failed.
pub(crate) async fn forget_presence(ctx: &Ctx, conn: &Conn, workspace: Uuid) -> Option<bool> {
    let user = conn.user_id.to_string();
    ctx.state
        .presence
        .leave(&presence_room(workspace), &user, &conn.presence_key)
        .await
        .inspect_err(|e| tracing::warn!(error = %e, "presence leave failed"))
        .ok()
}

/// Removes this connection's presence entry; `presence:update` (offline) goes out
/// only when it was its user's last connection in the workspace, on any instance.
pub(crate) async fn presence_leave(ctx: &Ctx, conn: &Conn, workspace: Uuid) {
    if forget_presence(ctx, conn, workspace).await == Some(true) {
        publish_presence(ctx, conn.user_id, workspace, false).await;
    }
}

async fn publish_presence(ctx: &Ctx, user_id: Uuid, workspace: Uuid, online: bool) {
    let event = ServerEvent::PresenceUpdate(PresenceUpdate {
        workspace_id: workspace,
        user_id,
        online,
    });
    events::publish(&ctx.state, Room::Workspace(workspace), event).await;
}
