//! One lean Socket.IO connection over a WebSocket (see [`crate::proto`] for why it
//! is hand-written): connect, handshake, emit with ack ids, receive packets.

use crate::proto::{self, Eio, Sio};
use anyhow::{Context, Result, anyhow, bail};
use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

/// A loopback server: where to connect and what to call it.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    /// `http://127.0.0.1:5201` (as printed in the output).
    pub(crate) origin: String,
    pub(crate) host: String,
    pub(crate) addr: SocketAddr,
}

impl Target {
    /// Accepts only `http://127.0.0.1[:port]` and `http://localhost[:port]`: the load
    /// loops of this tool never leave the machine.
    pub(crate) fn parse(raw: &str) -> Result<Self> {
        let url = url::Url::parse(raw).with_context(|| format!("not a URL: {raw}"))?;
        if url.scheme() != "http" {
            bail!("only http:// URLs are supported: {raw}");
        }
        let host = url.host_str().unwrap_or_default().to_owned();
        let ip: IpAddr = match host.as_str() {
            "127.0.0.1" | "localhost" => IpAddr::from([127, 0, 0, 1]),
            other => bail!("refusing non-loopback target {other:?}: only 127.0.0.1 and localhost"),
        };
        let port = url.port_or_known_default().unwrap_or(80);
        Ok(Self {
            origin: format!("http://{host}:{port}"),
            host: format!("{host}:{port}"),
            addr: SocketAddr::new(ip, port),
        })
    }

    async fn tcp(&self, bind: Option<IpAddr>) -> Result<TcpStream> {
        let socket = TcpSocket::new_v4()?;
        if let Some(ip) = bind {
            socket
                .bind(SocketAddr::new(ip, 0))
                .with_context(|| format!("bind to {ip}"))?;
        }
        let stream = socket.connect(self.addr).await?;
        stream.set_nodelay(true)?;
        Ok(stream)
    }

    /// `X-Instance-Id` of `GET /health/live` (a bare HTTP/1.1 request: no client
    /// library needed for one header).
    pub(crate) async fn instance_id(&self) -> Result<String> {
        let fetch = async {
            let mut stream = self.tcp(None).await?;
            let req = format!(
                "GET /health/live HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
                self.host
            );
            stream.write_all(req.as_bytes()).await?;
            let mut buf = Vec::new();
            stream.take(64 * 1024).read_to_end(&mut buf).await?;
            let text = String::from_utf8_lossy(&buf);
            let head = text.split("\r\n\r\n").next().unwrap_or_default();
            head.lines()
                .skip(1)
                .filter_map(|l| l.split_once(':'))
                .find(|(k, _)| k.trim().eq_ignore_ascii_case("x-instance-id"))
                .map(|(_, v)| v.trim().to_owned())
                .ok_or_else(|| {
                    anyhow!("no X-Instance-Id in: {}", head.lines().next().unwrap_or(""))
                })
        };
        tokio::time::timeout(Duration::from_secs(5), fetch)
            .await
            .map_err(|_| anyhow!("timed out"))?
    }
}

/// An event as it arrived: the frame itself (shared with the WebSocket's read
/// buffer, not copied) and where its JSON array starts.
pub(crate) struct EventFrame {
    frame: Utf8Bytes,
    start: usize,
}

impl EventFrame {
    /// The JSON array `["name", args…]`.
    pub(crate) fn json(&self) -> &str {
        &self.frame.as_str()[self.start..]
    }
}

/// What a connection hands to its owner.
pub(crate) enum Incoming {
    /// An event.
    Event(EventFrame),
    /// An ack for one of our ack ids: the JSON argument array.
    Ack(u64, String),
    /// The server closed the connection (or the Socket.IO session).
    Closed,
}

pub(crate) struct Conn {
    ws: WebSocketStream<TcpStream>,
    next_ack: u64,
}

fn ws_config() -> WebSocketConfig {
    // Small buffers: thousands of these live in one process. Server frames here are
    // a few hundred bytes; a bigger one still works (the buffer grows).
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
        .max_message_size(Some(1 << 20))
        .max_frame_size(Some(1 << 20))
}

impl Conn {
    /// Opens the WebSocket transport and completes the Socket.IO handshake with
    /// `auth: {token}`. A refused handshake is an error carrying the server's reason.
    pub(crate) async fn connect(
        target: &Target,
        token: &str,
        bind: Option<IpAddr>,
    ) -> Result<Self> {
        let stream = target.tcp(bind).await.context("tcp connect")?;
        let url = format!("ws://{}/socket.io/?EIO=4&transport=websocket", target.host);
        let (ws, _resp) =
            tokio_tungstenite::client_async_with_config(url.as_str(), stream, Some(ws_config()))
                .await
                .context("websocket upgrade")?;
        let mut conn = Self { ws, next_ack: 0 };
        // Engine.IO open, then Socket.IO connect with auth.
        loop {
            let frame = conn
                .next_text()
                .await?
                .ok_or_else(|| anyhow!("closed before open"))?;
            match proto::decode_eio(&frame)? {
                Eio::Open(_) => break,
                Eio::Ping => conn.send_text(proto::PONG.to_owned()).await?,
                other => bail!("expected the Engine.IO open packet, got {other:?}"),
            }
        }
        let connect = proto::encode_connect(&serde_json::json!({ "token": token }))?;
        conn.send_text(connect).await?;
        loop {
            let frame = conn
                .next_text()
                .await?
                .ok_or_else(|| anyhow!("closed during connect"))?;
            match proto::decode_eio(&frame)? {
                Eio::Ping => conn.send_text(proto::PONG.to_owned()).await?,
                Eio::Message(p) => match proto::decode_sio(p)? {
                    Sio::Connect(_) => return Ok(conn),
                    Sio::ConnectError(json) => {
                        let reason = serde_json::from_str::<serde_json::Value>(json)
                            .ok()
                            .and_then(|v| {
                                v.get("message").and_then(|m| m.as_str()).map(str::to_owned)
                            })
                            .unwrap_or_else(|| json.to_owned());
                        bail!("connect_error: {reason}");
                    }
                    // Events before the connect ack are not expected; skip them.
                    _ => {}
                },
                Eio::Close => bail!("closed during connect"),
                _ => {}
            }
        }
    }

    /// Emits `name` with `data` and an ack id of this connection; returns the id.
    pub(crate) async fn emit_with_ack(&mut self, name: &str, data: &impl Serialize) -> Result<u64> {
        let id = self.next_ack;
        self.next_ack += 1;
        self.send_text(proto::encode_event(Some(id), name, data)?)
            .await?;
        Ok(id)
    }

    /// Emits and waits (bounded) for the ack; events arriving meanwhile are dropped.
    pub(crate) async fn call(
        &mut self,
        name: &str,
        data: &impl Serialize,
        timeout: Duration,
    ) -> Result<serde_json::Value> {
        let id = self.emit_with_ack(name, data).await?;
        let wait = async {
            loop {
                match self.recv().await? {
                    Incoming::Ack(got, json) if got == id => {
                        let mut args: Vec<serde_json::Value> = serde_json::from_str(&json)?;
                        return Ok(if args.is_empty() {
                            serde_json::Value::Null
                        } else {
                            args.swap_remove(0)
                        });
                    }
                    Incoming::Closed => bail!("closed while waiting for the {name} ack"),
                    _ => {}
                }
            }
        };
        tokio::time::timeout(timeout, wait)
            .await
            .map_err(|_| anyhow!("{name}: no ack within {timeout:?}"))?
    }

    /// The next event or ack. Pings are answered here; noops are skipped.
    /// Cancel-safe (it only awaits the stream, or a pong write that completes).
    pub(crate) async fn recv(&mut self) -> Result<Incoming> {
        loop {
            let Some(frame) = self.next_text().await? else {
                return Ok(Incoming::Closed);
            };
            match proto::decode_eio(&frame)? {
                Eio::Ping => self.send_text(proto::PONG.to_owned()).await?,
                Eio::Close => return Ok(Incoming::Closed),
                Eio::Message(p) => match proto::decode_sio(p)? {
                    Sio::Event { json, .. } => {
                        let start = frame.len() - json.len();
                        return Ok(Incoming::Event(EventFrame { frame, start }));
                    }
                    Sio::Ack { id, json } => return Ok(Incoming::Ack(id, json.to_owned())),
                    Sio::Disconnect => return Ok(Incoming::Closed),
                    Sio::Connect(_) | Sio::ConnectError(_) => {}
                },
                Eio::Open(_) | Eio::Pong | Eio::Noop => {}
            }
        }
    }

    /// Lets the kernel delay the ACKs of what this connection receives until its
    /// delayed-ACK timer or a second segment (Linux `TCP_QUICKACK` off; Linux turns
    /// it on again by itself when that timer fires).
    pub(crate) fn defer_acks(&self) -> std::io::Result<()> {
        socket2::SockRef::from(self.ws.get_ref()).set_tcp_quickack(false)
    }

    /// Sends a WebSocket close (best effort, bounded).
    pub(crate) async fn close(mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(2), self.ws.close(None)).await;
    }

    async fn send_text(&mut self, text: String) -> Result<()> {
        self.ws.send(Message::text(text)).await?;
        Ok(())
    }

    /// The next text frame; `None` once the connection is closed.
    async fn next_text(&mut self) -> Result<Option<Utf8Bytes>> {
        loop {
            match self.ws.next().await {
                None => return Ok(None),
                Some(Err(e)) => return Err(e.into()),
                Some(Ok(Message::Text(t))) => return Ok(Some(t)),
                Some(Ok(Message::Close(_))) => return Ok(None),
                Some(Ok(Message::Binary(_))) => bail!("binary frames are not supported"),
                Some(Ok(_)) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_targets() {
        let t = Target::parse("http://127.0.0.1:5201").unwrap();
        assert_eq!(t.addr, "127.0.0.1:5201".parse().unwrap());
        assert_eq!(t.origin, "http://127.0.0.1:5201");
        assert!(Target::parse("http://localhost:5001/").is_ok());
        assert!(Target::parse("http://10.0.0.1:5001").is_err());
        assert!(Target::parse("http://example.com").is_err());
        assert!(Target::parse("http://127.0.0.2:5001").is_err());
        assert!(Target::parse("https://127.0.0.1:5001").is_err());
        assert!(Target::parse("not a url").is_err());
    }
}
