//! The room channels this instance listens to: a room's channel
//! ([`crate::events::channel_of`]) while at least one socket here is in the room,
//! and for `REALTIME_CHANNEL_LINGER` after the last one left.
//!
//! # Nothing lost when a room's first socket arrives
//!
//! [`RoomChannels::want`] returns only once the broker confirmed the subscription, and
//! the callers call it before anything a socket could miss: at connect, before the
//! socket exists for its user room; at `workspace:join`, before the socket registers
//! with the room's cursor and reads the database (src/realtime/fanout.rs). A message
//! published before the subscription was confirmed was committed before it was
//! published, so the join's database read, which starts later, has it; one published
//! afterwards arrives on the feed. Concurrent first joins of one room wait for the
//! same subscription.
//!
//! # Leaving
//!
//! Unsubscribing is lazy: [`RoomChannels::sweep`] runs each second, compares the
//! channels with the rooms that have sockets here (the users with a connection here,
//! [`super::limits::SocketsPerUser`], and the workspaces with a joined socket,
//! [`super::fanout::ChatRooms`]: a set per user and per room, not per socket), and
//! drops a channel once its room has been empty for the linger time, so a socket
//! that reconnects or flaps does not subscribe and unsubscribe every time.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::OnceCell;
use tokio_util::sync::CancellationToken;

use super::Ctx;
use crate::events::{Room, channel_of};
use crate::pubsub::FeedChannels;

/// The channels of this instance's feed, by room name.
pub(crate) struct RoomChannels {
    feed: Box<dyn FeedChannels>,
    rooms: Mutex<HashMap<Room, Channel>>,
    linger: Duration,
}

struct Channel {
    /// Set once the broker answered the subscription (whatever it answered).
    subscribed: Arc<OnceCell<()>>,
    /// The last time a socket here was in the room or was about to be.
    used_at: Instant,
}

impl RoomChannels {
    pub(crate) fn new(feed: Box<dyn FeedChannels>, linger: Duration) -> Self {
        Self {
            feed,
            rooms: Mutex::new(HashMap::new()),
            linger,
        }
    }

    fn rooms(&self) -> std::sync::MutexGuard<'_, HashMap<Room, Channel>> {
        self.rooms.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes sure this instance receives the events of `room`; returns once the
    /// broker confirmed it. When the broker is down it returns at once: the channel
    /// is subscribed when the broker is back, after a gap that makes every room catch
    /// up from the database (src/realtime/hub.rs).
    pub(crate) async fn want(&self, room: Room) {
        let subscribed = {
            let mut rooms = self.rooms();
            let channel = rooms.entry(room).or_insert_with(|| Channel {
                subscribed: Arc::default(),
                used_at: Instant::now(),
            });
            channel.used_at = Instant::now();
            channel.subscribed.clone()
        };
        subscribed
            .get_or_init(|| async {
                let started = Instant::now();
                match self.feed.add(&channel_of(&room.to_string())).await {
                    Ok(()) => {
                        metrics::counter!("shoal_realtime_channel_changes_total", "change" => "subscribe")
                            .increment(1);
                        metrics::histogram!("shoal_realtime_subscribe_duration_seconds")
                            .record(started.elapsed().as_secs_f64());
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, %room, "room channel not subscribed now; it will be when the broker is back");
                    }
                }
            })
            .await;
    }

    /// Drops the channels of rooms that have had no socket here for the linger time.
    /// `in_use`: the rooms with at least one socket on this instance.
    pub(crate) fn sweep(&self, in_use: &HashSet<Room>) {
        let now = Instant::now();
        let mut rooms = self.rooms();
        rooms.retain(|room, channel| {
            if in_use.contains(room) {
                channel.used_at = now;
                return true;
            }
            // Within the linger time, or still being set up: keep it. (The linger is
            // at least a second, far longer than a join takes from `want` to the
            // socket entering the room.)
            if now.duration_since(channel.used_at) < self.linger
                || channel.subscribed.get().is_none()
            {
                return true;
            }
            // Under the lock: a `want` of the same room after this creates a new
            // entry and sends its add after this remove, in that order.
            self.feed.remove(&channel_of(&room.to_string()));
            metrics::counter!("shoal_realtime_channel_changes_total", "change" => "unsubscribe")
                .increment(1);
            false
        });
        metrics::gauge!("shoal_realtime_channels").set(rooms.len() as f64);
    }
}

/// Sweeps this instance's [`RoomChannels`] each second (every half linger when that is
/// shorter) until `stop`.
pub(crate) async fn sweep_loop(ctx: Ctx, stop: CancellationToken) {
    let channels = ctx.channels.clone();
    let period = (channels.linger / 2).clamp(Duration::from_millis(100), Duration::from_secs(1));
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = stop.cancelled() => return,
        }
        let mut in_use: HashSet<Room> = ctx.sockets.keys().into_iter().map(Room::User).collect();
        in_use.extend(ctx.fanout.workspaces().into_iter().map(Room::Workspace));
        channels.sweep(&in_use);
    }
}
