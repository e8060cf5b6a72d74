//! Socket.IO handlers: handshake authentication, then the client → server events of
//! docs/realtime.md, each answered through its ack with `{ok: true, …}` or
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

use super::ClientAddr;
use super::Ctx;
use super::expiry::{self, Lease};
use super::fanout::Member;
use super::limits::Slot;

/// A connection's places under its user's and its address's caps.
type Slots = (Slot<Uuid>, Slot<String>);
use super::presence::{online_users, presence_join, presence_leave};
use super::protocol::{Closing, JoinAck, LeaveAck, OnlineUser, PresenceList, RenewAck, SendAck};
use super::resume::{self, Conn, SyncError};
use crate::events::{self, Room, ServerEvent, Typing};

use crate::rate_limit::Quota;
use crate::usecase::chat::{self, InputError, Membership, NewMessage, PostError};
use crate::usecase::identity::{self, Credential, IdentityError, cookie_value};
use crate::usecase::membership::{self, AccessError};

/// Events one socket may send per second (a burst of as many is allowed).
const EVENTS_PER_SECOND: u32 = 20;

/// Joins of one user that run at once on an instance (see
/// [`super::limits::JoinsInProgress`]).
pub(crate) const JOINS_PER_USER: usize = 2;

/// Events refused for the socket's budget within [`super::resume::REFUSALS_WINDOW`]
/// after which the connection is closed: a client that waits as told never gets near
/// it (its budget refills at 20 a second).
const REFUSALS_MAX: u32 = 100;

/// How long a join waits for its user's turn before it is refused (`busy`).
const JOIN_WAIT: Duration = Duration::from_secs(10);

/// An error ack.
#[derive(Debug)]
struct Refusal {
    code: &'static str,
    message: String,
    /// For `rate_limited`: when the event would be accepted.
    retry_after_ms: Option<u128>,
}

impl Refusal {
    fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            retry_after_ms: None,
        }
    }

    fn rate_limited(message: &str, retry_after: Option<Duration>) -> Self {
        let ms = retry_after.unwrap_or_default().as_millis();
        Self {
            retry_after_ms: Some(ms),
            ..Self::new("rate_limited", format!("{message}; retry in {ms} ms"))
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
        let mut error = json!({ "code": self.code, "message": self.message });
        if let Some(ms) = self.retry_after_ms {
            error["retry_after_ms"] = json!(ms);
        }
        json!({ "ok": false, "error": error })
    }
}

type Reply = Result<Value, Refusal>;

/// An ack's fields (`ok: true` is added when it is sent).
fn ack(reply: impl serde::Serialize) -> Reply {
    serde_json::to_value(reply).map_err(|e| {
        tracing::error!(error = %e, "cannot serialise an ack");
        Refusal::unavailable()
    })
}

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
    let credential = if let Some(token) = token {
        Credential::AccessToken(token)
    } else if let Some(cookie) = cookie_value(
        &socket.req_parts().headers,
        &state.config.auth.session_cookie_name,
    ) {
        let headers = &socket.req_parts().headers;
        let header = |name| {
            headers
                .get(name)
                .and_then(|v: &axum::http::HeaderValue| v.to_str().ok())
        };
        if !identity::cookie_origin_allowed(
            header(axum::http::header::ORIGIN),
            header(axum::http::header::HOST),
            &state.config.server.cors_origins,
        ) {
            return Err(HandshakeRefused("origin_not_allowed"));
        }
        Credential::SessionCookie(cookie)
    } else {
        return Err(HandshakeRefused("unauthorized"));
    };
    let principal = match identity::authenticate(state, credential).await {
        Ok(principal) => principal,
        Err(IdentityError::Refused(refused)) => return Err(HandshakeRefused(refused.code())),
        Err(IdentityError::Unavailable(e)) => {
            tracing::warn!(error = %e, "session store unavailable during a Socket.IO handshake");
            return Err(HandshakeRefused("service_unavailable"));
        }
    };
    let address = socket
        .req_parts()
        .extensions
        .get::<ClientAddr>()
        .map_or_else(String::new, |a| a.0.clone());
    let refused = |scope: &'static str| {
        metrics::counter!("shoal_realtime_connections_refused_total", "reason" => "too_many_connections", "scope" => scope)
            .increment(1);
        HandshakeRefused("too_many_connections")
    };
    let by_address = ctx
        .sockets_per_ip
        .take(address)
        .ok_or_else(|| refused("ip"))?;
    let by_user = ctx
        .sockets
        .take(principal.user_id)
        .ok_or_else(|| refused("user"))?;
    socket.extensions.insert(Arc::new((by_user, by_address)));
    // Before the socket joins its user room (in `install`): nothing sent to the user
    // after the client's CONNECT can miss this instance.
    ctx.channels.want(Room::User(principal.user_id)).await;
    let presence_key = format!("{}:{}", state.instance.id, socket.id);
    let conn = Arc::new(Conn::new(
        principal.user_id,
        principal.family_id,
        presence_key,
        Lease::of(&principal),
    ));
    socket.extensions.insert(conn.clone());
    ctx.expiries.watch(socket.id, &conn);
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
            // Frees the user's place at once (the socket itself may outlive this).
            socket.extensions.remove::<Arc<Slots>>();
            if let Some(conn) = conn_of(&socket) {
                ctx.expiries.forget(socket.id, &conn);
                for workspace in conn.joined() {
                    conn.end(workspace);
                    ctx.fanout.leave(workspace, socket.id).await;
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
        "auth:renew" => "auth:renew",
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
    let conn = conn_of(&socket).ok_or_else(|| Refusal::new("unauthorized", "not authenticated"))?;
    if let Err(refusal) = charge(&ctx, &socket).await {
        // A client that ignores its refusals keeps the server parsing and answering
        // events for nothing: past this many within the window, it is told why and
        // dropped.
        if conn.refusals.note(std::time::Instant::now()) == REFUSALS_MAX {
            metrics::counter!("shoal_realtime_connections_dropped_total", "reason" => "ignored_rate_limit")
                .increment(1);
            let _ = socket.emit(
                "closing",
                &Closing {
                    reason: "ignored_rate_limit".into(),
                },
            );
            let _ = socket.clone().disconnect();
        }
        return Err(refusal);
    }
    let call = Call { ctx, socket, conn };
    match name {
        "workspace:join" => join(call, parse(name, data)?).await,
        "workspace:leave" => leave(call, parse(name, data)?).await,
        "message:send" => send_message(call, parse(name, data)?).await,
        "typing" => typing(call, parse(name, data)?).await,
        "presence:list" => presence_list(call, parse(name, data)?).await,
        "auth:renew" => renew(call, parse(name, data)?).await,
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
            Err(Refusal::rate_limited("too many events", d.retry_after))
        }
        Err(e) => {
            tracing::warn!(error = %e, "socket rate limiter unavailable; allowing the event");
            Ok(())
        }
    }
}

/// A chat message spends its sender's request budget (`RATE_LIMIT_USER_PER_MIN`, the
/// key the HTTP API charges), so it costs the same over Socket.IO as over
/// `POST …/messages`, however many sockets and instances the user spreads it over. The
/// per-socket budget above only smooths one connection's bursts.
async fn charge_user(call: &Call) -> Result<(), Refusal> {
    let state = &call.ctx.state;
    let quota = Quota::per_minute(state.config.rate_limit.user_per_min);
    let key = format!("rl:user:{}", call.conn.user_id);
    match state.rate_limiter.check(&key, quota).await {
        Ok(d) if !d.allowed => {
            metrics::counter!("shoal_rate_limited_total", "scope" => "user").increment(1);
            Err(Refusal::rate_limited(
                "over your request budget",
                d.retry_after,
            ))
        }
        Ok(_) => Ok(()),
        Err(e) => {
            tracing::warn!(error = %e, "rate limiter unavailable; allowing the message");
            Ok(())
        }
    }
}

/// Membership check: a non-member (or an unknown workspace) gets `not_found`, as over
/// HTTP, so workspace ids do not leak.
async fn require_member(call: &Call, workspace: Uuid) -> Result<(), Refusal> {
    match membership::require_member(&call.ctx.state, workspace, call.conn.user_id).await {
        Ok(_) => Ok(()),
        Err(AccessError::NotFound) => Err(Refusal::not_found()),
        Err(AccessError::Store(e)) => {
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
    // A join is a request of its user's (as `GET …/messages` is over HTTP), and one
    // user's joins take turns: each may read up to REPLAY_LIMIT messages.
    charge_user(&call).await?;
    require_member(&call, wid).await?;
    let _turn = call
        .ctx
        .joins
        .enter(call.conn.user_id, JOIN_WAIT)
        .await
        .ok_or_else(|| Refusal::new("busy", "too many of your joins are in progress; retry"))?;
    let room = Room::Workspace(wid).to_string();
    // Before registering with the room's cursor and reading the database: what is
    // published from now on arrives on the feed, what was published before is in
    // the read (src/realtime/channels.rs).
    call.ctx.channels.want(Room::Workspace(wid)).await;
    let member = Member {
        socket: call.socket.clone(),
        conn: call.conn.clone(),
    };
    let generation = call
        .ctx
        .fanout
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
            call.ctx.fanout.settle(&call.ctx, wid).await;
            ack(JoinAck {
                workspace_id: wid,
                recovered: report.recovered,
                replayed: u32::try_from(report.replayed).unwrap_or(u32::MAX),
                last_seq: report.last_seq,
                replay_limit: resume::REPLAY_LIMIT,
            })
        }
        Err(SyncError::Superseded) => {
            Err(Refusal::new("superseded", "left or re-joined meanwhile"))
        }
        Err(e) => {
            tracing::warn!(error = %e, sid = %call.socket.id, %wid, "workspace:join catch-up failed");
            call.conn.end(wid);
            call.ctx.fanout.leave(wid, call.socket.id).await;
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
        call.ctx.fanout.leave(wid, call.socket.id).await;
        call.socket.leave(Room::Workspace(wid).to_string());
        presence_leave(&call.ctx, &call.conn, wid).await;
    }
    ack(LeaveAck { workspace_id: wid })
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
    charge_user(&call).await?;
    let max = call.ctx.state.config.realtime.max_message_bytes;
    let message = NewMessage::parse(req.body, req.client_id, max).map_err(|errors| {
        // The body's rule comes first; a too large body has its own code.
        match errors.first() {
            Some(e @ InputError::BodyTooLarge { max }) => Refusal::new(
                "payload_too_large",
                format!("{}: larger than {max} bytes", e.field()),
            ),
            Some(e) => Refusal::new("validation_failed", format!("{}: {e}", e.field())),
            None => Refusal::new("validation_failed", "invalid message"),
        }
    })?;
    let membership = if call.conn.is_joined(req.workspace_id) {
        Membership::CheckedAtJoin
    } else {
        Membership::Check
    };
    let author = call.conn.user_id;
    match chat::post(
        &call.ctx.state,
        req.workspace_id,
        author,
        message,
        membership,
    )
    .await
    {
        Ok(posted) => ack(SendAck {
            id: posted.message.id,
            seq: posted.message.seq,
        }),
        Err(PostError::NotFound) => Err(Refusal::not_found()),
        Err(PostError::Conflict) => Err(Refusal::new("conflict", PostError::Conflict.to_string())),
        Err(PostError::Store(e)) => {
            tracing::warn!(error = %e, "message:send failed");
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
    ack(PresenceList {
        workspace_id: wid,
        users: users
            .into_iter()
            .map(|user_id| OnlineUser { user_id })
            .collect(),
    })
}

#[derive(Debug, Deserialize)]
struct RenewRequest {
    token: String,
}

/// `auth:renew {token}` → `{expires_at}`: a fresh access token of the same login
/// (from `POST /api/auth/refresh`) keeps the socket open past the old token's expiry
/// (src/realtime/expiry.rs). Another user's or another login's token is refused and
/// changes nothing.
async fn renew(call: Call, req: RenewRequest) -> Reply {
    let credential = Credential::AccessToken(req.token.trim());
    let principal = match identity::authenticate(&call.ctx.state, credential).await {
        Ok(p) => p,
        Err(IdentityError::Refused(refused)) => {
            return Err(Refusal::new(refused.code(), refused.to_string()));
        }
        Err(IdentityError::Unavailable(e)) => {
            tracing::warn!(error = %e, "session store unavailable during auth:renew");
            return Err(Refusal::unavailable());
        }
    };
    if principal.user_id != call.conn.user_id || principal.family_id != call.conn.family_id {
        return Err(Refusal::new(
            "invalid_token",
            "the token is not of this connection's login",
        ));
    }
    expiry::renew(&call.ctx, call.socket.id, &call.conn, &principal);
    ack(RenewAck {
        expires_at: crate::clock::rfc3339(principal.expires_at),
    })
}
