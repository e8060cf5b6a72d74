//! The ws transport module is responsible for handling websocket connections
//! The only public function is [`new_req`] which is used to upgrade a http request to a websocket connection
//!
//! Other functions are used internally to handle the websocket connection through tasks and channels
//! and to handle upgrade from polling to ws

use std::{
    future::{Future, poll_fn},
    pin::{Pin, pin},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll, Wake, Waker},
    time::Duration,
};

use futures_util::{Sink, SinkExt, Stream, StreamExt, task::AtomicWaker};
use tokio::{sync::MutexGuard, time::Instant};
use http::{HeaderValue, Request, Response, StatusCode, request::Parts};
use smallvec::smallvec;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::{
    WebSocketStream,
    tungstenite::{
        self, Message,
        handshake::derive_accept_key,
        protocol::{Role, WebSocketConfig},
    },
};
use tokio_util::future::FutureExt as _;

use engineioxide_core::{Packet, ProtocolVersion, Sid, Str, TransportType};

use crate::{
    DisconnectReason, Socket, body::ResponseBody, config::EngineIoConfig, engine::EngineIo,
    errors::Error, handler::EngineIoHandler, socket::InternalRx, transport::make_open_packet,
};

/// Create a response for websocket upgrade
fn ws_response<B>(ws_key: &HeaderValue) -> Response<ResponseBody<B>> {
    let derived = derive_accept_key(ws_key.as_bytes());
    let sec = derived.parse::<HeaderValue>().unwrap();
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(http::header::UPGRADE, HeaderValue::from_static("websocket"))
        .header(
            http::header::CONNECTION,
            HeaderValue::from_static("Upgrade"),
        )
        .header(http::header::SEC_WEBSOCKET_ACCEPT, sec)
        .body(ResponseBody::empty_response())
        .unwrap() // we are only using constants
}

/// Upgrade a websocket request to create a websocket connection.
///
/// If a sid is provided in the query it means that is is upgraded from an existing HTTP polling request.
/// In this case the http polling request is closed and the SID is kept for the websocket
pub fn new_req<R: Send + 'static, B, H: EngineIoHandler>(
    engine: Arc<EngineIo<H>>,
    protocol: ProtocolVersion,
    sid: Option<Sid>,
    req: Request<R>,
) -> Result<Response<ResponseBody<B>>, Error> {
    let (parts, body) = req.into_parts();

    let ws_key = parts
        .headers
        .get("Sec-WebSocket-Key")
        .ok_or(Error::InvalidWebSocketKey)?
        .clone();

    let upgrade = hyper::upgrade::on(Request::from_parts(parts.clone(), body));
    // Patched (Shoal): the upgrade and the handshake run boxed. What an async block
    // captures stays in its task for the task's whole life, and the request head alone
    // is ~0.2 kB; boxed, it is freed when the handshake ends.
    let handshake = {
        let engine = engine.clone();
        Box::pin(async move {
            let conn = match upgrade.await {
                Ok(conn) => hyper_util::rt::TokioIo::new(conn),
                Err(_e) => {
                    #[cfg(feature = "tracing")]
                    tracing::debug!("ws upgrade error: {}", _e);
                    return Ok(None);
                }
            };
            open_connection(&engine, conn, protocol, sid, parts)
                .await
                .map(Some)
        })
    };

    tokio::spawn(async move {
        let res = match handshake.await {
            Ok(Some((socket, ws, heartbeat))) => {
                let end = Connection::new(&engine, &socket, heartbeat).run(ws).await;
                on_end(&engine, &socket, end);
                Ok(())
            }
            Ok(None) => return,
            Err(e) => Err(e),
        };

        match res {
            Ok(_) => {
                #[cfg(feature = "tracing")]
                tracing::debug!(?sid, "ws closed")
            }
            Err(Error::MultipleWebsocketRequests) => {}
            Err(_e) => {
                #[cfg(feature = "tracing")]
                tracing::debug!(?sid, "ws closed with error: {_e}");
                if let Some(sid) = sid {
                    engine.close_session(sid, DisconnectReason::TransportError);
                }
            }
        }
    });

    Ok(ws_response(&ws_key))
}

/// Handle a websocket connection upgrade
///
/// Sends an open packet if it is not an upgrade from a polling request
///
/// Read packets from the websocket and handle them, it will block until the connection is closed
///
/// Patched (Shoal): the connection runs as this one task — reading, writing and, for a
/// connection opened as a WebSocket, the heartbeat — instead of three tasks (a reader,
/// a writer and a heartbeat job, ~7.4 kB of task state per idle connection), and the
/// handshake runs boxed, so its state is freed when it ends instead of sizing the
/// connection's task for its whole life.
pub async fn on_init<H: EngineIoHandler, S>(
    engine: Arc<EngineIo<H>>,
    conn: S,
    protocol: ProtocolVersion,
    sid: Option<Sid>,
    req_data: Parts,
) -> Result<(), Error>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (socket, ws, heartbeat) =
        Box::pin(open_connection(&engine, conn, protocol, sid, req_data)).await?;
    let end = Connection::new(&engine, &socket, heartbeat).run(ws).await;
    on_end(&engine, &socket, end);
    Ok(())
}

/// Closes the session after its connection ended, unless it was closed on this side.
fn on_end<H: EngineIoHandler>(
    engine: &EngineIo<H>,
    socket: &Socket<H::Data>,
    end: Result<End, Error>,
) {
    match end {
        Err(ref e) => {
            let reason =
                Option::<DisconnectReason>::from(e).unwrap_or(DisconnectReason::TransportError);

            #[cfg(feature = "tracing")]
            tracing::debug!("error when handling packet: {:?}", e);
            engine.close_session(socket.id, reason);
        }
        Ok(End::Closed) => {
            #[cfg(feature = "tracing")]
            tracing::debug!(sid = %socket.id, "ws transport was closed");
            engine.close_session(socket.id, DisconnectReason::TransportClose);
        }
        Ok(End::Cancelled) => {
            #[cfg(feature = "tracing")]
            tracing::debug!(sid = %socket.id, "socket is closing");
        }
    }
}

/// The handshake: a new session with its open packet, or the upgrade of a polling one.
/// Returns the heartbeat the connection must run itself, if any.
#[cfg_attr(
    feature = "tracing",
    tracing::instrument(level = "trace", name = "init_websocket", skip(engine, conn, req_data))
)]
async fn open_connection<H: EngineIoHandler, S>(
    engine: &Arc<EngineIo<H>>,
    conn: S,
    protocol: ProtocolVersion,
    sid: Option<Sid>,
    req_data: Parts,
) -> Result<(Arc<Socket<H::Data>>, WebSocketStream<S>, Option<Heartbeat>), Error>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let ws_config = WebSocketConfig::default()
        .read_buffer_size(engine.config.ws_read_buffer_size)
        .max_message_size(Some(engine.config.ws_max_message_size))
        .max_frame_size(Some(engine.config.ws_max_frame_size));

    let ws_init = move || WebSocketStream::from_raw_socket(conn, Role::Server, Some(ws_config));
    if let Some(sid) = sid {
        match engine.get_socket(sid) {
            None => Err(Error::UnknownSessionID(sid)),
            Some(socket) if socket.is_ws() => Err(Error::MultipleWebsocketRequests),
            Some(socket) => {
                let mut ws = ws_init().await;

                let upgrade_fut = upgrade_handshake::<H, S>(&socket, &mut ws);
                match tokio::time::timeout(engine.config.upgrade_timeout, upgrade_fut)
                    .with_cancellation_token(&socket.cancellation_token)
                    .await
                {
                    Some(Ok(res)) => res?,
                    Some(Err(_)) => {
                        #[cfg(feature = "tracing")]
                        tracing::debug!(?sid, "ws upgrade timed out, closing session");
                        engine.close_session(socket.id, DisconnectReason::TransportError);
                        return Err(Error::Upgrade);
                    }
                    None => {
                        #[cfg(feature = "tracing")]
                        tracing::debug!(?sid, "socket is being closed");
                        return Err(Error::Upgrade);
                    }
                }
                // The polling session's heartbeat job keeps running.
                Ok((socket, ws, None))
            }
        }
    } else {
        let socket = engine.create_session(protocol, TransportType::Websocket, req_data, false);

        #[cfg(feature = "tracing")]
        tracing::debug!("new websocket connection");

        let mut ws = ws_init().await;
        init_handshake(socket.id, &mut ws, &engine.config).await?;
        let (interval, timeout) = (engine.config.ping_interval, engine.config.ping_timeout);
        if socket.protocol == ProtocolVersion::V4 {
            Ok((socket, ws, Some(Heartbeat::new(interval, timeout))))
        } else {
            socket.clone().spawn_heartbeat(interval, timeout);
            Ok((socket, ws, None))
        }
    }
}

/// How a connection ended.
enum End {
    /// The client closed it (close packet, close frame or end of stream).
    Closed,
    /// The session was closed on this side.
    Cancelled,
}

/// The server-initiated heartbeat of protocol v4: a ping every `interval`, answered by a
/// pong within `timeout`.
struct Heartbeat {
    interval: Duration,
    timeout: Duration,
    /// When the last ping was queued, while its pong is awaited.
    awaiting_since: Option<Instant>,
    /// Set by a pong: when the next ping is due.
    next_ping: Option<Instant>,
}

impl Heartbeat {
    fn new(interval: Duration, timeout: Duration) -> Self {
        Self {
            interval,
            timeout,
            awaiting_since: None,
            next_ping: None,
        }
    }

    fn pong(&mut self) {
        // Like the heartbeat job: pings stay `interval` apart, and a pong that was not
        // asked for (some clients send one first) changes nothing.
        if let Some(pinged) = self.awaiting_since.take() {
            self.next_ping = Some(pinged + self.interval);
        }
    }
}

/// The writing half of a connection: the packets of one queued [`PacketBuf`] being
/// written, and whether the WebSocket has unflushed frames.
#[derive(Default)]
struct Writer {
    out: Option<smallvec::IntoIter<[Packet; 2]>>,
    unflushed: bool,
}

impl Writer {
    /// Writes queued packets while the WebSocket accepts them (buffered ones first, then
    /// the latest volatile one), and flushes once the queue is drained.
    fn poll_write<D, S>(
        &mut self,
        cx: &mut Context<'_>,
        socket: &Socket<D>,
        rx: &mut InternalRx,
        ws: &mut WebSocketStream<S>,
    ) where
        D: Default + Send + Sync + 'static,
        S: AsyncRead + AsyncWrite + Unpin,
    {
        loop {
            let out = match self.out.as_mut() {
                Some(out) if out.len() > 0 => out,
                _ => {
                    self.out = None;
                    match rx.buffered_rx.poll_recv(cx) {
                        Poll::Ready(Some(packets)) => self.out = Some((*packets).into_iter()),
                        // Closed: the session is closing.
                        Poll::Ready(None) => break,
                        Poll::Pending => match socket.poll_volatile(cx) {
                            Some(packets) => self.out = Some(packets.into_iter()),
                            None => break,
                        },
                    }
                    continue;
                }
            };
            // On an error the frame below fails too; the reading half sees the broken
            // connection.
            if Pin::new(&mut *ws).poll_ready(cx).is_pending() {
                break;
            }
            if let Some(msg) = out.next().and_then(|p| to_message(socket.protocol, p)) {
                if let Err(_e) = Pin::new(&mut *ws).start_send(msg) {
                    #[cfg(feature = "tracing")]
                    tracing::debug!("[sid={}] error sending packet: {}", socket.id, _e);
                }
                self.unflushed = true;
            }
        }
        if self.unflushed && Pin::new(&mut *ws).poll_flush(cx).is_ready() {
            self.unflushed = false;
        }
    }

    /// Writes what is still queued and flushes, when the connection ends.
    async fn finish<S>(
        &mut self,
        protocol: ProtocolVersion,
        rx: &mut InternalRx,
        ws: &mut WebSocketStream<S>,
    ) where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        loop {
            let packet = match self.out.as_mut().and_then(Iterator::next) {
                Some(packet) => packet,
                None => match rx.buffered_rx.try_recv() {
                    Ok(packets) => {
                        self.out = Some((*packets).into_iter());
                        continue;
                    }
                    Err(_) => break,
                },
            };
            if let Some(msg) = to_message(protocol, packet)
                && ws.feed(msg).await.is_err()
            {
                return;
            }
        }
        ws.flush().await.ok();
    }
}

/// The WebSocket frame of a packet; `None` for packets that are not sent.
fn to_message(protocol: ProtocolVersion, packet: Packet) -> Option<Message> {
    match packet {
        Packet::Binary(bin) | Packet::BinaryV3(bin) => {
            if protocol == ProtocolVersion::V3 {
                // v3 protocol requires packet type as the first byte.
                // This requires a new buffer. This is OK as it is only for the V3 protocol.
                let mut buff = Vec::with_capacity(bin.len() + 1);
                buff.push(0x04);
                buff.extend(bin);
                Some(Message::Binary(buff.into()))
            } else {
                Some(Message::Binary(bin))
            }
        }
        // A Noop Packet maybe sent by the server to upgrade from a polling connection
        // In the case that the packet was not poll in time it will remain in the buffer and therefore
        // it should be discarded here
        Packet::Noop => None,
        packet => String::try_from(packet)
            .ok()
            .map(|packet| Message::Text(packet.into())),
    }
}

/// The waker the reading side polls with: it records that the reading side was woken
/// (the socket became readable, or the WebSocket wants to be polled again) before it
/// wakes the connection's task.
struct ReadWaker {
    woken: AtomicBool,
    task: AtomicWaker,
}

impl Default for ReadWaker {
    fn default() -> Self {
        Self {
            // The first poll reads.
            woken: AtomicBool::new(true),
            task: AtomicWaker::new(),
        }
    }
}

impl Wake for ReadWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

/// One WebSocket connection, driven by [`Connection::run`] in a single future.
struct Connection<'a, H: EngineIoHandler> {
    engine: &'a Arc<EngineIo<H>>,
    socket: &'a Arc<Socket<H::Data>>,
    heartbeat: Option<Heartbeat>,
}

impl<'a, H: EngineIoHandler> Connection<'a, H> {
    fn new(
        engine: &'a Arc<EngineIo<H>>,
        socket: &'a Arc<Socket<H::Data>>,
        heartbeat: Option<Heartbeat>,
    ) -> Self {
        Self {
            engine,
            socket,
            heartbeat,
        }
    }

    /// Reads client frames and hands them to the handler, writes the socket's queued
    /// packets (flushing once the queue is drained), and runs the heartbeat, until the
    /// client or this side closes the connection. Then writes what is still queued (a
    /// close packet, typically) and closes the WebSocket.
    async fn run<S>(mut self, mut ws: WebSocketStream<S>) -> Result<End, Error>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let socket = self.socket;
        let mut cancelled = pin!(socket.cancellation_token.cancelled());
        // A polling request that was in progress during the upgrade may still hold the lock.
        let mut lock = pin!(socket.internal_rx.lock());
        let mut rx: Option<MutexGuard<'_, InternalRx>> = None;
        let mut writer = Writer::default();
        let reader = Arc::new(ReadWaker::default());
        let read_waker = Waker::from(reader.clone());
        // Polled only when this connection runs its heartbeat.
        let mut ticker = pin!(tokio::time::sleep(
            self.heartbeat.as_ref().map_or(Duration::MAX, |h| h.interval)
        ));

        let end = poll_fn(|cx| {
            if rx.is_none()
                && let Poll::Ready(guard) = lock.as_mut().poll(cx)
            {
                rx = Some(guard);
            }
            // Reading first: what the client sent before a close on this side is handled.
            // Only when the reading side was woken: most wake-ups are packets to write, and
            // an attempt to read costs a system call.
            reader.task.register(cx.waker());
            if reader.woken.swap(false, Ordering::Acquire) {
                let mut read_cx = Context::from_waker(&read_waker);
                loop {
                    match Pin::new(&mut ws).poll_next(&mut read_cx) {
                        Poll::Ready(Some(Ok(msg))) => {
                            if let Some(end) = self.on_message(msg)? {
                                return Poll::Ready(Ok(end));
                            }
                        }
                        Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(e.into())),
                        Poll::Ready(None) => return Poll::Ready(Ok(End::Closed)),
                        // `read_waker` is registered: it marks the reading side woken.
                        Poll::Pending => break,
                    }
                }
            }
            if let Some(heartbeat) = self.heartbeat.as_mut() {
                if let Some(at) = heartbeat.next_ping.take() {
                    ticker.as_mut().reset(at);
                }
                while ticker.as_mut().poll(cx).is_ready() {
                    let now = Instant::now();
                    if heartbeat.awaiting_since.is_some() {
                        return Poll::Ready(Err(Error::HeartbeatTimeout));
                    }
                    #[cfg(feature = "tracing")]
                    tracing::trace!(sid = ?socket.id, "emitting ping");
                    socket
                        .internal_tx
                        .try_send(Box::new(smallvec![Packet::Ping]))
                        .map_err(|_| Error::HeartbeatTimeout)?;
                    heartbeat.awaiting_since = Some(now);
                    ticker.as_mut().reset(now + heartbeat.timeout);
                }
            }
            if let Some(rx) = rx.as_mut() {
                writer.poll_write(cx, socket, rx, &mut ws);
            }
            // Checked last: packets queued before the close are written by `finish`.
            if cancelled.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Ok(End::Cancelled));
            }
            Poll::Pending
        })
        .await;

        #[cfg(feature = "tracing")]
        tracing::trace!(sid = %socket.id, "ws closing");
        let closing = async {
            if let Some(rx) = rx.as_mut() {
                writer.finish(socket.protocol, rx, &mut ws).await;
            }
            ws.close(None).await.ok();
        };
        // A client that stopped reading must not keep this task, and its socket, forever.
        // Boxed: the task would otherwise be sized for this one-off state all its life.
        Box::pin(tokio::time::timeout(
            self.engine.config.ping_timeout,
            closing,
        ))
        .await
        .ok();
        end
    }

    /// Handles one client frame; `Some` when it ends the connection.
    fn on_message(&mut self, msg: Message) -> Result<Option<End>, Error> {
        let (engine, socket) = (self.engine, self.socket);
        match msg {
            Message::Text(msg) => match Packet::parse(socket.protocol, ws_bytes_to_str(msg))? {
                Packet::Close => {
                    #[cfg(feature = "tracing")]
                    tracing::debug!("[sid={}] closing session", socket.id);
                    return Ok(Some(End::Closed));
                }
                Packet::Pong | Packet::Ping => match self.heartbeat.as_mut() {
                    Some(heartbeat) => heartbeat.pong(),
                    // A stored permit means that the client is already known to be alive.
                    None => socket.heartbeat.notify_one(),
                },
                Packet::Message(msg) => engine.handler.on_message(msg, socket.clone()),
                p => return Err(Error::BadPacket(p)),
            },
            Message::Binary(mut data) => {
                if socket.protocol == ProtocolVersion::V3 && !data.is_empty() {
                    // The first byte is the message type, which we don't need.
                    data = data.split_off(1);
                }
                engine.handler.on_binary(data, socket.clone());
            }
            Message::Close(_) => {
                #[cfg(feature = "tracing")]
                tracing::debug!("websocket closed, closing session");
                return Ok(Some(End::Closed));
            }
            _ => {
                #[cfg(feature = "tracing")]
                tracing::debug!(sid = ?socket.id, "unexpected ws message");
            }
        }
        Ok(None)
    }
}
/// Send a Engine.IO [`OpenPacket`] to initiate a websocket connection
async fn init_handshake<S>(
    sid: Sid,
    ws: &mut WebSocketStream<S>,
    config: &EngineIoConfig,
) -> Result<(), Error>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let packet = Packet::Open(make_open_packet(TransportType::Websocket, sid, config));
    let packet: String = packet.into();
    ws.send(Message::Text(packet.into())).await?;
    Ok(())
}

/// Upgrade a session from a polling request to a websocket request.
///
/// Before upgrading the session the server should send a NOOP packet to any pending polling request.
///
/// ## Handshake :
/// ```text
/// CLIENT                                                 SERVER
///│                                                      │
///│   GET /engine.io/?EIO=4&transport=websocket&sid=...  │
///│ ───────────────────────────────────────────────────► │
///│  ◄─────────────────────────────────────────────────┘ │
///│            HTTP 101 (WebSocket handshake)            │
///│                                                      │
///│            -----  WebSocket frames -----             │
///│  ─────────────────────────────────────────────────►  │
///│                         2probe                       │ (ping packet)
///│  ◄─────────────────────────────────────────────────  │
///│                         3probe                       │ (pong packet)
///│  ─────────────────────────────────────────────────►  │
///│                         5                            │ (upgrade packet)
///│                                                      │
///│            -----  WebSocket frames -----             │
/// ```
#[cfg_attr(
    feature = "tracing",
    tracing::instrument(level = "trace", skip(socket, ws))
)]
async fn upgrade_handshake<H: EngineIoHandler, S>(
    socket: &Arc<Socket<H::Data>>,
    ws: &mut WebSocketStream<S>,
) -> Result<(), Error>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    #[cfg(feature = "tracing")]
    tracing::debug!("starting websocket connection upgrade");

    // The socket is upgrading, from now on all polling
    // request will return a `Packet::Noop`
    socket.start_upgrade();

    // We send a last Noop request to close a potential waiting polling request.
    socket
        .internal_tx
        .send(Box::new(smallvec![Packet::Noop]))
        .await
        .map_err(|_| Error::Upgrade)?;

    // wait for any current polling connection to finish by waiting for the socket to be unlocked
    // All other polling connection will be immediately closed with a NOOP packet.
    let _lock = socket.internal_rx.lock().await;

    // Fetch the next packet from the ws stream, it should be a PingUpgrade packet
    let msg = match ws.next().await {
        Some(Ok(Message::Text(d))) => d,
        _ => Err(Error::Upgrade)?,
    };
    match Packet::parse(socket.protocol, ws_bytes_to_str(msg))? {
        Packet::PingUpgrade => {
            #[cfg(feature = "tracing")]
            tracing::debug!("received first ping upgrade");
            // Respond with a PongUpgrade packet
            ws.send(Message::Text(String::from(Packet::PongUpgrade).into()))
                .await?;
        }
        p => Err(Error::BadPacket(p))?,
    };

    // Fetch the next packet from the ws stream, it should be an Upgrade packet
    let msg = match ws.next().await {
        Some(Ok(Message::Text(d))) => d,
        Some(Ok(Message::Close(_))) => {
            #[cfg(feature = "tracing")]
            tracing::debug!("ws stream closed before upgrade");
            Err(Error::Upgrade)?
        }
        _ => {
            #[cfg(feature = "tracing")]
            tracing::debug!("unexpected ws message before upgrade");
            Err(Error::Upgrade)?
        }
    };
    match Packet::parse(socket.protocol, ws_bytes_to_str(msg))? {
        Packet::Upgrade => {
            #[cfg(feature = "tracing")]
            tracing::debug!("ws upgraded successfully")
        }
        p => Err(Error::BadPacket(p))?,
    };

    socket.upgrade_to_websocket();
    Ok(())
}

fn ws_bytes_to_str(bytes: tungstenite::Utf8Bytes) -> Str {
    // SAFETY: the bytes are guaranteed to be valid UTF-8 by the tungstenite parser
    unsafe { Str::from_bytes_unchecked(bytes.into()) }
}
