//! Realtime: Socket.IO v4 (socketioxide) on the HTTP port, path `/socket.io/`
//! (guarantees and limits in `docs/realtime.md`).
//!
//! # Architecture: broker + hub, not a Socket.IO adapter
//!
//! Socket.IO runs with its LOCAL adapter in both modes. Cross-instance delivery goes
//! through Shoal's own [`PubSub`](crate::pubsub::PubSub) — the broker — and one
//! subscriber task per instance — the hub ([`hub`]) — emits what arrives to that
//! instance's sockets. This is the Centrifuge broker + hub pattern, and it is chosen
//! over `socketioxide-redis` because:
//!
//! - that adapter stopped delivering across instances for good after a Redis restart
//!   (docs/architecture.md, "Crates"); our `RedisPubSub` resubscribes by itself, reports readiness 503
//!   while the subscription is down, and says [`Delivery::Gap`](crate::pubsub::Delivery::Gap)
//!   when it is back — which the hub turns into a catch-up from the database;
//! - emits must pass through per-socket logic anyway: a `message:new` is delivered
//!   only in `seq` order, without duplicates, after a resume ([`resume`]), which a
//!   broadcast adapter cannot do;
//! - embedded mode takes the very same path over the in-process `MemoryPubSub`, so
//!   both modes behave alike (docs/architecture.md) and the handlers never ask which mode runs.
//!
//! Every event is published ONCE ([`crate::events::publish`]) on its room's channel
//! ([`crate::events::channel_of`]); an instance listens to the channels of the rooms
//! it has sockets in ([`channels`]), all through one [`Feed`](crate::pubsub::Feed):
//! one stream and one gap signal for the hub, whatever the number of rooms. An
//! instance therefore decodes only the events of its own rooms, and the cost of a
//! delivered event does not grow with the number of instances (BENCHMARKS.md, "Room
//! channels"), which one channel for the whole deployment made it do.
//!
//! # Layout
//!
//! - [`handlers`]: handshake authentication and client → server events with acks.
//! - [`fanout`]: live fan-out of `message:new`, one cursor per room and instance.
//! - [`resume`]: per-socket `seq` cursors while joining, replay on join, repair after
//!   a gap.
//! - [`presence`]: this instance's presence entries, `presence:update` on the first
//!   and last connection of a user.
//! - [`hub`]: the subscriber task and the presence refresher.
//! - [`channels`]: which room channels this instance listens to.
//! - [`limits`]: the cap on one user's connections to this instance.
//! - [`protocol`]: the acks and the transport's own events, as types (their schemas
//!   are in the OpenAPI document, for clients).

pub(crate) mod channels;
pub(crate) mod expiry;
pub(crate) mod fanout;
pub(crate) mod handlers;
pub(crate) mod hub;
pub(crate) mod limits;
pub(crate) mod presence;
pub mod protocol;
pub mod resume;

use std::time::Duration;

use anyhow::Context;
use axum::extract::{Request, State};
use axum::http::{Extensions, HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use socketioxide::layer::SocketIoLayer;
use socketioxide::{ParserConfig, SocketIo};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::pubsub::Subscription;
use crate::rate_limit::Quota;
use crate::rate_limit::client::bucket_of;
use crate::state::AppState;

/// The Socket.IO path.
pub const PATH: &str = "/socket.io";

/// How long a transport may stay open without a Socket.IO CONNECT (authentication).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What handlers and background repairs share.
#[derive(Clone)]
pub(crate) struct Ctx {
    /// The application.
    pub(crate) state: AppState,
    /// Owns the background repairs, so that shutdown can wait for them.
    pub(crate) tasks: TaskTracker,
    /// The chat rooms of this instance (live `message:new` fan-out).
    pub(crate) fanout: std::sync::Arc<fanout::ChatRooms>,
    /// Open connections per user (`REALTIME_MAX_SOCKETS_PER_USER`).
    pub(crate) sockets: std::sync::Arc<limits::SocketsPerUser>,
    /// Open connections per client address (`REALTIME_MAX_SOCKETS_PER_IP`).
    pub(crate) sockets_per_ip: std::sync::Arc<limits::SocketsPerIp>,
    /// When each connection's credentials run out ([`expiry`]).
    pub(crate) expiries: std::sync::Arc<expiry::Expiries>,
    /// Joins in progress per user ([`limits::JoinsInProgress`]).
    pub(crate) joins: std::sync::Arc<limits::JoinsInProgress>,
    /// The room channels this instance listens to.
    pub(crate) channels: std::sync::Arc<channels::RoomChannels>,
}

/// The realtime server of one instance: the Socket.IO handle and the subscription
/// its hub will consume.
pub struct Realtime {
    io: SocketIo,
    ctx: Ctx,
    subscription: Option<Subscription>,
}

impl Realtime {
    /// Builds the Socket.IO layer and opens the feed of room channels (before the
    /// listener serves; rooms are added as sockets arrive).
    pub async fn build(state: &AppState) -> anyhow::Result<(SocketIoLayer, Self)> {
        let max_message = state.config.realtime.max_message_bytes;
        // Frames up to twice the body limit (JSON escaping) plus room for the event
        // envelope are read and answered with `payload_too_large`; bigger ones close
        // the connection in the engine without reaching any handler.
        let frame_limit = max_message.saturating_mul(2) + 16 * 1024;
        let (layer, io) = SocketIo::builder()
            .req_path(format!("{PATH}/"))
            .max_payload(frame_limit as u64)
            .ws_max_message_size(frame_limit)
            .ws_max_frame_size(frame_limit)
            // Replays emit up to REPLAY_LIMIT packets at once; the queue is bounded
            // but allocated lazily, so a large bound costs nothing on idle sockets.
            .max_buffer_size(4 * resume::REPLAY_LIMIT as usize)
            // What the engine reads client frames into, per connection: clients send
            // small frames (pongs, events of a few hundred bytes); a larger frame
            // grows it. 1 KiB → 512 B took an idle connection from 7.8 to 7.4 KiB.
            .ws_read_buffer_size(512)
            .ack_timeout(Duration::from_secs(10))
            // An Engine.IO connection that never sends its Socket.IO CONNECT (with the
            // credentials) is closed after 10 s instead of the default 45 s.
            .connect_timeout(HANDSHAKE_TIMEOUT)
            // Shoal's events carry JSON only: a packet that announces binary
            // attachments closes the connection before any attachment is buffered
            // (the defaults buffer up to 10,000 attachments, 10 MB, for a minute).
            .with_parser(
                ParserConfig::common()
                    .max_incoming_binaries(0)
                    .max_incoming_binary_buf_size(0)
                    .packet_completion_timeout(Duration::from_secs(1)),
            )
            .build_layer();
        let feed = state
            .pubsub
            .feed()
            .await
            .context("opening the realtime feed")?;
        let ctx = Ctx {
            state: state.clone(),
            tasks: TaskTracker::new(),
            fanout: std::sync::Arc::default(),
            sockets: limits::SocketsPerUser::new(state.config.realtime.max_sockets_per_user),
            sockets_per_ip: limits::SocketsPerIp::new(state.config.realtime.max_sockets_per_ip),
            expiries: std::sync::Arc::default(),
            joins: limits::JoinsInProgress::new(handlers::JOINS_PER_USER),
            channels: std::sync::Arc::new(channels::RoomChannels::new(
                feed.channels,
                state.config.realtime.channel_linger,
            )),
        };
        handlers::register(&io, ctx.clone());
        Ok((
            layer,
            Self {
                io,
                ctx,
                subscription: Some(feed.stream),
            },
        ))
    }

    /// Starts the hub and the presence refresher on `tracker`, until `stop`.
    pub fn spawn(&mut self, tracker: &TaskTracker, stop: CancellationToken) {
        if let Some(subscription) = self.subscription.take() {
            tracker.spawn(hub::run(
                self.ctx.clone(),
                self.io.clone(),
                subscription,
                stop.clone(),
            ));
        }
        tracker.spawn(channels::sweep_loop(self.ctx.clone(), stop.clone()));
        tracker.spawn(expiry::sweep_loop(
            self.ctx.clone(),
            self.io.clone(),
            stop.clone(),
        ));
        tracker.spawn(hub::refresh_presence_loop(
            self.ctx.clone(),
            self.io.clone(),
            stop,
        ));
    }

    /// A handle for the shutdown path (see [`Realtime::close`]).
    pub fn closer(&self) -> Closer {
        Closer(self.io.clone())
    }

    /// Waits (bounded) for background repairs after the hub stopped.
    pub async fn finish(self, within: Duration) {
        self.ctx.tasks.close();
        let _ = tokio::time::timeout(within, self.ctx.tasks.wait()).await;
    }
}

/// Closes every Socket.IO connection of this instance.
#[derive(Clone)]
pub struct Closer(SocketIo);

impl Closer {
    /// Closes the transports of all sockets (the stock client then reconnects by
    /// itself — to another instance, since this one refuses new handshakes while
    /// draining — and resumes with `since_seq`).
    pub async fn close(&self, within: Duration) {
        let open = self.0.sockets().len();
        if tokio::time::timeout(within, self.0.close()).await.is_err() {
            tracing::warn!("closing Socket.IO connections timed out");
        }
        tracing::info!(closed = open, "shutdown: Socket.IO connections closed");
    }
}

/// Middleware in front of the Socket.IO layer, for handshakes (requests without a
/// `sid` yet):
///
/// - while draining they get 503, which the stock client treats as "retry", so it
///   lands on another instance; the `connect_error` of a rejected auth would stop its
///   retries;
/// - the request head is rebuilt from owned copies ([`detach_head`]) before the engine
///   keeps it for the life of the connection.
pub async fn handshake_gate(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let is_handshake = req.uri().path().starts_with(PATH)
        && !req
            .uri()
            .query()
            .is_some_and(|q| q.split('&').any(|p| p.starts_with("sid=")));
    if !is_handshake {
        return next.run(req).await;
    }
    if state.lifecycle.is_draining() {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down").into_response();
    }
    let address = bucket_of(
        &state.config.server.trusted_proxies,
        req.extensions(),
        req.headers(),
    );
    // A handshake spends the per-address budget of anonymous HTTP requests: opening
    // sockets in a loop costs what requests in a loop cost.
    let quota = Quota::per_minute(state.config.rate_limit.ip_per_min);
    if let Ok(decision) = state
        .rate_limiter
        .check(&format!("rl:ip:{address}"), quota)
        .await
        && !decision.allowed
    {
        metrics::counter!("shoal_rate_limited_total", "scope" => "socket_handshake").increment(1);
        let retry = decision.retry_after.unwrap_or_default().as_secs().max(1);
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, retry.to_string())],
            "too many handshakes from this address",
        )
            .into_response();
    }
    let mut req = detach_head(req);
    req.extensions_mut().insert(ClientAddr(address));
    next.run(req).await
}

/// The client address (its rate-limit bucket) of a handshake, kept with the
/// connection for [`limits::SocketsPerIp`].
#[derive(Debug, Clone)]
pub(crate) struct ClientAddr(pub(crate) String);

/// Headers a Socket.IO connection needs after its handshake request: the WebSocket
/// upgrade, the cookie (authentication), and the client's addresses for logs. The
/// engine stores the head of the handshake request for as long as the connection
/// lives, so everything else (user agent, accept-*, …) is left out.
const KEPT_HEADERS: [header::HeaderName; 10] = [
    header::HOST,
    header::CONNECTION,
    header::UPGRADE,
    header::SEC_WEBSOCKET_KEY,
    header::SEC_WEBSOCKET_VERSION,
    header::SEC_WEBSOCKET_PROTOCOL,
    header::SEC_WEBSOCKET_EXTENSIONS,
    header::COOKIE,
    header::ORIGIN,
    header::CONTENT_TYPE,
];

/// Copies the head of a handshake request into fresh allocations.
///
/// Why: hyper parses header values and the URI as slices of the connection's read
/// buffer (16 KiB), and engineioxide keeps the handshake's head in its socket. One
/// retained header value therefore kept the whole buffer alive for the life of every
/// WebSocket connection — measured with heaptrack, 16 KiB of the ~37 KiB an idle
/// connection cost. Only hyper's upgrade handle is kept of the extensions.
fn detach_head(req: Request) -> Request {
    let (mut parts, body) = req.into_parts();
    // Sized to what is kept: an empty map's default capacity alone was ~1 KiB.
    let kept = KEPT_HEADERS
        .iter()
        .map(|name| parts.headers.get_all(name).iter().count())
        .sum();
    let mut headers = HeaderMap::with_capacity(kept);
    for name in &KEPT_HEADERS {
        for value in parts.headers.get_all(name) {
            if let Ok(value) = HeaderValue::from_bytes(value.as_bytes()) {
                headers.append(name.clone(), value);
            }
        }
    }
    parts.headers = headers;
    if let Ok(uri) = Uri::try_from(parts.uri.to_string()) {
        parts.uri = uri;
    }
    let upgrade = parts.extensions.remove::<hyper::upgrade::OnUpgrade>();
    parts.extensions = Extensions::new();
    if let Some(upgrade) = upgrade {
        parts.extensions.insert(upgrade);
    }
    Request::from_parts(parts, body)
}
