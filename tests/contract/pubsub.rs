//! `PubSub` contract: in-process, Redis, and Redis with this process behind it, plus
//! Redis outage tests on a server the test owns.

use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use secrecy::SecretString;
use shoal::config::RedisTarget;
use shoal::pubsub::fallback::FallbackPubSub;
use shoal::pubsub::memory::MemoryPubSub;
use shoal::pubsub::redis::RedisPubSub;
use shoal::pubsub::{Delivery, PubSub, Subscription};
use shoal::redis_client::RedisClient;

use shoal_testkit::redis_cluster::OwnRedisCluster;

use crate::support::{
    Guard, Memory, OwnRedis, Pair, RedisKind, eventually, random_prefix, redis_clients, within,
};

trait Fixture {
    async fn pair() -> Option<Pair<dyn PubSub>>;
}

impl Fixture for Memory {
    async fn pair() -> Option<Pair<dyn PubSub>> {
        let one: Arc<dyn PubSub> = Arc::new(MemoryPubSub::new());
        Some(Pair {
            a: one.clone(),
            b: one,
            _guard: Guard::default(),
        })
    }
}

impl<R: RedisKind> Fixture for R {
    async fn pair() -> Option<Pair<dyn PubSub>> {
        let (a, b, guard) = R::clients().await?;
        Some(Pair {
            a: Arc::new(RedisPubSub::connect(&a).await.expect("pubsub A")),
            b: Arc::new(RedisPubSub::connect(&b).await.expect("pubsub B")),
            _guard: guard,
        })
    }
}

/// Redis first, this process's own subscribers when a publish fails.
pub(crate) struct Fallback;

impl Fixture for Fallback {
    async fn pair() -> Option<Pair<dyn PubSub>> {
        let (a, b, guard) = redis_clients().await?;
        let wrap =
            |p: RedisPubSub| -> Arc<dyn PubSub> { Arc::new(FallbackPubSub::new(Arc::new(p))) };
        Some(Pair {
            a: wrap(RedisPubSub::connect(&a).await.expect("pubsub A")),
            b: wrap(RedisPubSub::connect(&b).await.expect("pubsub B")),
            _guard: guard,
        })
    }
}

contract_suite!(
    backends: [memory => crate::support::Memory, redis => crate::support::Redis, redis_cluster => crate::support::RedisCluster, fallback => crate::pubsub::Fallback],
    cases: [
        publish_reaches_subscribers_on_every_instance,
        order_is_kept_per_publisher,
        channels_are_independent,
        every_local_subscriber_gets_a_copy_and_drop_is_local,
        check_is_ok,
        a_feed_receives_exactly_its_channels_from_every_instance,
        a_feed_and_a_subscription_of_one_channel_are_independent,
    ]
);

async fn next(sub: &mut Subscription, what: &str) -> Delivery {
    within(what, sub.next())
        .await
        .unwrap_or_else(|| panic!("subscription ended while waiting for {what}"))
}

fn msg(s: &'static str) -> Delivery {
    Delivery::Message(Bytes::from_static(s.as_bytes()))
}

async fn publish_reaches_subscribers_on_every_instance<F: Fixture>() {
    let Some(p) = F::pair().await else { return };
    let mut on_a = p.a.subscribe("ch").await.expect("subscribe on A");
    let mut on_b = p.b.subscribe("ch").await.expect("subscribe on B");
    p.a.publish("ch", Bytes::from_static(b"hello"))
        .await
        .expect("publish");
    assert_eq!(next(&mut on_a, "the message on A").await, msg("hello"));
    assert_eq!(next(&mut on_b, "the message on B").await, msg("hello"));
    p.b.publish("ch", Bytes::from_static(b"back"))
        .await
        .expect("publish on B");
    assert_eq!(next(&mut on_a, "B's message on A").await, msg("back"));
}

async fn order_is_kept_per_publisher<F: Fixture>() {
    let Some(p) = F::pair().await else { return };
    let mut sub = p.b.subscribe("ordered").await.expect("subscribe");
    for i in 0..200u32 {
        p.a.publish("ordered", Bytes::from(i.to_string()))
            .await
            .expect("publish");
    }
    for i in 0..200u32 {
        assert_eq!(
            next(&mut sub, "the next message").await,
            Delivery::Message(Bytes::from(i.to_string()))
        );
    }
}

async fn channels_are_independent<F: Fixture>() {
    let Some(p) = F::pair().await else { return };
    let mut one = p.b.subscribe("one").await.expect("subscribe one");
    p.a.publish("two", Bytes::from_static(b"not for one"))
        .await
        .expect("publish two");
    p.a.publish("nobody-listens", Bytes::from_static(b"x"))
        .await
        .expect("publish");
    p.a.publish("one", Bytes::from_static(b"for one"))
        .await
        .expect("publish one");
    assert_eq!(next(&mut one, "one's message").await, msg("for one"));
}

async fn every_local_subscriber_gets_a_copy_and_drop_is_local<F: Fixture>() {
    let Some(p) = F::pair().await else { return };
    let mut first = p.b.subscribe("ch").await.expect("first");
    let mut second = p.b.subscribe("ch").await.expect("second");
    p.a.publish("ch", Bytes::from_static(b"1"))
        .await
        .expect("publish 1");
    assert_eq!(next(&mut first, "first copy").await, msg("1"));
    assert_eq!(next(&mut second, "second copy").await, msg("1"));
    drop(first);
    p.a.publish("ch", Bytes::from_static(b"2"))
        .await
        .expect("publish 2");
    assert_eq!(next(&mut second, "after the other dropped").await, msg("2"));
    // A new subscription after all were dropped works again.
    drop(second);
    let mut third = p.b.subscribe("ch").await.expect("third");
    p.a.publish("ch", Bytes::from_static(b"3"))
        .await
        .expect("publish 3");
    assert_eq!(next(&mut third, "on a fresh subscription").await, msg("3"));
}

async fn a_feed_receives_exactly_its_channels_from_every_instance<F: Fixture>() {
    let Some(p) = F::pair().await else { return };
    let mut feed = p.b.feed().await.expect("feed on B");
    feed.channels.add("room-1").await.expect("add room-1");
    feed.channels.add("room-2").await.expect("add room-2");
    feed.channels
        .add("room-2")
        .await
        .expect("adding twice is a no-op");
    p.a.publish("room-3", Bytes::from_static(b"not ours"))
        .await
        .expect("publish room-3");
    p.a.publish("room-1", Bytes::from_static(b"1"))
        .await
        .expect("publish room-1");
    p.b.publish("room-2", Bytes::from_static(b"2"))
        .await
        .expect("publish room-2 on B");
    assert_eq!(next(&mut feed.stream, "room-1's message").await, msg("1"));
    assert_eq!(
        next(&mut feed.stream, "room-2's message, once").await,
        msg("2")
    );
    // A removed channel stops arriving; the others go on; a channel can come back.
    feed.channels.remove("room-1");
    feed.channels.add("room-3").await.expect("add room-3");
    p.a.publish("room-1", Bytes::from_static(b"after remove"))
        .await
        .expect("publish room-1");
    p.a.publish("room-3", Bytes::from_static(b"3"))
        .await
        .expect("publish room-3");
    assert_eq!(next(&mut feed.stream, "room-3's message").await, msg("3"));
    feed.channels.add("room-1").await.expect("add room-1 again");
    p.a.publish("room-1", Bytes::from_static(b"back"))
        .await
        .expect("publish room-1");
    assert_eq!(next(&mut feed.stream, "room-1 again").await, msg("back"));
}

async fn a_feed_and_a_subscription_of_one_channel_are_independent<F: Fixture>() {
    let Some(p) = F::pair().await else { return };
    let mut sub = p.b.subscribe("shared").await.expect("subscribe");
    let mut feed = p.b.feed().await.expect("feed");
    feed.channels.add("shared").await.expect("add");
    p.a.publish("shared", Bytes::from_static(b"1"))
        .await
        .expect("publish 1");
    assert_eq!(next(&mut sub, "the subscription's copy").await, msg("1"));
    assert_eq!(next(&mut feed.stream, "the feed's copy").await, msg("1"));
    // The feed letting go of the channel leaves the subscription alone, and the
    // other way round.
    feed.channels.remove("shared");
    p.a.publish("shared", Bytes::from_static(b"2"))
        .await
        .expect("publish 2");
    assert_eq!(next(&mut sub, "after the feed left").await, msg("2"));
    feed.channels.add("shared").await.expect("add again");
    drop(sub);
    p.a.publish("shared", Bytes::from_static(b"3"))
        .await
        .expect("publish 3");
    // "2" may still reach the feed: it can be on its way when the feed lets go of the
    // channel (the contract allows it), and nothing else may.
    let mut got = next(&mut feed.stream, "after the subscription dropped").await;
    if got == msg("2") {
        got = next(&mut feed.stream, "after the subscription dropped").await;
    }
    assert_eq!(got, msg("3"));
}

async fn check_is_ok<F: Fixture>() {
    let Some(p) = F::pair().await else { return };
    p.a.check().await.expect("check");
}

/// Redis only: dropping the last local subscription unsubscribes from Redis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_drop_unsubscribes_eventually() {
    let Some((client, _, _guard)) = redis_clients().await else {
        return;
    };
    let pubsub = RedisPubSub::connect(&client).await.expect("pubsub");
    let channel = pubsub.channel_key("ch");
    let numsub = || {
        let client = client.clone();
        let channel = channel.clone();
        async move {
            let (_, n): (String, u64) = client
                .query(::redis::cmd("PUBSUB").arg("NUMSUB").arg(&channel))
                .await
                .expect("PUBSUB NUMSUB");
            n
        }
    };
    let a = pubsub.subscribe("ch").await.expect("subscribe");
    let b = pubsub.subscribe("ch").await.expect("subscribe again");
    assert_eq!(
        numsub().await,
        1,
        "one Redis subscription per channel and instance"
    );
    drop(a);
    drop(b);
    eventually("the Redis subscription to go away", || async {
        numsub().await == 0
    })
    .await;
}

/// Redis only: a feed channel is one Redis subscription per instance, shared with a
/// plain subscription of the same channel, and goes away with the last of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_feed_channels_unsubscribe_when_the_last_user_goes() {
    let Some((client, _, _guard)) = redis_clients().await else {
        return;
    };
    let pubsub = RedisPubSub::connect(&client).await.expect("pubsub");
    let numsub = |name: &'static str| {
        let client = client.clone();
        let channel = pubsub.channel_key(name);
        async move {
            let (_, n): (String, u64) = client
                .query(::redis::cmd("PUBSUB").arg("NUMSUB").arg(&channel))
                .await
                .expect("PUBSUB NUMSUB");
            n
        }
    };
    let one = pubsub.feed().await.expect("feed one");
    let two = pubsub.feed().await.expect("feed two");
    one.channels.add("room").await.expect("add");
    two.channels.add("room").await.expect("add");
    let plain = pubsub.subscribe("room").await.expect("subscribe");
    one.channels.add("other").await.expect("add other");
    assert_eq!(
        numsub("room").await,
        1,
        "one Redis subscription per instance"
    );
    one.channels.remove("room");
    drop(plain);
    assert_eq!(numsub("room").await, 1, "feed two still has it");
    drop(two);
    eventually("the room's Redis subscription to go away", || async {
        numsub("room").await == 0
    })
    .await;
    assert_eq!(numsub("other").await, 1, "feed one still has its channel");
    drop(one);
    eventually("a dropped feed's channels to go away", || async {
        numsub("other").await == 0
    })
    .await;
}

/// Redis only: the subscription connection survives a Redis restart by itself,
/// reports the outage in `check`, and says `Gap` before delivering again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_subscriptions_survive_a_restart_resp2() {
    survive_restart("").await;
}

/// The same over RESP3.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_subscriptions_survive_a_restart_resp3() {
    survive_restart("?protocol=resp3").await;
}

/// Two "instances" of the Redis pub/sub on `target`, on one fresh prefix: a
/// publisher and a subscriber.
async fn two_instances(target: &RedisTarget) -> (RedisPubSub, RedisPubSub) {
    let prefix = random_prefix();
    let publisher = RedisClient::connect(target, &prefix, None)
        .await
        .expect("client A");
    let subscriber = RedisClient::connect(target, &prefix, None)
        .await
        .expect("client B");
    (
        RedisPubSub::connect(&publisher).await.expect("pubsub A"),
        RedisPubSub::connect(&subscriber).await.expect("pubsub B"),
    )
}

async fn survive_restart(query: &str) {
    let Some(mut server) = OwnRedis::start().await else {
        return;
    };
    let target = RedisTarget::Url(SecretString::from(format!("{}{query}", server.url())));
    let (a, b) = two_instances(&target).await;
    let mut sub = b.subscribe("events").await.expect("subscribe");
    let mut feed = b.feed().await.expect("feed");
    feed.channels.add("room").await.expect("add room");
    a.publish("events", Bytes::from_static(b"before"))
        .await
        .expect("publish before");
    assert_eq!(
        next(&mut sub, "the message before the outage").await,
        msg("before")
    );
    b.check().await.expect("ready before the outage");

    server.kill();
    eventually("check() to report the outage", || async {
        b.check().await.is_err()
    })
    .await;
    // A channel added during the outage is subscribed when Redis is back.
    assert!(
        feed.channels.add("added-meanwhile").await.is_err(),
        "adding during the outage says so"
    );
    assert!(
        a.publish("events", Bytes::from_static(b"lost"))
            .await
            .is_err(),
        "publishing during the outage fails instead of hanging"
    );

    server
        .restart()
        .await
        .expect("restart redis-server on the same port");
    assert_eq!(
        next(&mut sub, "the gap after the restart").await,
        Delivery::Gap
    );
    b.check().await.expect("ready again once resubscribed");
    // The command connection reconnects on its own; the first command after the
    // restart may still see the dead connection.
    eventually("publishing to work again", || async {
        a.publish("events", Bytes::from_static(b"after"))
            .await
            .is_ok()
    })
    .await;
    assert_eq!(
        next(&mut sub, "the message after the restart").await,
        msg("after")
    );
    assert_eq!(
        next(&mut feed.stream, "the feed's gap after the restart").await,
        Delivery::Gap
    );
    for room in ["room", "added-meanwhile"] {
        a.publish(room, Bytes::from_static(b"back"))
            .await
            .expect("publish to a feed channel");
        assert_eq!(
            next(&mut feed.stream, "a feed channel after the restart").await,
            msg("back"),
            "{room}"
        );
    }
    // A subscription made after the restart works too.
    let mut late = b.subscribe("late").await.expect("subscribe after restart");
    a.publish("late", Bytes::from_static(b"x"))
        .await
        .expect("publish late");
    assert_eq!(
        next(&mut late, "the late subscription's message").await,
        msg("x")
    );
}

/// Redis Cluster: pub/sub is sharded. The channels of a feed live on the masters of
/// their own slots (spread over all three, none as a plain channel), a publish reaches
/// the one instance subscribed, and when the master holding a channel restarts the
/// feed reports the outage, says `Gap` and receives that channel again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster_shards_channels_and_survives_a_master_restart() {
    let Some(mut cluster) = OwnRedisCluster::start().await else {
        return;
    };
    let target = RedisTarget::Cluster {
        nodes: cluster.urls().into_iter().map(SecretString::from).collect(),
    };
    let (a, b) = two_instances(&target).await;
    let mut feed = b.feed().await.expect("feed");
    const ROOMS: usize = 30;
    for i in 0..ROOMS {
        feed.channels
            .add(&format!("room{i}"))
            .await
            .expect("add a room");
    }

    // Where each node's subscriptions are: sharded channels only.
    let node_channels = |url: String, kind: &'static str| async move {
        let client = ::redis::Client::open(url).expect("node url");
        let mut conn = client
            .get_multiplexed_async_connection()
            .await
            .expect("connect to a node");
        ::redis::cmd("PUBSUB")
            .arg(kind)
            .query_async::<Vec<String>>(&mut conn)
            .await
            .expect("PUBSUB on a node")
    };
    let mut total = 0;
    let mut owner = None;
    for (i, url) in cluster.urls().into_iter().enumerate() {
        let sharded = node_channels(url.clone(), "SHARDCHANNELS").await;
        assert!(
            !sharded.is_empty(),
            "master {i} holds none of {ROOMS} channels: {sharded:?}"
        );
        assert!(
            node_channels(url, "CHANNELS").await.is_empty(),
            "master {i} has plain (cluster-wide) channels"
        );
        if sharded.contains(&b.channel_key("room0")) {
            owner = Some(i);
        }
        total += sharded.len();
    }
    assert_eq!(total, ROOMS, "each channel on exactly one master");
    let owner = owner.expect("a master holds room0");
    assert_eq!(
        a.publish_counted("room0", b"hello")
            .await
            .expect("SPUBLISH"),
        1,
        "the one subscribed instance is counted (cache acknowledgements rely on it)"
    );
    assert_eq!(
        next(&mut feed.stream, "room0's message").await,
        msg("hello")
    );

    cluster.nodes[owner].kill();
    eventually("check() to report the lost master", || async {
        b.check().await.is_err()
    })
    .await;
    cluster.nodes[owner]
        .restart()
        .await
        .expect("restart the master on its port");
    assert_eq!(
        next(&mut feed.stream, "the gap after the restart").await,
        Delivery::Gap
    );
    b.check().await.expect("ready again once resubscribed");
    // The publisher's cluster connection reconnects on its own; a publish that
    // reached nobody (0) or failed is tried again.
    eventually(
        "a publish on room0 to reach the subscriber again",
        || async { matches!(a.publish_counted("room0", b"after").await, Ok(1)) },
    )
    .await;
    assert_eq!(
        next(&mut feed.stream, "room0's message after the restart").await,
        msg("after")
    );
}

/// Redis only: through Sentinel, commands and subscriptions reach the master it names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_through_sentinel() {
    let Some(master) = OwnRedis::start().await else {
        return;
    };
    let Some(sentinel) = OwnRedis::start_sentinel(master.port).await else {
        return;
    };
    let target = RedisTarget::Sentinel {
        sentinels: vec![format!("127.0.0.1:{}", sentinel.port)],
        master: "mymaster".into(),
        url: None,
    };
    let prefix = random_prefix();
    let a = RedisClient::connect(&target, &prefix, None)
        .await
        .expect("client A via sentinel");
    let b = RedisClient::connect(&target, &prefix, None)
        .await
        .expect("client B via sentinel");
    let port: String = a
        .query(::redis::cmd("CONFIG").arg("GET").arg("port"))
        .await
        .map(|(_, port): (String, String)| port)
        .expect("CONFIG GET port");
    assert_eq!(port, master.port.to_string(), "connected to the master");
    let pubsub_a = RedisPubSub::connect(&a).await.expect("pubsub A");
    let pubsub_b = RedisPubSub::connect(&b).await.expect("pubsub B");
    let mut sub = pubsub_b.subscribe("ch").await.expect("subscribe");
    pubsub_a
        .publish("ch", Bytes::from_static(b"via sentinel"))
        .await
        .expect("publish");
    assert_eq!(
        next(&mut sub, "the message via sentinel").await,
        msg("via sentinel")
    );
}
