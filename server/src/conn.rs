//! Connection limits for slow and stalled links.
//!
//! A phone on 2G moves a few KB/s and its link drops every half-minute, so a response that is
//! slow but still moving bytes is healthy, and only a stall is a failure. The server therefore
//! bounds *stalls*, not sizes: every accepted connection is wrapped in [`Guarded`], whose reads
//! and writes fail once no byte has moved for [`Limits::idle`] (which also closes idle
//! keep-alive connections), and at most [`Limits::max_connections`] connections are open at
//! once (a new one past that is closed at once). A slow-loris client thus holds one connection
//! slot for at most `idle` per byte it trickles, and never a lock: the sync handler reads its
//! whole body before it touches the store.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_io_timeout::TimeoutStream;

/// The server's connection and request limits (part of [`crate::Config`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// A connection on which no byte moved for this long is closed.
    pub idle: Duration,
    /// Most connections open at once.
    pub max_connections: usize,
    /// Whole-request cap of `POST /api/v1/sync`, a backstop behind `idle` (pages are sized
    /// by the phone to take seconds, but a 2G phone may still need minutes for a large one).
    pub sync_timeout: Duration,
    /// Whole-request cap of every other route.
    pub request_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            idle: Duration::from_secs(30),
            max_connections: 10_000,
            sync_timeout: Duration::from_secs(600),
            request_timeout: Duration::from_secs(60),
        }
    }
}

/// An `axum_server` acceptor that applies [`Limits`] to each TCP connection (under TLS, the
/// rustls acceptor wraps it, so the handshake is bounded as well).
#[derive(Clone)]
pub struct GuardedAcceptor {
    idle: Duration,
    slots: Arc<Semaphore>,
}

impl GuardedAcceptor {
    pub fn new(limits: &Limits) -> GuardedAcceptor {
        GuardedAcceptor { idle: limits.idle, slots: Arc::new(Semaphore::new(limits.max_connections)) }
    }
}

impl<S: Send + 'static> axum_server::accept::Accept<TcpStream, S> for GuardedAcceptor {
    type Stream = Guarded;
    type Service = S;
    type Future = std::future::Ready<io::Result<(Guarded, S)>>;

    fn accept(&self, stream: TcpStream, service: S) -> Self::Future {
        let Ok(permit) = self.slots.clone().try_acquire_owned() else {
            tracing::warn!("connection refused: the connection limit is reached");
            return std::future::ready(Err(io::Error::other("connection limit reached")));
        };
        // Small writes (a page's last bytes, a short answer) should not wait for Nagle.
        let _ = stream.set_nodelay(true);
        let mut io = TimeoutStream::new(stream);
        io.set_read_timeout(Some(self.idle));
        io.set_write_timeout(Some(self.idle));
        std::future::ready(Ok((Guarded { io: Box::pin(io), _slot: permit }, service)))
    }
}

/// A connection under [`Limits`]: I/O fails after a stall, and its slot is freed when dropped.
pub struct Guarded {
    io: Pin<Box<TimeoutStream<TcpStream>>>,
    _slot: OwnedSemaphorePermit,
}

impl AsyncRead for Guarded {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        self.io.as_mut().poll_read(cx, buf)
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.io.as_mut().poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.io.as_mut().poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.io.as_mut().poll_shutdown(cx)
    }
    fn poll_write_vectored(mut self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        self.io.as_mut().poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}
