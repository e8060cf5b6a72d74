//! Pub/sub over Redis (distributed mode): every instance sharing the Redis server and
//! the key prefix receives what any of them publishes.
//!
//! Publishing goes through the shared command connection of [`RedisClient`] (one
//! `PUBLISH`, one round trip). Receiving uses ONE dedicated subscription connection
//! per [`RedisPubSub`] (on a Redis Cluster, one RESP3 cluster connection with sharded
//! pub/sub: `SPUBLISH`/`SSUBSCRIBE`, each channel on the master of its own slot, so a
//! room's events reach only that master and the instances subscribed there, instead of
//! every node of the cluster), owned by a background task that
//! - multiplexes all local subscribers of a channel onto one Redis `SUBSCRIBE`
//!   (a tokio broadcast channel fans the messages out), and the channels of every
//!   [`Feed`] onto the same connection (one stream per feed, whatever its channels);
//! - PINGs the server every [`PING_EVERY`], so that a half-open connection is noticed
//!   and [`PubSub::check`] turns `Err` while the connection is down;
//! - on loss, reconnects by itself with exponential backoff ([`MIN_BACKOFF`] to
//!   [`MAX_BACKOFF`]), re-resolving the Sentinel master each time, resubscribes every
//!   live channel, and only then hands every live subscription a [`Delivery::Gap`]
//!   before any message of the new connection.
//!
//! We write this loop ourselves instead of using `ConnectionManager`'s automatic
//! resubscription: the manager only reconnects when a command fails, gives no signal
//! we could turn into `Gap`, and is bound to one address, which Sentinel failover
//! breaks. (socketioxide-redis stopped delivering after a restart for exactly such
//! reasons, see docs/architecture.md, "Crates".)
//!
//! Guarantees: at-most-once; per publisher, messages arrive in publish order (Redis
//! delivers in the order it executes the `PUBLISH`es). A subscriber that falls more than
//! [`CHANNEL_CAPACITY`] messages behind sees a `Gap`. Dropping the last subscription of
//! a channel unsubscribes from Redis shortly after (the task handles it in order), as
//! does removing a channel from the last feed that had it.
//! Channel names are prefixed with `{prefix}:`.

use std::collections::HashMap;

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::{Stream, StreamExt};
use redis::aio::{PubSubSink, PubSubStream};
use redis::cluster_async::ClusterConnection;
use redis::{PushInfo, PushKind};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::time::Instant;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;

use super::{Delivery, Feed, FeedChannels, PubSub, Subscription};
use crate::backend_error::BackendError;
use crate::redis_client::{COMMAND_TIMEOUT, RedisClient, timeout};

/// Messages buffered per channel for the slowest local subscriber before it lags
/// (and sees a `Gap`). Same as the in-process backend.
pub const CHANNEL_CAPACITY: usize = 1024;
/// Liveness probe period of the subscription connection: the longest an outage can
/// go unnoticed when the socket is not closed cleanly (plus [`COMMAND_TIMEOUT`]).
pub const PING_EVERY: Duration = Duration::from_secs(1);
/// First reconnect delay after a loss.
pub const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// Largest reconnect delay: an outage ends at most this long before we notice.
pub const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Pub/sub on Redis; clones share one subscription connection.
#[derive(Clone)]
pub struct RedisPubSub {
    client: RedisClient,
    shared: Arc<Shared>,
    commands: mpsc::UnboundedSender<Command>,
}

/// State shared by the handles and the connection task.
struct Shared {
    /// Who receives what arrives on each live channel.
    routes: Mutex<Routes>,
    /// The id of the next feed.
    next_feed: AtomicU64,
    /// Whether the subscription connection is up (for `check`).
    up: AtomicBool,
    /// How many times the connection was restored: moves before the `Gap` of each
    /// new connection is sent (see [`RedisPubSub::generation`]).
    generation: AtomicU64,
    /// Why it is down, for the readiness message.
    last_error: Mutex<String>,
}

/// Live channels (full, prefixed names) and where their messages go.
#[derive(Default)]
struct Routes {
    /// Plain subscriptions: one local fan-out per channel.
    channels: HashMap<String, broadcast::Sender<Delivery>>,
    /// Feeds by id.
    feeds: HashMap<u64, broadcast::Sender<Delivery>>,
    /// The feeds each channel goes to.
    feed_channels: HashMap<String, Vec<u64>>,
}

impl Routes {
    /// Whether anybody here still receives `channel` (else it is unsubscribed).
    fn in_use(&self, channel: &str) -> bool {
        self.channels.contains_key(channel) || self.feed_channels.contains_key(channel)
    }

    /// Every channel the connection must be subscribed to.
    fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.channels.keys().cloned().collect();
        names.extend(
            self.feed_channels
                .keys()
                .filter(|c| !self.channels.contains_key(*c))
                .cloned(),
        );
        names
    }

    fn deliver(&self, channel: &str, payload: &[u8]) {
        let plain = self.channels.get(channel);
        let feeds = self.feed_channels.get(channel);
        if plain.is_none() && feeds.is_none() {
            return;
        }
        let payload = Bytes::copy_from_slice(payload);
        if let Some(tx) = plain {
            // No receiver left: a Release is on its way and will unsubscribe.
            let _ = tx.send(Delivery::Message(payload.clone()));
        }
        for id in feeds.into_iter().flatten() {
            if let Some(tx) = self.feeds.get(id) {
                let _ = tx.send(Delivery::Message(payload.clone()));
            }
        }
    }

    /// Tells every subscriber and every feed that messages were lost.
    fn gap(&self) {
        for tx in self.channels.values().chain(self.feeds.values()) {
            let _ = tx.send(Delivery::Gap);
        }
    }

    /// Takes `channel` out of feed `id`; whether nobody here receives it any more.
    fn leave_feed(&mut self, id: u64, channel: &str) -> bool {
        if let Some(ids) = self.feed_channels.get_mut(channel) {
            ids.retain(|i| *i != id);
            if ids.is_empty() {
                self.feed_channels.remove(channel);
            }
        }
        !self.in_use(channel)
    }
}

enum Command {
    /// Subscribe to a full channel name; answered once Redis confirmed it.
    Subscribe {
        channel: String,
        reply: oneshot::Sender<Result<broadcast::Receiver<Delivery>, String>>,
    },
    /// A subscription of `channel` was dropped; unsubscribe if it was the last one.
    Release { channel: String },
    /// Add a full channel name to a feed; answered once Redis confirmed it (or at
    /// once when it had it already).
    FeedAdd {
        feed: u64,
        channel: String,
        reply: oneshot::Sender<Result<(), String>>,
    },
    /// Take a channel out of a feed; unsubscribe if nobody else receives it.
    FeedRemove { feed: u64, channel: String },
    /// A feed was dropped: take all its channels out.
    FeedClose { feed: u64 },
}

/// The subscription connection.
enum Connection {
    /// One server (fixed, or the Sentinel master): `SUBSCRIBE` on a RESP2 connection.
    Plain {
        sink: PubSubSink,
        stream: PubSubStream,
    },
    /// A Redis Cluster: sharded pub/sub (`SSUBSCRIBE`) on a RESP3 cluster connection,
    /// which sends each channel's subscription to the master of its slot; messages and
    /// the loss of any node's connection arrive on `pushes`.
    Sharded {
        conn: ClusterConnection,
        pushes: mpsc::UnboundedReceiver<PushInfo>,
    },
}

/// What the subscription connection yields.
enum Incoming {
    Message(redis::Msg),
    /// Nothing for us (a subscription confirmation).
    Other,
    /// The connection (or one cluster node's) is gone.
    Lost(&'static str),
}

impl Connection {
    async fn subscribe(&mut self, channels: &[String]) -> Result<(), BackendError> {
        match self {
            Connection::Plain { sink, .. } => timeout(sink.subscribe(channels)).await,
            // One SSUBSCRIBE per channel, all in flight at once: the channels of one
            // SSUBSCRIBE must share a slot, and each of ours is a slot of its own.
            Connection::Sharded { conn, .. } => {
                timeout(futures::future::try_join_all(channels.iter().map(|c| {
                    let mut conn = conn.clone();
                    async move { conn.ssubscribe(c).await }
                })))
                .await
                .map(|_| ())
            }
        }
    }

    async fn unsubscribe(&mut self, channels: &[String]) -> Result<(), BackendError> {
        match self {
            Connection::Plain { sink, .. } => timeout(sink.unsubscribe(channels)).await,
            Connection::Sharded { conn, .. } => {
                timeout(futures::future::try_join_all(channels.iter().map(|c| {
                    let mut conn = conn.clone();
                    async move { conn.sunsubscribe(c).await }
                })))
                .await
                .map(|_| ())
            }
        }
    }

    /// The liveness probe; on a cluster, `PING` goes to every master.
    async fn ping(&mut self) -> Result<(), BackendError> {
        match self {
            Connection::Plain { sink, .. } => {
                timeout(sink.ping::<redis::Value>()).await.map(|_| ())
            }
            Connection::Sharded { conn, .. } => {
                timeout(redis::cmd("PING").query_async::<redis::Value>(conn))
                    .await
                    .map(|_| ())
            }
        }
    }

    async fn next(&mut self) -> Incoming {
        match self {
            Connection::Plain { stream, .. } => match stream.next().await {
                Some(msg) => Incoming::Message(msg),
                None => Incoming::Lost("connection closed"),
            },
            Connection::Sharded { pushes, .. } => match pushes.recv().await {
                // The node's subscriptions are gone with it; redis-rs would resubscribe
                // them on its own, but without telling us when, so nobody would get the
                // Gap after the messages lost meanwhile: we open a new connection.
                Some(push) if push.kind == PushKind::Disconnection => {
                    Incoming::Lost("connection to a cluster node closed")
                }
                Some(push) => {
                    redis::Msg::from_push_info(push).map_or(Incoming::Other, Incoming::Message)
                }
                None => Incoming::Lost("connection closed"),
            },
        }
    }
}

impl RedisPubSub {
    /// Opens the subscription connection and starts its task. The task ends when this
    /// value, its clones and every subscription are dropped.
    pub async fn connect(client: &RedisClient) -> Result<RedisPubSub, BackendError> {
        let shared = Arc::new(Shared {
            routes: Mutex::new(Routes::default()),
            next_feed: AtomicU64::new(0),
            up: AtomicBool::new(false),
            generation: AtomicU64::new(0),
            last_error: Mutex::new("not connected yet".into()),
        });
        let conn = open(client, &shared).await?;
        shared.up.store(true, Ordering::Release);
        let (commands, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(client.clone(), shared.clone(), rx, conn));
        Ok(RedisPubSub {
            client: client.clone(),
            shared,
            commands,
        })
    }

    /// The full Redis name of `channel` ([`RedisClient::channel`]).
    pub fn channel_key(&self, channel: &str) -> String {
        self.client.channel(channel)
    }

    /// The command that publishes `payload` on `channel` (`PUBLISH`, or on a cluster
    /// `SPUBLISH`), for callers that put it into a pipeline of their own. Its reply is
    /// the number of subscription connections (i.e. instances) it reached.
    pub fn publish_command(&self, channel: &str, payload: &[u8]) -> redis::Cmd {
        let name = if self.client.is_cluster() {
            "SPUBLISH"
        } else {
            "PUBLISH"
        };
        let mut cmd = redis::cmd(name);
        cmd.arg(self.channel_key(channel)).arg(payload);
        cmd
    }

    /// Whether the subscription connection is up right now.
    pub fn is_up(&self) -> bool {
        self.shared.up.load(Ordering::Acquire)
    }

    /// The number of times the subscription connection was restored. A subscriber
    /// that handled the `Gap` of generation `g` and still sees `g` has missed
    /// nothing since (as far as a connection loss can be detected: within
    /// [`PING_EVERY`] plus the command timeout).
    pub fn generation(&self) -> u64 {
        self.shared.generation.load(Ordering::Acquire)
    }

    /// Like [`PubSub::publish`], returning how many subscription connections (i.e.
    /// instances) Redis handed the message to.
    pub async fn publish_counted(
        &self,
        channel: &str,
        payload: &[u8],
    ) -> Result<u64, BackendError> {
        self.client
            .query(&self.publish_command(channel, payload))
            .await
    }
}

#[async_trait]
impl PubSub for RedisPubSub {
    async fn publish(&self, channel: &str, payload: Bytes) -> Result<(), BackendError> {
        self.publish_counted(channel, &payload).await.map(|_| ())
    }

    async fn subscribe(&self, channel: &str) -> Result<Subscription, BackendError> {
        let channel = self.channel_key(channel);
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Subscribe {
                channel: channel.clone(),
                reply,
            })
            .map_err(|_| BackendError::unavailable("redis", "pub/sub task has stopped"))?;
        // The task may be in the middle of a reconnect attempt (bounded by the connect
        // and command timeouts), so we wait for a little longer than both.
        let rx = match tokio::time::timeout(COMMAND_TIMEOUT * 3, answer).await {
            Ok(Ok(Ok(rx))) => rx,
            Ok(Ok(Err(message))) => return Err(BackendError::unavailable("redis", message)),
            Ok(Err(_)) => {
                return Err(BackendError::unavailable(
                    "redis",
                    "pub/sub task has stopped",
                ));
            }
            Err(_) => return Err(BackendError::unavailable("redis", "SUBSCRIBE timed out")),
        };
        Ok(Box::pin(ChannelSubscription {
            inner: Some(BroadcastStream::new(rx)),
            channel,
            commands: self.commands.clone(),
        }))
    }

    async fn feed(&self) -> Result<Feed, BackendError> {
        let id = self.shared.next_feed.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = broadcast::channel(CHANNEL_CAPACITY);
        self.shared.routes().feeds.insert(id, tx);
        let stream = BroadcastStream::new(rx).map(|item| match item {
            Ok(delivery) => delivery,
            Err(BroadcastStreamRecvError::Lagged(_)) => Delivery::Gap,
        });
        Ok(Feed {
            stream: stream.boxed(),
            channels: Box::new(RedisFeed {
                id,
                pubsub: self.clone(),
            }),
        })
    }

    async fn check(&self) -> Result<(), BackendError> {
        if self.shared.up.load(Ordering::Acquire) {
            Ok(())
        } else {
            let why = self.shared.last_error();
            Err(BackendError::unavailable(
                "redis",
                format!("subscription connection is down: {why}"),
            ))
        }
    }
}

impl Shared {
    fn routes(&self) -> std::sync::MutexGuard<'_, Routes> {
        self.routes.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn last_error(&self) -> String {
        self.last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// The channel set of one feed; the connection task does the work, in order.
struct RedisFeed {
    id: u64,
    pubsub: RedisPubSub,
}

#[async_trait]
impl FeedChannels for RedisFeed {
    async fn add(&self, channel: &str) -> Result<(), BackendError> {
        let (reply, answer) = oneshot::channel();
        self.pubsub
            .commands
            .send(Command::FeedAdd {
                feed: self.id,
                channel: self.pubsub.channel_key(channel),
                reply,
            })
            .map_err(|_| BackendError::unavailable("redis", "pub/sub task has stopped"))?;
        // As in `subscribe`: the task may be in the middle of a reconnect attempt.
        match tokio::time::timeout(COMMAND_TIMEOUT * 3, answer).await {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(message))) => Err(BackendError::unavailable("redis", message)),
            Ok(Err(_)) => Err(BackendError::unavailable(
                "redis",
                "pub/sub task has stopped",
            )),
            Err(_) => Err(BackendError::unavailable("redis", "SUBSCRIBE timed out")),
        }
    }

    fn remove(&self, channel: &str) {
        let _ = self.pubsub.commands.send(Command::FeedRemove {
            feed: self.id,
            channel: self.pubsub.channel_key(channel),
        });
    }
}

impl Drop for RedisFeed {
    fn drop(&mut self) {
        let _ = self
            .pubsub
            .commands
            .send(Command::FeedClose { feed: self.id });
    }
}

/// One local subscriber; dropping it tells the task, which unsubscribes from Redis
/// when it was the last one of its channel.
struct ChannelSubscription {
    inner: Option<BroadcastStream<Delivery>>,
    channel: String,
    commands: mpsc::UnboundedSender<Command>,
}

impl Stream for ChannelSubscription {
    type Item = Delivery;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Delivery>> {
        let Some(inner) = self.inner.as_mut() else {
            return Poll::Ready(None);
        };
        inner.poll_next_unpin(cx).map(|item| {
            item.map(|r| match r {
                Ok(delivery) => delivery,
                Err(BroadcastStreamRecvError::Lagged(_)) => Delivery::Gap,
            })
        })
    }
}

impl Drop for ChannelSubscription {
    fn drop(&mut self) {
        // Drop the receiver first, so the task sees the right receiver count.
        self.inner.take();
        let _ = self.commands.send(Command::Release {
            channel: std::mem::take(&mut self.channel),
        });
    }
}

/// Opens a subscription connection and subscribes every live channel on it.
async fn open(client: &RedisClient, shared: &Shared) -> Result<Connection, BackendError> {
    let (tx, pushes) = mpsc::unbounded_channel();
    let mut conn = match client.cluster_subscriber(tx).await {
        Some(conn) => Connection::Sharded {
            conn: conn?,
            pushes,
        },
        None => {
            let client = client.dedicated_client().await?;
            let pubsub = timeout(client.get_async_pubsub()).await?;
            let (sink, stream) = pubsub.split();
            Connection::Plain { sink, stream }
        }
    };
    let names = shared.routes().names();
    if !names.is_empty() {
        conn.subscribe(&names).await?;
    }
    Ok(conn)
}

/// The connection task: serves commands, forwards messages, probes, reconnects.
async fn run(
    client: RedisClient,
    shared: Arc<Shared>,
    mut commands: mpsc::UnboundedReceiver<Command>,
    conn: Connection,
) {
    let mut conn = Some(conn);
    let mut backoff = MIN_BACKOFF;
    let mut next_attempt = Instant::now();
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        if let Some(c) = conn.as_mut() {
            let lost: Option<String> = tokio::select! {
                cmd = commands.recv() => match cmd {
                    None => return,
                    Some(cmd) => {
                        // Whatever else is queued goes with it: a burst of first
                        // sockets in new rooms costs one SUBSCRIBE, and delivery (this
                        // task) waits for one round trip, not one per room.
                        let mut batch = vec![cmd];
                        while batch.len() < MAX_BATCH {
                            match commands.try_recv() {
                                Ok(more) => batch.push(more),
                                Err(_) => break,
                            }
                        }
                        handle_batch(batch, &shared, c).await.err()
                    }
                },
                incoming = c.next() => match incoming {
                    Incoming::Message(msg) => {
                        deliver(&shared, msg.get_channel_name(), msg.get_payload_bytes());
                        None
                    }
                    Incoming::Other => None,
                    Incoming::Lost(why) => Some(why.to_owned()),
                },
                _ = ping.tick() => c.ping().await.err().map(|e| e.to_string()),
            };
            if let Some(why) = lost {
                tracing::warn!(error = %why, "redis pub/sub: subscription connection lost");
                mark_down(&shared, why);
                conn = None;
                backoff = MIN_BACKOFF;
                next_attempt = Instant::now();
            }
        } else {
            tokio::select! {
                cmd = commands.recv() => match cmd {
                    None => return,
                    Some(cmd) => { let _ = handle(cmd, &shared, None).await; }
                },
                _ = tokio::time::sleep_until(next_attempt) => {
                    match open(&client, &shared).await {
                        Ok(c) => {
                            shared.generation.fetch_add(1, Ordering::AcqRel);
                            shared.up.store(true, Ordering::Release);
                            tracing::info!("redis pub/sub: subscription connection restored");
                            // Everything published while we were away is lost: say so
                            // before the first message of the new connection.
                            shared.routes().gap();
                            conn = Some(c);
                            ping.reset();
                        }
                        Err(e) => {
                            mark_down(&shared, e.to_string());
                            next_attempt = Instant::now() + backoff;
                            backoff = (backoff * 2).min(MAX_BACKOFF);
                        }
                    }
                }
            }
        }
    }
}

fn mark_down(shared: &Shared, why: String) {
    shared.up.store(false, Ordering::Release);
    *shared.last_error.lock().unwrap_or_else(|p| p.into_inner()) = why;
}

fn deliver(shared: &Shared, channel: &str, payload: &[u8]) {
    shared.routes().deliver(channel, payload);
}

/// The most commands served together (one `SUBSCRIBE` for all their feed channels).
const MAX_BATCH: usize = 512;

/// Serves queued commands in order; the feed channels added by consecutive
/// `FeedAdd`s are subscribed with one `SUBSCRIBE`, and each of them is answered once
/// it is confirmed. `Err` means the connection failed and must be replaced.
async fn handle_batch(
    batch: Vec<Command>,
    shared: &Shared,
    conn: &mut Connection,
) -> Result<(), String> {
    let mut to_subscribe: Vec<String> = Vec::new();
    let mut waiting: Vec<oneshot::Sender<Result<(), String>>> = Vec::new();
    for cmd in batch {
        match cmd {
            Command::FeedAdd {
                feed,
                channel,
                reply,
            } => {
                if join_feed(shared, feed, &channel) {
                    to_subscribe.push(channel);
                }
                waiting.push(reply);
            }
            other => {
                flush_adds(
                    conn,
                    std::mem::take(&mut to_subscribe),
                    std::mem::take(&mut waiting),
                )
                .await?;
                handle(other, shared, Some(conn)).await?;
            }
        }
    }
    flush_adds(conn, to_subscribe, waiting).await
}

/// Subscribes `channels` (if any) and answers `waiting` with the outcome.
async fn flush_adds(
    conn: &mut Connection,
    channels: Vec<String>,
    waiting: Vec<oneshot::Sender<Result<(), String>>>,
) -> Result<(), String> {
    let outcome = if channels.is_empty() {
        Ok(())
    } else {
        conn.subscribe(&channels).await.map_err(|e| e.to_string())
    };
    for reply in waiting {
        let _ = reply.send(
            outcome
                .clone()
                .map_err(|e| format!("SUBSCRIBE failed: {e}")),
        );
    }
    outcome
}

/// Adds `channel` to feed `feed` in the routes; whether it must be subscribed (nobody
/// here received it before). The channel joins the feed even when it cannot be
/// subscribed now: the next connection subscribes every channel of the routes, and
/// the feed gets that connection's Gap first.
fn join_feed(shared: &Shared, feed: u64, channel: &str) -> bool {
    let mut routes = shared.routes();
    let subscribed = routes.in_use(channel);
    let ids = routes.feed_channels.entry(channel.to_owned()).or_default();
    if !ids.contains(&feed) {
        ids.push(feed);
    }
    !subscribed
}

/// Serves one command; `Err` means the connection failed and must be replaced.
async fn handle(
    cmd: Command,
    shared: &Shared,
    conn: Option<&mut Connection>,
) -> Result<(), String> {
    match cmd {
        Command::Subscribe { channel, reply } => {
            let Some(conn) = conn else {
                let why = shared.last_error();
                let _ = reply.send(Err(format!("subscription connection is down: {why}")));
                return Ok(());
            };
            let (existing, subscribed) = {
                let routes = shared.routes();
                (
                    routes
                        .channels
                        .get(&channel)
                        .map(broadcast::Sender::subscribe),
                    routes.in_use(&channel),
                )
            };
            if let Some(rx) = existing {
                let _ = reply.send(Ok(rx));
                return Ok(());
            }
            let confirmed = if subscribed {
                Ok(())
            } else {
                conn.subscribe(std::slice::from_ref(&channel)).await
            };
            match confirmed {
                Ok(()) => {
                    let (tx, rx) = broadcast::channel(CHANNEL_CAPACITY);
                    shared.routes().channels.insert(channel, tx);
                    let _ = reply.send(Ok(rx));
                    Ok(())
                }
                Err(e) => {
                    let _ = reply.send(Err(format!("SUBSCRIBE failed: {e}")));
                    Err(e.to_string())
                }
            }
        }
        Command::Release { channel } => {
            let unused = {
                let mut routes = shared.routes();
                let released = routes
                    .channels
                    .get(&channel)
                    .is_some_and(|tx| tx.receiver_count() == 0);
                if released {
                    routes.channels.remove(&channel);
                }
                released && !routes.in_use(&channel)
            };
            unsubscribe(conn, if unused { vec![channel] } else { vec![] }).await
        }
        Command::FeedAdd {
            feed,
            channel,
            reply,
        } => {
            let must_subscribe = join_feed(shared, feed, &channel);
            let Some(conn) = conn else {
                let why = shared.last_error();
                let _ = reply.send(Err(format!("subscription connection is down: {why}")));
                return Ok(());
            };
            let channels = if must_subscribe {
                vec![channel]
            } else {
                vec![]
            };
            flush_adds(conn, channels, vec![reply]).await
        }
        Command::FeedRemove { feed, channel } => {
            let unused = shared.routes().leave_feed(feed, &channel);
            unsubscribe(conn, if unused { vec![channel] } else { vec![] }).await
        }
        Command::FeedClose { feed } => {
            let unused: Vec<String> = {
                let mut routes = shared.routes();
                routes.feeds.remove(&feed);
                let channels: Vec<String> = routes
                    .feed_channels
                    .iter()
                    .filter(|(_, ids)| ids.contains(&feed))
                    .map(|(c, _)| c.clone())
                    .collect();
                channels
                    .into_iter()
                    .filter(|c| routes.leave_feed(feed, c))
                    .collect()
            };
            unsubscribe(conn, unused).await
        }
    }
}

/// `UNSUBSCRIBE`s `channels` (none: nothing to do; no connection: the next one will
/// not subscribe them, since they are no longer in `Routes`).
async fn unsubscribe(conn: Option<&mut Connection>, channels: Vec<String>) -> Result<(), String> {
    match conn {
        Some(conn) if !channels.is_empty() => {
            conn.unsubscribe(&channels).await.map_err(|e| e.to_string())
        }
        _ => Ok(()),
    }
}
