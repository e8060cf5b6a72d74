//! Socket.IO handlers: handshake authentication, then the client → server events of
//! DESIGN §5, each answered through its ack with `{ok: true, …}` or
//! `{ok: false, error: {code, message}}`.
//!
//! Every event is first charged to the socket's budget (`rl:socket:{sid}`, through
//! the in-process [`RateLimiter`](crate::rate_limit::RateLimiter) for budgets of one
//! connection, `AppState::connection_limiter`: no round trip), then its payload is
//! parsed into a typed request; whatever is malformed, unknown, oversized or not
//! allowed ends in an error ack and goes nowhere else.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use socketioxide::SocketIo;
use socketioxide::extract::{AckSender, Event, SocketRef, TryData};
use socketioxide::handler::ConnectHandler;
use socketioxide::socket::DisconnectReason;
use uuid::Uuid;

use super::Ctx;
use super::chat::Member;
use super::events::{self, PresenceUpdate, Room, ServerEvent, Typing};
use super::resume::{self, Conn, SyncError};
use crate::auth::tokens::TokenError;
use crate::http::authn::cookie_value;
use crate::http::messages::{self as http_messages, PostMessage};
use crate::presence::Entry;
use crate::rate_limit::Quota;
use crate::store::workspaces;

/// Events one socket may send per second (a burst of as many is allowed).
const EVENTS_PER_SECOND: u32 = 20;

/// An error ack.
#[derive(Debug)]
struct Refusal {
    code: &'static str,
    message: String,
}

impl Refusal {
    fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    fn not_found() -> Self {
        Self::new("not_found", "workspace not found")
    }

    fn unavailable() -> Self {
        Self::new(
            "service_unavailable",
            "a dependency is unavailable; retry shortly",
        )
    }

    fn body(&self) -> Value {
        json!({ "ok": false, "error": { "code": self.code, "message": self.message } })
    }
}

type Reply = Result<Value, Refusal>;

fn answer(ack: AckSender, reply: Reply) {
    let body = match reply {
        Ok(mut v) => {
            if let Value::Object(map) = &mut v {
                map.insert("ok".into(), Value::Bool(true));
            }
            v
        }
        Err(refusal) => refusal.body(),
    };
    // No ack requested, or the socket is gone: nothing to tell.
    let _ = ack.send(&body);
}

/// The handshake refusal sent as `connect_error`; the client sees the code as
/// `err.message`.
#[derive(Debug)]
struct HandshakeRefused(&'static str);

impl std::fmt::Display for HandshakeRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

/// Installs the `/` namespace: authentication middleware, then [`connected`].
pub(crate) fn register(io: &SocketIo, ctx: Ctx) {
    let auth_ctx = ctx.clone();
    let middleware = move |socket: SocketRef, TryData(auth): TryData<Value>| {
        let ctx = auth_ctx.clone();
        async move { authenticate(&ctx, &socket, auth.ok()).await }
    };
    // Everything happens in the middleware (see `install`); the handler is required.
    let handler = async |_: SocketRef| {};
    io.ns("/", handler.with(middleware));
}

/// `auth: {token}` (an access JWT) first, else the session cookie of the handshake
/// request. The codes are those of the HTTP API's 401s.
async fn authenticate(
    ctx: &Ctx,
    socket: &SocketRef,
    auth: Option<Value>,
) -> Result<(), HandshakeRefused> {
    let state = &ctx.state;
    if state.lifecycle.is_draining() {
        return Err(HandshakeRefused("shutting_down"));
    }
    let token = auth
        .as_ref()
        .and_then(|a| a.get("token"))
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|t| !t.is_empty());
    let unavailable = |e: crate::backend_error::BackendError| {
        tracing::warn!(error = %e, "session store unavailable during a Socket.IO handshake");
        HandshakeRefused("service_unavailable")
    };
    let user_id = if let Some(token) = token {
        let claims = match state.tokens.verify_access(token) {
            Ok(c) => c,
            Err(TokenError::Expired) => return Err(HandshakeRefused("token_expired")),
            Err(TokenError::Invalid) => return Err(HandshakeRefused("invalid_token")),
        };
        match state
            .sessions
            .load(&claims.sid)
            .await
            .map_err(unavailable)?
        {
            Some(record) if record.user_id == claims.sub => record.user_id,
            _ => return Err(HandshakeRefused("session_expired")),
        }
    } else if let Some(cookie) = cookie_value(
        &socket.req_parts().headers,
        &state.config.session_cookie_name,
    ) {
        let key = state.sessions.key_for_cookie(cookie);
        match state.sessions.load(&key).await.map_err(unavailable)? {
            Some(record) => record.user_id,
            None => return Err(HandshakeRefused("session_expired")),
        }
    } else {
        return Err(HandshakeRefused("unauthorized"));
    };
    let presence_key = format!("{}:{}", state.instance.id, socket.id);
    let conn = Arc::new(Conn::new(user_id, presence_key));
    socket.extensions.insert(conn.clone());
    install(ctx.clone(), socket, &conn);
    Ok(())
}

/// The per-socket state put there by [`authenticate`].
pub(crate) fn conn_of(socket: &SocketRef) -> Option<Arc<Conn>> {
    socket.extensions.get::<Arc<Conn>>()
}

/// Sets the socket up while it is still in the middleware, i.e. BEFORE the client
/// gets its CONNECT: handlers registered in the connect handler (which socketioxide
/// runs as a separate task) would race with the client's first event, which would
/// then be dropped unanswered.
fn install(ctx: Ctx, socket: &SocketRef, conn: &Conn) {
    ctx.state
        .lifecycle
        .ws_connections
        .fetch_add(1, Ordering::Relaxed);
    socket.join(Room::User(conn.user_id).to_string());
    tracing::debug!(sid = %socket.id, user_id = %conn.user_id, "socket connected");

    // One handler for every event, dispatching by name, rather than one `on` per
    // event: socketioxide keeps `on` handlers in a map per socket, which was a
    // measurable part of an idle connection's memory.
    let events_ctx = ctx.clone();
    socket.on_fallback(
        move |socket: SocketRef, Event(name): Event, TryData(data): TryData<Value>, ack: AckSender| {
            let ctx = events_ctx.clone();
            async move {
                let sid = socket.id;
                let started = std::time::Instant::now();
                let reply = handle_event(ctx, socket, &name, data.ok()).await;
                metrics::histogram!("shoal_realtime_event_duration_seconds", "event" => metric_label(&name))
                    .record(started.elapsed().as_secs_f64());
                tracing::debug!(sid = %sid, event = %name.chars().take(64).collect::<String>(), ok = reply.is_ok(), "socket event answered");
                answer(ack, reply);
            }
        },
    );

    socket.on_disconnect(move |socket: SocketRef, reason: DisconnectReason| {
        let ctx = ctx.clone();
        async move {
            ctx.state
                .lifecycle
                .ws_connections
                .fetch_sub(1, Ordering::Relaxed);
            tracing::debug!(sid = %socket.id, %reason, "socket disconnected");
            if let Some(conn) = conn_of(&socket) {
                for workspace in conn.joined() {
                    conn.end(workspace);
                    ctx.chat.leave(workspace, socket.id).await;
                    presence_leave(&ctx, &conn, workspace).await;
                }
            }
        }
    });
}

/// The `event` label of a client → server event: its name when Shoal handles it, so
/// that what clients send cannot grow the metric's label set.
fn metric_label(name: &str) -> &'static str {
    match name {
        "workspace:join" => "workspace:join",
        "workspace:leave" => "workspace:leave",
        "message:send" => "message:send",
        "typing" => "typing",
        "presence:list" => "presence:list",
        _ => "unknown",
    }
}

/// Everything a client → server handler gets.
struct Call {
    ctx: Ctx,
    socket: SocketRef,
    conn: Arc<Conn>,
}

/// One client → server event: charged to the socket's budget, parsed into its typed
/// request, then handled.
async fn handle_event(ctx: Ctx, socket: SocketRef, name: &str, data: Option<Value>) -> Reply {
    charge(&ctx, &socket).await?;
    let conn = conn_of(&socket).ok_or_else(|| Refusal::new("unauthorized", "not authenticated"))?;
    let call = Call { ctx, socket, conn };
    match name {
        "workspace:join" => join(call, parse(name, data)?).await,
        "workspace:leave" => leave(call, parse(name, data)?).await,
        "message:send" => send_message(call, parse(name, data)?).await,
        "typing" => typing(call, parse(name, data)?).await,
        "presence:list" => presence_list(call, parse(name, data)?).await,
        _ => Err(Refusal::new(
            "unknown_event",
            format!(
                "no such event: {}",
                name.chars().take(64).collect::<String>()
            ),
        )),
    }
}

/// The payload of `event` as `T`, or `invalid_payload`.
fn parse<T: DeserializeOwned>(event: &str, data: Option<Value>) -> Result<T, Refusal> {
    data.and_then(|v| serde_json::from_value::<T>(v).ok())
        .ok_or_else(|| Refusal::new("invalid_payload", format!("malformed {event} payload")))
}

/// Spends one unit of the socket's budget. A limiter that fails lets the event
/// through: chat should not stop because the budget store hiccups.
async fn charge(ctx: &Ctx, socket: &SocketRef) -> Result<(), Refusal> {
    let quota = Quota {
        limit: EVENTS_PER_SECOND,
        period: Duration::from_secs(1),
    };
    match ctx
        .state
        .connection_limiter
        .check(&format!("rl:socket:{}", socket.id), quota)
        .await
    {
        Ok(d) if d.allowed => Ok(()),
        Ok(d) => {
            metrics::counter!("shoal_realtime_rate_limited_total").increment(1);
            let ms = d.retry_after.unwrap_or_default().as_millis();
            Err(Refusal::new(
                "rate_limited",
                format!("too many events; retry in {ms} ms"),
            ))
        }
        Err(e) => {
            tracing::warn!(error = %e, "socket rate limiter unavailable; allowing the event");
            Ok(())
        }
    }
}

/// Membership check: a non-member (or an unknown workspace) gets `not_found`, as over
/// HTTP, so workspace ids do not leak.
async fn require_member(call: &Call, workspace: Uuid) -> Result<(), Refusal> {
    match workspaces::role_of(call.ctx.state.db.pool(), workspace, call.conn.user_id).await {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err(Refusal::not_found()),
        Err(e) => {
            tracing::warn!(error = %e, "membership check failed");
            Err(Refusal::unavailable())
        }
    }
}

#[derive(Debug, Deserialize)]
struct JoinRequest {
    workspace_id: Uuid,
    since_seq: Option<i64>,
}

/// `workspace:join {workspace_id, since_seq?}` → `{workspace_id, recovered, replayed,
/// last_seq}`; the replayed `message:new` events arrive before the ack.
async fn join(call: Call, req: JoinRequest) -> Reply {
    let wid = req.workspace_id;
    if req.since_seq.is_some_and(|s| s < 0) {
        return Err(Refusal::new(
            "invalid_payload",
            "since_seq must be at least 0",
        ));
    }
    require_member(&call, wid).await?;
    let room = Room::Workspace(wid).to_string();
    let member = Member {
        socket: call.socket.clone(),
        conn: call.conn.clone(),
    };
    let generation = call
        .ctx
        .chat
        .enter(wid, member, req.since_seq.unwrap_or(0))
        .await;
    call.socket.join(room.clone());
    presence_join(&call.ctx, &call.conn, wid).await;
    match resume::sync(
        &call.ctx,
        &call.socket,
        &call.conn,
        wid,
        generation,
        req.since_seq.is_none(),
    )
    .await
    {
        Ok(report) => {
            call.ctx.chat.settle(&call.ctx, wid).await;
            Ok(json!({
                "workspace_id": wid,
                "recovered": report.recovered,
                "replayed": report.replayed,
                "last_seq": report.last_seq,
                "replay_limit": resume::REPLAY_LIMIT,
            }))
        }
        Err(SyncError::Superseded) => {
            Err(Refusal::new("superseded", "left or re-joined meanwhile"))
        }
        Err(e) => {
            tracing::warn!(error = %e, sid = %call.socket.id, %wid, "workspace:join catch-up failed");
            call.conn.end(wid);
            call.ctx.chat.leave(wid, call.socket.id).await;
            call.socket.leave(room);
            presence_leave(&call.ctx, &call.conn, wid).await;
            if matches!(e, SyncError::Emit) {
                let _ = call.socket.clone().disconnect();
            }
            Err(Refusal::unavailable())
        }
    }
}

#[derive(Debug, Deserialize)]
struct WorkspaceRequest {
    workspace_id: Uuid,
}

/// `workspace:leave {workspace_id}`.
async fn leave(call: Call, req: WorkspaceRequest) -> Reply {
    let wid = req.workspace_id;
    if call.conn.end(wid) {
        call.ctx.chat.leave(wid, call.socket.id).await;
        call.socket.leave(Room::Workspace(wid).to_string());
        presence_leave(&call.ctx, &call.conn, wid).await;
    }
    Ok(json!({ "workspace_id": wid }))
}

#[derive(Debug, Deserialize)]
struct SendRequest {
    workspace_id: Uuid,
    body: String,
    client_id: Option<String>,
}

/// `message:send {workspace_id, body, client_id}` → `{id, seq}` once committed. A
/// retry with the same `client_id` answers the original `id` and `seq`.
async fn send_message(call: Call, req: SendRequest) -> Reply {
    let max = call.ctx.state.config.realtime_max_message_bytes;
    if req.body.len() > max {
        return Err(Refusal::new(
            "payload_too_large",
            format!("body is larger than {max} bytes"),
        ));
    }
    if req.body.trim().is_empty() {
        return Err(Refusal::new("validation_failed", "body: must not be empty"));
    }
    if req
        .client_id
        .as_ref()
        .is_some_and(|c| c.is_empty() || c.chars().count() > 64)
    {
        return Err(Refusal::new(
            "validation_failed",
            "client_id: must be 1 to 64 characters",
        ));
    }
    // A socket that joined the workspace passed this check at its join (and sockets
    // are not evicted on membership removal, docs/realtime.md): asking the database
    // again on every message would be one more round trip in the send path.
    if !call.conn.is_joined(req.workspace_id) {
        require_member(&call, req.workspace_id).await?;
    }
    let post = PostMessage {
        body: req.body,
        client_id: req.client_id,
    };
    match http_messages::append(&call.ctx.state, req.workspace_id, call.conn.user_id, &post).await {
        Ok((message, _created)) => Ok(json!({ "id": message.id, "seq": message.seq })),
        Err(e) => {
            tracing::warn!(error = ?e, "message:send failed");
            Err(Refusal::unavailable())
        }
    }
}

/// `typing {workspace_id}`: relayed to the other sockets in the room, never stored.
async fn typing(call: Call, req: WorkspaceRequest) -> Reply {
    let wid = req.workspace_id;
    if !call.conn.is_joined(wid) {
        return Err(Refusal::not_found());
    }
    let event = ServerEvent::Typing(Typing {
        workspace_id: wid,
        user_id: call.conn.user_id,
    });
    events::publish_except(
        &call.ctx.state,
        Room::Workspace(wid),
        Some(call.socket.id.to_string()),
        event,
    )
    .await;
    Ok(json!({}))
}

/// `presence:list {workspace_id}` → `{users: [{user_id}]}`, online on any instance.
async fn presence_list(call: Call, req: WorkspaceRequest) -> Reply {
    let wid = req.workspace_id;
    require_member(&call, wid).await?;
    let users = online_users(&call.ctx, wid).await.map_err(|e| {
        tracing::warn!(error = %e, "presence list failed");
        Refusal::unavailable()
    })?;
    let users: Vec<Value> = users.into_iter().map(|u| json!({ "user_id": u })).collect();
    Ok(json!({ "workspace_id": wid, "users": users }))
}

fn presence_room(workspace: Uuid) -> String {
    Room::Workspace(workspace).to_string()
}

/// Distinct users with a live connection in `workspace`, in a stable order (the
/// backend's: sorted ids).
async fn online_users(
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
    let ttl = ctx.state.config.realtime_presence_ttl;
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
async fn presence_join(ctx: &Ctx, conn: &Conn, workspace: Uuid) {
    let ttl = ctx.state.config.realtime_presence_ttl;
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
async fn presence_leave(ctx: &Ctx, conn: &Conn, workspace: Uuid) {
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
