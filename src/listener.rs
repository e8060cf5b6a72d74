//! The TCP listener: binds the port (with SO_REUSEPORT for the supervisor's
//! workers), counts open connections (for `/health` and `/metrics`), turns Nagle
//! off, since every response is written in one go, and closes the port on its own
//! signal at the start of a shutdown (see [`TrackedListener::new`]).

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use futures::FutureExt;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// How many connections may wait to be accepted: bursts of reconnecting Socket.IO
/// clients after an instance goes away arrive at once (Linux caps it at somaxconn).
const BACKLOG: i32 = 4096;

/// Binds `host:port`. With `reuse_port`, several processes may bind the same port and
/// the kernel spreads new connections over them (SO_REUSEPORT): the supervisor's
/// workers. Without it a port in use is an error, as it should be for a lone instance.
pub fn bind(host: IpAddr, port: u16, reuse_port: bool) -> io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let addr = SocketAddr::new(host, port);
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    // SO_REUSEADDR: a restarted instance can bind while old connections sit in TIME_WAIT.
    socket.set_reuse_address(true)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    TcpListener::from_std(socket.into())
}

/// Reserves a free port for a group of workers: bound with SO_REUSEPORT but never
/// listening, so it takes no connections itself while it keeps the port ours.
pub fn reserve_port(host: IpAddr) -> io::Result<(socket2::Socket, u16)> {
    use socket2::{Domain, Protocol, Socket, Type};
    let addr = SocketAddr::new(host, 0);
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.bind(&addr.into())?;
    let port = socket
        .local_addr()?
        .as_socket()
        .map(|a| a.port())
        .unwrap_or_default();
    Ok((socket, port))
}

/// A listener whose streams decrement a shared counter when dropped.
pub struct TrackedListener {
    /// `None` once closed.
    inner: Option<TcpListener>,
    open: Arc<AtomicU64>,
    close: CancellationToken,
}

impl TrackedListener {
    /// Wraps `inner`, counting into `open`. When `close` is cancelled the listener
    /// takes what already waits in its backlog and then closes the socket, so new
    /// connections are refused (a load balancer retries those elsewhere, whatever
    /// the method: they never reached us) while the connections already accepted
    /// keep being served. Closing with connections still in the backlog would reset
    /// them after the client may have sent its request.
    pub fn new(inner: TcpListener, open: Arc<AtomicU64>, close: CancellationToken) -> Self {
        Self {
            inner: Some(inner),
            open,
            close,
        }
    }

    fn track(&self, stream: TcpStream) -> TrackedStream {
        let _ = stream.set_nodelay(true);
        self.open.fetch_add(1, Ordering::Relaxed);
        TrackedStream {
            inner: stream,
            open: self.open.clone(),
        }
    }
}

/// An accepted connection.
pub struct TrackedStream {
    inner: TcpStream,
    open: Arc<AtomicU64>,
}

impl Drop for TrackedStream {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Listener for TrackedListener {
    type Io = TrackedStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Some(listener) = &self.inner else {
                // Closed: axum's serve loop waits here until its own shutdown.
                return std::future::pending().await;
            };
            let accepted = if self.close.is_cancelled() {
                // Draining the backlog: whatever is ready now, then close.
                match listener.accept().now_or_never() {
                    Some(result) => result,
                    None => {
                        self.inner = None;
                        tracing::info!("listener closed; new connections are refused");
                        continue;
                    }
                }
            } else {
                tokio::select! {
                    result = listener.accept() => result,
                    () = self.close.cancelled() => continue,
                }
            };
            match accepted {
                Ok((stream, addr)) => return (self.track(stream), addr),
                // Out of file descriptors and the like: back off instead of spinning,
                // as axum's own TcpListener does.
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        match &self.inner {
            Some(listener) => listener.local_addr(),
            None => Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "listener closed",
            )),
        }
    }
}

impl AsyncRead for TrackedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for TrackedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// The TCP peer of a request (`ConnectInfo<PeerAddr>`).
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub SocketAddr);

impl Connected<IncomingStream<'_, TrackedListener>> for PeerAddr {
    fn connect_info(stream: IncomingStream<'_, TrackedListener>) -> Self {
        PeerAddr(*stream.remote_addr())
    }
}
