//! Connection limits for slow and stalled links.
//!
//! A phone on 2G moves a few KB/s and its link drops every half-minute, so a response that is
//! slow but still moving bytes is healthy, and only a stall is a failure. The server therefore
//! bounds *stalls*, not sizes: every accepted connection is wrapped in [`Guarded`], whose reads
//! and writes fail once no byte has moved for [`Limits::idle`] (which also closes idle
//! keep-alive connections), and at most [`Limits::max_connections`] connections are open at
//! once (a new one past that is closed at once), at most [`Limits::per_address`] from one client
//! address, and a request's head must arrive within [`Limits::head`] (set on the HTTP/1 server
//! in `launch`). A slow-loris client thus holds a few slots for a few seconds, never all of
//! them, and never a lock: the sync handler reads its whole body before it touches the store.

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
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
    /// Most connections open at once from one client address (an IPv6 /64 counts as one
    /// address; trusted proxies are not counted). Generous: a carrier's NAT puts many phones
    /// behind one address.
    pub per_address: usize,
    /// A request's head (its line and headers, a few hundred bytes) must arrive within this:
    /// a client trickling a byte just often enough to beat `idle` is closed all the same.
    pub head: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            idle: Duration::from_secs(30),
            max_connections: 10_000,
            sync_timeout: Duration::from_secs(600),
            request_timeout: Duration::from_secs(60),
            per_address: 512,
            head: Duration::from_secs(20),
        }
    }
}

/// The address a connection counts against: an IPv6 client is one /64 (one subscriber's
/// prefix), an IPv4-mapped address is its IPv4 address.
pub fn client_group(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
        v4 => v4,
    }
}

/// The process's open-file limit (soft), from `/proc/self/limits` where there is one.
pub fn open_file_limit() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// An `axum_server` acceptor that applies [`Limits`] to each TCP connection (under TLS, the
/// rustls acceptor wraps it, so the handshake is bounded as well).
#[derive(Clone)]
pub struct GuardedAcceptor {
    idle: Duration,
    slots: Arc<Semaphore>,
    per_address: usize,
    /// Addresses not counted (trusted proxies: every client comes through them).
    exempt: Arc<Vec<IpAddr>>,
    open: Arc<parking_lot::Mutex<HashMap<IpAddr, usize>>>,
}

impl GuardedAcceptor {
    pub fn new(limits: &Limits, exempt: &[IpAddr]) -> GuardedAcceptor {
        GuardedAcceptor {
            idle: limits.idle,
            slots: Arc::new(Semaphore::new(limits.max_connections)),
            per_address: limits.per_address.max(1),
            exempt: Arc::new(exempt.to_vec()),
            open: Arc::default(),
        }
    }
}

/// One connection counted against its client address, until it closes.
struct AddressSlot {
    open: Arc<parking_lot::Mutex<HashMap<IpAddr, usize>>>,
    ip: IpAddr,
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut open = self.open.lock();
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
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
        let peer = stream.peer_addr().map(|a| a.ip());
        let address = match peer {
            Ok(ip) if !self.exempt.contains(&ip) => {
                let ip = client_group(ip);
                let mut open = self.open.lock();
                let n = open.entry(ip).or_insert(0);
                if *n >= self.per_address {
                    drop(open);
                    tracing::debug!("connection refused: one address holds as many connections as it may");
                    return std::future::ready(Err(io::Error::other("connection limit per address reached")));
                }
                *n += 1;
                Some(AddressSlot { open: self.open.clone(), ip })
            }
            _ => None,
        };
        // Small writes (a page's last bytes, a short answer) should not wait for Nagle.
        let _ = stream.set_nodelay(true);
        let mut io = TimeoutStream::new(stream);
        io.set_read_timeout(Some(self.idle));
        io.set_write_timeout(Some(self.idle));
        std::future::ready(Ok((Guarded { io: Box::pin(io), _slot: permit, _address: address }, service)))
    }
}

/// A connection under [`Limits`]: I/O fails after a stall, and its slot is freed when dropped.
pub struct Guarded {
    io: Pin<Box<TimeoutStream<TcpStream>>>,
    _slot: OwnedSemaphorePermit,
    _address: Option<AddressSlot>,
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
